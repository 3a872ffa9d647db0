"""The operator image from the project's own Dockerfile, built here without any container registry.

- The base: `mmdebstrap --variant=minbase` of Debian bookworm with python3 (from Debian's package mirrors), kept as a
  tarball and imported into a podman storage of our own. The Dockerfile's default base stays the official Python
  image for users; this base goes in through the same Dockerfile's PYTHON_IMAGE build-arg.
- The image: `podman build` of the Dockerfile, tagged with a hash of everything the build reads (Dockerfile,
  .dockerignore, pyproject.toml, README.md, operator/ sources, the base). A warm call finds the tag and returns.
- Everything lives under ~/.cache/access-hygiene/image (ACCESS_HYGIENE_CACHE moves the root, as for
  controlplane/build.sh): the base tarball, podman's storage, build logs, exported archives.

Facts of these machines the podman flags follow: crun refuses cgroup v1 hybrid mode ("cgroups in hybrid mode not
supported"), so runc; no systemd, so cgroupfs and a file events log; container rlimits above the host's hard limits
fail with EPERM, so nofile/nproc 4096; pip in a build step trusts only the host's CA bundle, so it is mounted read-only.

`python -m access_hygiene.localcluster.image` (`make image`) builds and prints the reference, size and timings.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_NAME = "localhost/access-hygiene"
BASE_NAME = "localhost/access-hygiene-base"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_MIRRORS = (
    f"deb http://deb.debian.org/debian {BASE_SUITE} main",
    f"deb http://deb.debian.org/debian {BASE_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {BASE_SUITE}-security main",
)
# No manuals, translations or docs (copyright files stay): 179 MB instead of 225 MB.
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# Below the host's hard limits (nofile 20000, nproc 96367 here): podman's defaults exceed them and fail with EPERM.
RLIMITS = ("nofile=4096:4096", "nproc=4096:4096")
HOST_CA_DIR = Path("/etc/ssl/certs")
REQUIRED_TOOLS = ("podman", "runc", "mmdebstrap")
# Tagged images of ours kept in the storage; older ones are removed after a build.
KEEP_IMAGES = 3


class ImageError(RuntimeError):
    """The image could not be built, exported or run."""


def repo_root() -> Path:
    # operator/access_hygiene/localcluster/image.py -> the repository is parents[3]
    return Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    root = Path(os.environ.get("ACCESS_HYGIENE_CACHE") or Path.home() / ".cache" / "access-hygiene")
    return root / "image"


def missing_tools() -> list[str]:
    """The programs a build needs that are not on PATH (Debian: apt-get install podman runc mmdebstrap)."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class Podman:
    """podman with a storage of its own, runc, cgroupfs; every call goes through here."""

    root: Path
    runroot: Path

    @classmethod
    def default(cls) -> "Podman":
        runroot = Path(tempfile.gettempdir()) / f"access-hygiene-podman-{os.getuid()}"
        return cls(root=cache_dir() / "storage", runroot=runroot)

    def command(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.root),
            "--runroot", str(self.runroot),
            "--runtime", "runc",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            *args,
        ]  # fmt: skip

    def run(self, *args: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise ImageError(f"podman {' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    key: str
    cached: bool  # found in the storage: nothing was built
    seconds: float  # this call, base included
    base_seconds: float  # making and importing the base (0 when cached)
    size_bytes: int


def mmdebstrap_command(output: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
        BASE_SUITE,
        str(output),
        *BASE_MIRRORS,
    ]


def base_ref() -> str:
    """The base's reference, keyed by how it is made (a new package list or mirror makes a new base)."""
    recipe = json.dumps(mmdebstrap_command(Path("base.tar")))
    return f"{BASE_NAME}:{BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def build_inputs(repo: Path) -> list[Path]:
    """Every file the build reads: the Dockerfile and the context .dockerignore lets through."""
    sources = [
        path
        for path in sorted((repo / "operator").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    return [repo / "Dockerfile", repo / ".dockerignore", repo / "pyproject.toml", repo / "README.md", *sources]


def image_key(repo: Path, base: str) -> str:
    digest = hashlib.sha256(base.encode())
    for path in build_inputs(repo):
        digest.update(str(path.relative_to(repo)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_ref(repo: Path, base: str) -> tuple[str, str]:
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    key = image_key(repo, base)
    return f"{IMAGE_NAME}:{version}-{key}", key


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time per cache (parallel test sessions would build the same thing twice)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_base(podman: Podman) -> tuple[str, float]:
    """The local Debian base in the storage: (reference, seconds spent making or importing it)."""
    ref = base_ref()
    if podman.exists(ref):
        return ref, 0.0
    started = time.monotonic()
    tarball = cache_dir() / f"base-{ref.rsplit(':', 1)[1]}.tar"
    if not tarball.is_file():
        partial = tarball.with_suffix(".partial.tar")
        log = cache_dir() / "mmdebstrap.log"
        with log.open("w") as out:
            result = subprocess.run(mmdebstrap_command(partial), stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise ImageError(f"mmdebstrap failed ({result.returncode}), log {log}:\n{tail}")
        partial.rename(tarball)
    podman.run(
        "import",
        "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "ENV LANG=C.UTF-8",
        "--change", 'CMD ["python3"]',
        str(tarball), ref,
        timeout=600,
    )  # fmt: skip
    return ref, time.monotonic() - started


def build_image(repo: Path | None = None, podman: Podman | None = None) -> BuiltImage:
    """The operator image from `repo`'s Dockerfile on the local base; found in the storage when nothing changed."""
    started = time.monotonic()
    repo = repo or repo_root()
    podman = podman or Podman.default()
    missing = missing_tools()
    if missing:
        raise ImageError(f"not on PATH: {', '.join(missing)} (Debian: apt-get install podman runc mmdebstrap)")
    with _build_lock():
        base, base_seconds = ensure_base(podman)
        ref, key = image_ref(repo, base)
        if podman.exists(ref):
            return BuiltImage(ref, key, True, time.monotonic() - started, base_seconds, podman.image_size(ref))
        args = [
            "build",
            "--pull=never",  # nothing comes from a registry: the base is local
            "--network=host",
            *(f"--ulimit={limit}" for limit in RLIMITS),
            f"--build-arg=PYTHON_IMAGE={base}",
            f"--tag={ref}",
            f"--file={repo / 'Dockerfile'}",
        ]
        if HOST_CA_DIR.is_dir():
            args.append(f"--volume={HOST_CA_DIR}:{HOST_CA_DIR}:ro")
        log = cache_dir() / f"build-{key}.log"
        with log.open("w") as out:
            result = subprocess.run(
                podman.command(*args, str(repo)), stdout=out, stderr=subprocess.STDOUT, check=False, timeout=1800
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise ImageError(f"podman build failed ({result.returncode}), log {log}:\n{tail}")
        if image_key(repo, base) != key:  # the tag would name content it may not hold
            podman.run("rmi", ref, check=False)
            raise ImageError("the build inputs changed while the image was built; build again")
        _prune(podman, keep=ref)
        return BuiltImage(ref, key, False, time.monotonic() - started, base_seconds, podman.image_size(ref))


def _prune(podman: Podman, keep: str) -> None:
    """Drop our older tagged images beyond KEEP_IMAGES, then untagged leftovers (builder stages)."""
    listed = podman.run("images", "--format=json", f"--filter=reference={IMAGE_NAME}").stdout
    images = sorted(json.loads(listed or "[]"), key=lambda image: image.get("Created", 0), reverse=True)
    names = [name for image in images for name in image.get("Names") or [] if name != keep]
    for name in names[KEEP_IMAGES - 1 :]:
        podman.run("rmi", name, check=False)
    podman.run("image", "prune", "--force", check=False, timeout=300)


def export_image(image: BuiltImage, podman: Podman | None = None, archive_format: str = "docker-archive") -> Path:
    """The image as a tar archive (e.g. for `ctr images import`), cached next to the storage; older ones removed."""
    podman = podman or Podman.default()
    path = cache_dir() / f"access-hygiene-{image.key}.{archive_format}.tar"
    for old in cache_dir().glob(f"access-hygiene-*.{archive_format}.tar"):
        if old != path:
            old.unlink()
    if not path.is_file():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        podman.run("save", f"--format={archive_format}", f"--output={partial}", image.ref, timeout=600)
        partial.rename(path)
    return path


def main() -> int:
    try:
        image = build_image()
    except ImageError as error:
        print(error, file=sys.stderr)
        return 1
    how = "found in the cache" if image.cached else f"built (base {image.base_seconds:.0f} s)"
    print(f"{image.ref}: {image.size_bytes / 1e6:.0f} MB, {how} in {image.seconds:.1f} s")
    print(f"list it: {' '.join(Podman.default().command('images', IMAGE_NAME))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
