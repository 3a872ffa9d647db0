"""The operator image's cache key and base recipe (localcluster/image.py); tests/cluster/test_image.py builds it."""

from pathlib import Path

import pytest

from access_hygiene.localcluster.image import base_ref, build_inputs, image_key, mmdebstrap_command

pytestmark = pytest.mark.unit


def make_repo(root: Path) -> Path:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        (root / name).write_text(name)
    (root / "operator" / "pkg").mkdir(parents=True)
    (root / "operator" / "pkg" / "a.py").write_text("a = 1\n")
    return root


def test_the_image_key_follows_every_build_input_and_nothing_else(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    key = image_key(repo, "base:1")
    assert image_key(repo, "base:1") == key
    (repo / "operator" / "pkg" / "__pycache__").mkdir()
    (repo / "operator" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (repo / "tests").mkdir()
    (repo / "tests" / "t.py").write_text("not in the build context\n")
    assert image_key(repo, "base:1") == key
    assert image_key(repo, "base:2") != key
    for path in build_inputs(repo):
        original = path.read_bytes()
        path.write_bytes(original + b"#")
        assert image_key(repo, "base:1") != key, path
        path.write_bytes(original)
    (repo / "operator" / "pkg" / "b.py").write_text("")
    assert image_key(repo, "base:1") != key


def test_the_base_is_a_minimal_debian_with_python() -> None:
    command = mmdebstrap_command(Path("out.tar"))
    assert command[:2] == ["mmdebstrap", "--variant=minbase"]
    assert "--include=python3,python3-venv,python-is-python3,ca-certificates" in command
    assert "bookworm" in command
    assert "out.tar" in command


def test_the_base_reference_is_keyed_by_its_recipe() -> None:
    assert base_ref().startswith("localhost/access-hygiene-base:bookworm-")
    assert base_ref() == base_ref()
