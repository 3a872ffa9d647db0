"""Container images for the local node, made without a registry: one static binary per image, packed into an OCI
image layout archive that `ctr images import` reads.

The archive is deterministic (sorted entries, mtime 0, root owner): the same binary gives the same digest, so a
packed archive is cached next to the binaries and reused.
"""

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
# containerd names an imported image after this annotation.
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ImageSpec:
    """An image of static binaries: `files` maps a path inside the image to a file on the host."""

    name: str  # e.g. localhost/agnhost:2.63.0
    files: dict[str, Path]
    entrypoint: list[str]
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin:/"])
    # Empty directories the image provides (runc creates mount points, but a writable /tmp is expected).
    directories: dict[str, int] = field(default_factory=lambda: {"/tmp": 0o1777, "/etc": 0o755})

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1] if ":" in self.name.rsplit("/", 1)[-1] else "latest"


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_layer(spec: ImageSpec) -> bytes:
    """The image's only layer: parent directories, the declared directories and the files, in sorted order."""
    entries: dict[str, tuple[bytes, int, Path | None]] = {}
    for path, mode in spec.directories.items():
        entries[path.strip("/")] = (tarfile.DIRTYPE, mode, None)
    for path, source in spec.files.items():
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            entries.setdefault("/".join(parts[:depth]), (tarfile.DIRTYPE, 0o755, None))
        entries[path.strip("/")] = (tarfile.REGTYPE, 0o755, source)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            kind, mode, host_file = entries[name]
            if host_file is None:
                tar.addfile(_tar_info(name, kind, mode))
            else:
                data = host_file.read_bytes()
                tar.addfile(_tar_info(name, kind, mode, len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _blob(data: bytes, media_type: str) -> tuple[dict[str, Any], bytes]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(data)}, data


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def build_archive(spec: ImageSpec) -> bytes:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/...) as one uncompressed tar."""
    layer_descriptor, layer = _blob(build_layer(spec), MEDIA_LAYER)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": spec.entrypoint, "Env": spec.env, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_descriptor["digest"]]},
        "history": [{"created_by": "access-hygiene localcluster/node_images.py", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_descriptor, config_bytes = _blob(_json_bytes(config), MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_descriptor,
        "layers": [layer_descriptor],
    }
    manifest_descriptor, manifest_bytes = _blob(_json_bytes(manifest), MEDIA_MANIFEST)
    manifest_descriptor["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_descriptor["annotations"] = {CONTAINERD_NAME_ANNOTATION: spec.name, REF_NAME_ANNOTATION: spec.tag}
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest_descriptor]}
    files = {
        "oci-layout": _json_bytes({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json_bytes(index),
    }
    for descriptor, data in ((layer_descriptor, layer), (config_descriptor, config_bytes),
                             (manifest_descriptor, manifest_bytes)):  # fmt: skip
        files["blobs/sha256/" + str(descriptor["digest"]).removeprefix("sha256:")] = data
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(directory, tarfile.DIRTYPE, 0o755))
        for name in sorted(files):
            tar.addfile(_tar_info(name, tarfile.REGTYPE, 0o644, len(files[name])), io.BytesIO(files[name]))
    return buffer.getvalue()


def write_archive(spec: ImageSpec, directory: Path) -> Path:
    """Pack `spec` into directory/<name>.tar unless an archive of the same binaries is there already."""
    directory.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(_json_bytes([spec.name, spec.entrypoint, spec.env, sorted(spec.directories.items())]))
    for path, source in sorted(spec.files.items()):
        stat = source.stat()
        key.update(f"{path}\0{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    safe = spec.name.replace("/", "_").replace(":", "_")
    archive = directory / f"{safe}-{key.hexdigest()[:16]}.tar"
    if not archive.is_file():
        partial = archive.with_suffix(".partial")
        partial.write_bytes(build_archive(spec))
        partial.replace(archive)
    return archive
