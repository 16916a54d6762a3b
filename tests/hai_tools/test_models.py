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
