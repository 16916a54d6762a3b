"""`python -m export merge | vllm-recipe | verify` on a tiny adapter: parity, provenance chain, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from export.__main__ import main
from hai_tools.manifest import Manifest, verify_artifact


@pytest.fixture
def merged(merged_tiny: Path) -> Path:
    return merged_tiny


def _logits(folder: Path, dtype: Any, adapter: Path | None = None) -> tuple[list[Any], list[Any] | None]:
    """Parity-prompt logits of the model stored in `folder` (with `adapter` on it: and without it), loaded
    from disk here, apart from the merge."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from export.parity import causal_logits, encode_prompts

    batches = encode_prompts(AutoTokenizer.from_pretrained(folder))
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    if adapter is None:
        return causal_logits(model, batches), None
    model = PeftModel.from_pretrained(model, str(adapter))
    with model.disable_adapter():
        plain = causal_logits(model, batches)
    return causal_logits(model, batches), plain


def test_merged_model_matches_base_plus_adapter(
    merged: Path, tiny_adapter: Path, tiny_model_dir: Path
) -> None:
    """Every parity figure the manifest records is recomputed here from the files on disk: the stored merged
    model against a fresh load of base + adapter, in float64 and in bfloat16, and the adapter's own effect."""
    from export.parity import max_abs_diff, top1_agreement

    manifest = verify_artifact(merged, kind="merged_model")
    figures = manifest.metrics
    assert manifest.config["parity_dtype"] == "float64" and manifest.config["merge_tolerance"] == 1e-5
    expected, base = _logits(tiny_model_dir, torch.float64, tiny_adapter)
    assert base is not None
    stored, _ = _logits(merged, torch.float64)
    assert figures["parity_max_abs_logit_diff"] == pytest.approx(max_abs_diff(expected, stored), abs=1e-12)
    assert figures["adapter_effect_max_abs_logit_diff"] == pytest.approx(
        max_abs_diff(expected, base), rel=1e-9
    )
    assert figures["parity_max_abs_logit"] == pytest.approx(
        max(float(t.abs().max()) for t in expected), rel=1e-9
    )
    # the merge itself (float64, before storage) is reported apart from the stored model's figure, which adds
    # the rounding of the weights to float32 (on the tiny model: 0.0 before storage, 1e-7 stored)
    assert figures["parity_merge_max_abs_logit_diff"] < figures["parity_max_abs_logit_diff"]
    # bfloat16 is reported beside, from the same two loads in bfloat16
    expected16, _ = _logits(tiny_model_dir, torch.bfloat16, tiny_adapter)
    stored16, _ = _logits(merged, torch.bfloat16)
    assert figures["parity_bf16_max_abs_logit_diff"] == max_abs_diff(expected16, stored16)
    assert figures["parity_bf16_top1_agreement"] == top1_agreement(expected16, stored16)
    assert manifest.input("adapter").hash == verify_artifact(tiny_adapter).content_hash
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= set(
        manifest.files
    )


def test_verify_walks_the_chain_to_the_dataset(merged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(merged)]) == 0
    kinds = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["merged_model", "adapter", "dataset", "base_model", "base_model"]


def test_verify_fails_when_an_upstream_adapter_byte_flips(
    merged: Path, tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    copy = tmp_path / "merged"
    shutil.copytree(merged, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["inputs"][0]["uri"] = str(adapter)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    # re-pointing an input by hand is an edit of the manifest: refused
    assert main(["verify", str(copy)]) == 2
    assert "manifest.json was edited after it was written" in capsys.readouterr().err
    # resealed (as a relocation tool would), the chain must still reach an adapter with the recorded hash
    sealed = Manifest.model_validate(manifest)
    sealed.content_hash = sealed.fields_hash()
    (copy / "manifest.json").write_text(sealed.model_dump_json())
    assert main(["verify", str(copy)]) == 0
    weights = bytearray((adapter / "adapter_model.safetensors").read_bytes())
    weights[-1] ^= 0x01
    (adapter / "adapter_model.safetensors").write_bytes(bytes(weights))
    assert main(["verify", str(copy)]) == 2
    assert "adapter_model.safetensors (hash mismatch)" in capsys.readouterr().err


def test_corrupted_adapter_is_refused_and_nothing_written(
    tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    assert main(["merge", str(adapter), "--output_dir", str(tmp_path / "out")]) == 2
    assert "hash mismatch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _resealed_adapter(tiny_adapter: Path, folder: Path, change: Any) -> Path:
    """A copy of the tiny adapter whose weights file `change` rewrites, with its manifest sealed again: what a
    trainer bug would write (the manifest verifies; the weights are wrong)."""
    from safetensors.torch import load_file, save_file

    from hai_tools.manifest import load_manifest, write_manifest

    shutil.copytree(tiny_adapter, folder)
    weights = folder / "adapter_model.safetensors"
    save_file(change(load_file(str(weights))), str(weights))
    write_manifest(folder, load_manifest(folder))
    verify_artifact(folder, kind="adapter")
    return folder


def test_an_adapter_whose_weights_do_not_load_is_refused(
    tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PEFT places no tensor whose name matches no module, with a warning only: the merge used to equal the
    base and pass parity at 0."""
    adapter = _resealed_adapter(
        tiny_adapter,
        tmp_path / "adapter",
        lambda w: {k.replace("q_proj", "qq_proj"): v for k, v in w.items()},
    )
    assert main(["merge", str(adapter), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "adapter weights did not load" in err and "qq_proj" in err
    assert not (tmp_path / "out").exists()


def test_an_adapter_that_changes_nothing_is_refused(
    tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    adapter = _resealed_adapter(
        tiny_adapter,
        tmp_path / "adapter",
        lambda w: {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in w.items()},
    )
    assert main(["merge", str(adapter), "--output_dir", str(tmp_path / "out")]) == 2
    assert "changes nothing on the parity prompts" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_adapter_for_another_base_is_refused(
    tiny_adapter: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    other = tmp_path / "other-base"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    model.save_pretrained(other)
    shutil.copy(tiny_model_dir / "tokenizer.json", other)
    assert (
        main(
            ["merge", str(tiny_adapter), "--output_dir", str(tmp_path / "out"), "--base_model_id", str(other)]
        )
        == 2
    )
    assert "was trained on base" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_merge_fails_parity_when_tolerance_is_impossible(
    tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["merge", str(tiny_adapter), "--output_dir", str(tmp_path / "out"), "--tolerance", "-1"]) == 2
    assert "nothing written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_vllm_recipe_for_merged_model_and_for_unmerged_adapter(
    merged: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    assert (
        main(["vllm-recipe", str(merged), "--output_dir", str(tmp_path / "m"), "--release_id", "screen-1"])
        == 0
    )
    config = yaml.safe_load((tmp_path / "m" / "vllm_config.yaml").read_text())
    assert config["served-model-name"] == "screen-1" and config["dtype"] == "bfloat16"
    assert "vllm serve" in (tmp_path / "m" / "vllm_serve.sh").read_text()
    assert json.loads((tmp_path / "m" / "serving.json").read_text())["served_model_name"] == "screen-1"
    assert verify_artifact(tmp_path / "m").input("merged_model").hash == verify_artifact(merged).content_hash

    assert main(["vllm-recipe", "--adapter", str(tiny_adapter), "--output_dir", str(tmp_path / "a")]) == 0
    config = yaml.safe_load((tmp_path / "a" / "vllm_config.yaml").read_text())
    assert config["enable-lora"] is True and config["lora-modules"][0].startswith("tiny-lora=")


def test_vllm_recipe_refuses_an_adapter_that_must_be_merged(
    tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    manifest = json.loads((adapter / "manifest.json").read_text())
    manifest["extra"]["vllm_servable_unmerged"] = False
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    # flipping the flag by hand is an edit the manifest's hash exposes...
    assert main(["vllm-recipe", "--adapter", str(adapter), "--output_dir", str(tmp_path / "r")]) == 2
    assert "manifest.json was edited after it was written" in capsys.readouterr().err
    # ...and an adapter whose manifest really records it (resealed, as the trainer writes one) is refused
    sealed = Manifest.model_validate(manifest)
    sealed.content_hash = sealed.fields_hash()
    (adapter / "manifest.json").write_text(sealed.model_dump_json())
    assert main(["vllm-recipe", "--adapter", str(adapter), "--output_dir", str(tmp_path / "r")]) == 2
    assert "must be merged" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_full_disk_is_a_one_line_error_and_leaves_no_folder(
    tiny_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk cannot be made here without mount privileges, so the weight writer is patched to fail
    the way the OS does (ENOSPC); everything else is real."""
    import errno

    import transformers.modeling_utils

    def full(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "model.safetensors")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    assert main(["merge", str(tiny_adapter), "--output_dir", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_merge_that_folds_the_adapter_in_wrong_is_refused_before_storage(
    tiny_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge itself is checked in float64 before its weights are rounded to float32 for storage, so a wrong
    merge cannot hide in the rounding. Mocked: a merge bug (no such bug exists in PEFT to run for real): each
    LoRA delta folded in 0.01% too large, as a slightly wrong alpha/r scaling would (about 5e-5 on the tiny
    model's logits: under the stored model's 1e-4 tolerance, which alone let it through); the unmerged
    reference's forward pass does not use `get_delta_weight`, so only the merge is wrong."""
    from peft.tuners.lora.layer import Linear

    right = Linear.get_delta_weight
    monkeypatch.setattr(Linear, "get_delta_weight", lambda self, name: right(self, name) * 1.0001)
    assert main(["merge", str(tiny_adapter), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the merge itself differs from base+adapter by" in err and "> 1e-05 in float64" in err
    assert "before its weights are rounded for storage; nothing written" in err
    assert not (tmp_path / "out").exists()
