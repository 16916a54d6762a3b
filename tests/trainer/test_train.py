"""Training end to end on a tiny random Gemma-3 model: adapter + manifest + card, provenance that verifies,
determinism, resume after a kill, QLoRA, and bad input that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hai_tools.manifest import sha256_file, verify_artifact
from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.train import run_dir_for, train

ROOT = Path(__file__).resolve().parents[2]


def _config(model: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "base_model_id": str(model),
        "dataset": "demo-screening@2",
        "adapter_name": "tiny",
        "output_dir": str(out),
        "max_steps": 4,
        "per_device_train_batch_size": 2,
        "max_length": 192,
        "eval_steps": 2,
        "save_steps": 2,
        "logging_steps": 1,
        "max_eval_samples": 4,
        "learning_rate": 5e-3,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _logits(model_dir: Path, adapter: Path | None, text: str) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def _completion_loss(model_dir: Path, adapter: Path, records: int) -> float:
    """Token-mean cross-entropy over the completion tokens of the first `records` validation records, tokenized by
    the project's one completion-only tokenization (`trainer.dp._tokenize`, which the train-overhead bench scores
    with), not by TRL's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_registered
    from trainer.dp import _tokenize

    _, splits = load_registered(open_registry(), "demo-screening@2")
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    total = count = 0.0
    for ids, labels in _tokenize(splits["validation"].select(range(records)), tokenizer, 192):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        target = torch.tensor(labels[1:])
        total += float(torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum"))
        count += int((target != -100).sum())
    return total / count


def test_lora_adapter_with_verified_provenance(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path
) -> None:
    out = train(_config(tiny_model_dir, tmp_path / "adapter"))
    manifest = verify_artifact(out, kind="adapter")
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "tokenizer.json",
        "chat_template.jinja",
    } <= set(manifest.files)
    assert [i.kind for i in manifest.inputs] == ["dataset", "base_model"]
    assert manifest.inputs[0].name == demo_dataset
    assert manifest.config["lora_r"] == 8 and manifest.seeds["seed"] == 42
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest.library_versions)
    assert manifest.metrics["global_step"] == 4
    # the eval loss recorded is the saved adapter's mean completion-token loss on the first 4 validation records
    # (`max_eval_samples`), recomputed here outside TRL: chat-template tokens, prompt tokens unscored
    assert manifest.metrics["eval_loss"] == pytest.approx(_completion_loss(tiny_model_dir, out, 4), rel=1e-4)
    assert manifest.extra["vllm_servable_unmerged"] is True
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "Clinician review required" in card
    assert "demo-screening@2" in card

    text = "Age: 14 months\nObservations: the child walks without holding on."
    delta = (_logits(tiny_model_dir, out, text) - _logits(tiny_model_dir, None, text)).abs().max()
    assert delta > 1e-4, "the trained adapter must change the model's output"


def test_same_seed_gives_identical_adapter_bytes(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path
) -> None:
    first = train(_config(tiny_model_dir, tmp_path / "a", eval_steps=100))
    second = train(_config(tiny_model_dir, tmp_path / "b", eval_steps=100))
    other_seed = train(_config(tiny_model_dir, tmp_path / "c", eval_steps=100, seed=7))
    digest = [sha256_file(p / "adapter_model.safetensors") for p in (first, second, other_seed)]
    assert digest[0] == digest[1] != digest[2]
    assert sha256_file(first / "adapter_config.json") == sha256_file(second / "adapter_config.json")


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_killed_run_resumes_from_its_last_checkpoint(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    args = [
        "--base_model_id",
        str(tiny_model_dir),
        "--adapter_name",
        "tiny-resume",
        "--output_dir",
        str(out),
        "--max_steps",
        "300",
        "--save_steps",
        "5",
        "--eval_steps",
        "1000",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "192",
        "--logging_steps",
        "50",
    ]
    env = dict(os.environ)
    checkpoints = run_dir_for(_config(tiny_model_dir, out, adapter_name="tiny-resume")) / "checkpoints"
    proc = _cli(args, env)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave a half-written adapter"

    resumed = _cli([*args, "--resume"], env)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    manifest = verify_artifact(out)
    assert manifest.extra["resumed_from"].startswith("checkpoint-")
    assert manifest.metrics["global_step"] == 300


def test_resume_without_checkpoint_or_with_changed_config_is_refused(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "--base_model_id",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path / "x"),
        "--max_steps",
        "2",
        "--save_steps",
        "2",
        "--eval_steps",
        "100",
        "--max_length",
        "128",
    ]
    assert main([*common, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(common) == 0
    assert main([*common, "--resume", "--lora_r", "4"]) == 2
    assert "differs in config" in capsys.readouterr().err


def test_qlora_trains_a_4bit_base(tiny_model_dir: Path, demo_dataset: str, tmp_path: Path) -> None:
    out = train(
        _config(
            tiny_model_dir,
            tmp_path / "q",
            method="qlora",
            adapter_name="tiny-q",
            eval_steps=100,
            learning_rate=1e-2,
        )
    )
    manifest = verify_artifact(out)
    assert manifest.extra["method"] == "qlora"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    # The adapter's recorded effect is measured again from the files: the saved adapter on a fresh 4-bit load of
    # the base, on the prompt the trainer measured (the first validation record), and on the full-precision base.
    # The 4-bit reload comes within 3e-4 of the recorded figure (measured 0.69645 against 0.69677: a fresh load's
    # 4-bit forward is not bit for bit the trained model's), the full-precision base 4.4e-3 away (0.70113): the
    # recorded figure is the 4-bit base's, and a base trained unquantised would give the full-precision figure.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hai_tools.models import resolve_base_model
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import load_registered
    from trainer.quantization import load_4bit, quantized_modules
    from trainer.train import _load_tokenizer, _output_delta

    _, splits = load_registered(open_registry(), demo_dataset)
    prompt = splits["validation"][0]["prompt"]
    tokenizer = _load_tokenizer(resolve_base_model(str(tiny_model_dir)))
    base = load_4bit(AutoModelForCausalLM, str(tiny_model_dir), image_text=False, dtype=torch.float32)
    assert quantized_modules(base)
    recorded = manifest.metrics["adapter_output_delta_max_abs"]
    on_4bit = _output_delta(PeftModel.from_pretrained(base, out), tokenizer, prompt)
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    on_full = _output_delta(PeftModel.from_pretrained(full, out), tokenizer, prompt)
    assert abs(on_4bit - recorded) < abs(on_full - recorded) / 3, (on_4bit, on_full, recorded)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--dataset", "nope@1"], "nope@1 is not registered"),
        (["--base_model_id", "/no/such/model"], "does not exist"),
        (["--report_to", "mlflow"], "MLflow tracking at http://127.0.0.1:9 is not usable"),
        (["--lora_r", "0"], "lora_r"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    tiny_model_dir: Path,
    demo_dataset: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    error: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "never"
    code = main(["--base_model_id", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "1", *args])
    err = capsys.readouterr().err
    assert code == 2 and error in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_help_and_verify(
    tiny_model_dir: Path, demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--base_model_id" in capsys.readouterr().out
    out = train(_config(tiny_model_dir, tmp_path / "v", max_steps=1, eval_steps=100))
    assert main(["verify", str(out)]) == 0
    (out / "adapter_model.safetensors").write_bytes(b"corrupt")
    assert main(["verify", str(out)]) == 2
    assert "hash mismatch" in capsys.readouterr().err
