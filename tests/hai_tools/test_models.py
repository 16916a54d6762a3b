"""Base model resolution: embedded ids, local folders, and a clear error for unreachable hub ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from hai_tools.errors import ModelResolutionError
from hai_tools.models import EMBEDDED_EMBEDDER, resolve_base_model


def test_local_folder_identity_is_its_content(tiny_model_dir: Path) -> None:
    ref = resolve_base_model(str(tiny_model_dir))
    assert ref.source == "local"
    assert ref.identity.startswith("sha256:")
    assert resolve_base_model(str(tiny_model_dir)).identity == ref.identity


def test_embedded_embedder_resolves_to_packaged_minilm() -> None:
    ref = resolve_base_model(EMBEDDED_EMBEDDER)
    assert (Path(ref.path) / "config.json").is_file()


def test_hub_id_offline_is_one_line_error_naming_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelResolutionError, match="'google/medgemma-4b-it' is not a local folder") as err:
        resolve_base_model("google/medgemma-4b-it")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model_id", ["embedded:nope", "/does/not/exist"])
def test_unknown_ids_are_refused(model_id: str) -> None:
    with pytest.raises(ModelResolutionError, match="does not exist"):
        resolve_base_model(model_id)


def test_a_hub_base_verifies_in_the_chain(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base model from the hub (here a hub cache laid out by hand: no network) is known by the hash of its
    snapshot's files, so the chain check of a consumer's record passes, and a changed snapshot fails."""
    import shutil

    from hai_tools.chain import verify_bundled_chain, verify_chain
    from hai_tools.manifest import Manifest, atomic_folder, write_manifest
    from hai_tools.models import resolve_base_model, weight_files

    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model_dir, snapshot, ignore=shutil.ignore_patterns("manifest.json"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    ref = resolve_base_model("org/tiny")
    assert ref.source == "hub" and ref.revision == "0123abcd"
    with atomic_folder(tmp_path / "consumer") as tmp:
        (tmp / "w.bin").write_bytes(b"x")
        manifest = write_manifest(tmp, Manifest(kind="adapter", name="a", inputs=[ref.as_input()]))
    links = verify_chain(tmp_path / "consumer")
    assert [link.kind for link in links] == ["adapter", "base_model"]
    bundled = {
        manifest.content_hash: {"type": "manifest", "document": manifest.model_dump(mode="json")},
        ref.identity: {"type": "files", "document": weight_files(snapshot)},
    }
    assert len(verify_bundled_chain(manifest.content_hash, bundled)) == 2
    (snapshot / "config.json").write_text((snapshot / "config.json").read_text() + " ")
    with pytest.raises(Exception, match="changed since"):
        verify_chain(tmp_path / "consumer")


def test_cached_base_is_rehashed_whenever_a_file_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached base model is re-hashed unless every file's inode, size, mtime and ctime are those of the last
    full verification: a byte flipped in place, even with its mtime set back, is caught."""
    import os

    import hai_tools.models as models
    from hai_tools.errors import ManifestError
    from hai_tools.manifest import Manifest, atomic_folder, write_manifest

    folder = tmp_path / "models" / "base"
    with atomic_folder(folder) as tmp:
        (tmp / "model.safetensors").write_bytes(b"\x01" * 4096)
        write_manifest(tmp, Manifest(kind="base_model", name="embedded:x"))
    calls: list[Path] = []
    real = models.verify_artifact

    def counting(path: Path, kind: str | None = None) -> Manifest:
        calls.append(path)
        return real(path, kind)

    monkeypatch.setattr(models, "verify_artifact", counting)
    models._verify_cached(folder)
    models._verify_cached(folder)
    assert len(calls) == 1  # unchanged: the stat check stands for the hash
    weights = folder / "model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back; ctime cannot be
    with pytest.raises(ManifestError, match=r"model\.safetensors \(hash mismatch\)"):
        models._verify_cached(folder)
    assert len(calls) == 2
