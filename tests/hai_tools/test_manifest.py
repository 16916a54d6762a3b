"""Artifact manifests: written with every file's hash, verified on load, published atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from hai_tools.errors import ManifestError
from hai_tools.manifest import Manifest, atomic_folder, verify_artifact, write_manifest


def _artifact(folder: Path) -> Manifest:
    with atomic_folder(folder) as tmp:
        (tmp / "weights.bin").write_bytes(b"\x00\x01\x02" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
        manifest = write_manifest(tmp, Manifest(kind="adapter", name="x"))
    return manifest


def test_written_artifact_verifies(tmp_path: Path) -> None:
    manifest = _artifact(tmp_path / "a")
    assert set(manifest.files) == {"weights.bin", "sub/config.json"}
    assert verify_artifact(tmp_path / "a", kind="adapter").content_hash == manifest.content_hash


@pytest.mark.parametrize("damage", ["flip", "delete", "add"])
def test_any_change_fails_verification(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "a"
    _artifact(folder)
    if damage == "flip":
        data = bytearray((folder / "weights.bin").read_bytes())
        data[10] ^= 0xFF
        (folder / "weights.bin").write_bytes(bytes(data))
    elif damage == "delete":
        (folder / "sub" / "config.json").unlink()
    else:
        (folder / "extra.txt").write_text("unrecorded")
    with pytest.raises(ManifestError, match="fails verification"):
        verify_artifact(folder)


def test_wrong_kind_and_missing_manifest_are_refused(tmp_path: Path) -> None:
    _artifact(tmp_path / "a")
    with pytest.raises(ManifestError, match="expected 'merged_model'"):
        verify_artifact(tmp_path / "a", kind="merged_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        verify_artifact(tmp_path / "empty")


def test_failed_write_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "a") as tmp:
        (tmp / "half.bin").write_bytes(b"partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_artifact(tmp_path: Path) -> None:
    first = _artifact(tmp_path / "a")
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "a") as tmp:
        (tmp / "other.bin").write_bytes(b"new")
        raise RuntimeError("killed")
    assert verify_artifact(tmp_path / "a").content_hash == first.content_hash
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inputs", [{"kind": "dataset", "name": "other@1", "hash": "sha256:00"}]),
        ("config", {"lora_r": 64}),
        ("extra", {"vllm_servable_unmerged": False}),
        ("kind", "release"),
        ("metrics", {"refer_auc": 0.99}),
        ("schema_version", 1),
    ],
)
def test_every_manifest_field_is_under_its_hash(tmp_path: Path, field: str, value: object) -> None:
    """Editing any field of manifest.json, not only the file list, is refused."""
    import json

    _artifact(tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    message = "manifest schema 1 hashes only its file list" if field == "schema_version" else "was edited"
    with pytest.raises(ManifestError, match=message):
        verify_artifact(tmp_path / "a")


def test_dataset_identity_does_not_depend_on_where_files_live(tmp_path: Path) -> None:
    from hai_tools.registry.base import DatasetFile, DatasetRecord

    def record(root: Path, folder: bool) -> DatasetRecord:
        files = [
            DatasetFile(split="train", path=str(root / "train.jsonl"), sha256="a" * 64, format="jsonl"),
            DatasetFile(split="test", path=str(root / "sub" / "test.jsonl"), sha256="b" * 64, format="jsonl"),
        ]
        return DatasetRecord(
            name="d",
            version="1",
            files=files,
            splits={},
            columns={},
            license="x",
            source_format="jsonl",
            root=str(root) if folder else None,
        )

    for folder in (False, True):
        here, there = record(tmp_path / "here", folder), record(Path("/elsewhere/data"), folder)
        assert here.content_hash == there.content_hash
    changed = record(tmp_path, False)
    changed.files[0].sha256 = "c" * 64
    assert changed.content_hash != record(tmp_path, False).content_hash


def test_a_base_model_identity_ignores_when_it_was_written_but_not_its_files() -> None:
    from hai_tools.manifest import ArtifactInput, artifact_identity

    gguf = [ArtifactInput(kind="gguf", name="m.gguf", hash="sha256:" + "a" * 64)]
    here = Manifest(kind="base_model", name="b", files={"w": "1" * 64}, inputs=gguf, created_at="2026-01-01")
    there = Manifest(kind="base_model", name="b", files={"w": "1" * 64}, inputs=gguf, created_at="2026-11-29")
    assert artifact_identity(here) == artifact_identity(there)
    assert artifact_identity(here.model_copy(update={"files": {"w": "2" * 64}})) != artifact_identity(here)
    adapter = Manifest(kind="adapter", name="a", files={"w": "1" * 64})
    adapter.content_hash = adapter.fields_hash()
    assert artifact_identity(adapter) == adapter.content_hash
