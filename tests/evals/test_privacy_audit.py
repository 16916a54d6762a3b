"""`python -m evals privacy`: the membership-inference audit on a tiny model that can memorise, with 1,000 member and
1,000 non-member records. The adapter trained without DP until it overfits must be caught (attack AUC lower CI
bound > 0.6); the DP adapter (epsilon 1) trained the same way must not be (CI contains 0.5, upper bound <= 0.6).
Then the release policy's caps, in the gate and in a release, each with the case where they refuse.

The tiny model's weights are initialised at 0.3 (not Gemma's 0.02): with 0.02 its output layer's logits span
about +-1.3, so a LoRA on a frozen random base cannot fit anything, member or not (measured: AUC 0.62 after 20
epochs with loss stuck at 5.4 per token); at 0.3 it memorises (members 4.3, non-members 5.0)."""

from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals.__main__ import main as evals_main
from evals.gate import MetricBound, PrivacyPolicy, privacy_checks
from evals.privacy import lira_offline, load_audit, reference_assignment, tpr_at_fpr
from hai_tools.errors import ConfigError

# the module's fixtures train four adapters on 1,000 records (about 4 minutes alone on 2 cores; beside another job
# on the same cores, three times that)
pytestmark = pytest.mark.timeout(2400)

N = 1000  # members, and as many non-members
WORDS = [
    "walks",
    "talks",
    "points",
    "stacks",
    "babbles",
    "crawls",
    "waves",
    "sits",
    "stands",
    "climbs",
    "runs",
    "jumps",
    "draws",
    "reads",
]


def _record(i: int, rng: random.Random) -> dict[str, Any]:
    """A prompt and a random 4-letter code nothing in the prompt predicts: only memorisation lowers its loss.
    Members and non-members come from one distribution (a random 5-digit case number for both, not the record's
    index, which would make every member's prompt shorter than a non-member's)."""
    code = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
    question = (
        f"Case {rng.randrange(10_000, 100_000)}: child "
        + " ".join(rng.choice(WORDS) for _ in range(4))
        + ". Reference code?"
    )
    return {
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": code}],
        "patient_id": f"p{i}",
    }


@pytest.fixture(scope="module")
def memorising(tmp_path_factory: pytest.TempPathFactory, hai_home: Path) -> dict[str, Any]:
    """The records (registered as mia@1: train = members, test = non-members) and a tiny model that can fit them."""
    import torch
    from transformers import Gemma3ForCausalLM

    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import register_dataset
    from tests.conftest import SPECIALS, bpe_tokenizer, tiny_text_config

    folder = tmp_path_factory.mktemp("mia")
    rng = random.Random(0)
    records = [_record(i, rng) for i in range(2 * N)]
    for split, rows in (("train", records[:N]), ("test", records[N:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    register_dataset(
        open_registry(),
        "mia@1",
        files={"train": folder / "train.jsonl", "test": folder / "test.jsonl"},
        license="CC0-1.0",
        deid_attestation="synthetic test data",
        patient_id_column="patient_id",
    )
    texts = [r["prompt"][0]["content"] + " " + r["completion"][0]["content"] for r in records]
    tokenizer = bpe_tokenizer(texts, SPECIALS, 400)
    config = tiny_text_config(tokenizer)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return {"folder": folder, "model": folder / "model"}


def _run(module: str, *args: str) -> None:
    """`python -m trainer` / `python -m evals` as a user runs them, each in a fresh process: in the suite's own
    process, after the LLM-suite tests have loaded deepeval and ragas, the same trainings took 1.6x as long
    (measured 172 s against 111 s for this module's fixture; cause not isolated)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


def _train(memorising: dict[str, Any], name: str, **extra: Any) -> Path:
    import yaml

    config = {
        "base_model_id": str(memorising["model"]),
        "dataset": "mia@1",
        "adapter_name": name,
        "output_dir": str(memorising["folder"] / name),
        "num_train_epochs": 40,
        "per_device_train_batch_size": 32,
        "max_length": 64,
        "learning_rate": 1e-2,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "save_steps": 100_000,
        "eval_steps": 100_000,
        "logging_steps": 100,
        **extra,
    }
    path = memorising["folder"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    _run("trainer", "--config", str(path))
    return Path(config["output_dir"])


def _audit(adapter: Path, out: Path, references: int) -> Path:
    args = ["privacy", str(adapter), "--dataset", "mia@1", "--output_dir", str(out)]
    _run("evals", *args, "--reference_models", str(references), "--n_resamples", "300")
    return out


@pytest.fixture(scope="module")
def audits(memorising: dict[str, Any], test_mode: str) -> dict[str, Path]:
    plain = _train(memorising, "mia-plain")
    private = _train(memorising, "mia-dp", dp=True, dp_target_epsilon=1.0, dp_max_grad_norm=1.0)
    folder = memorising["folder"]
    full = test_mode == "full"  # quick mode (CI): LiRA on the overfit adapter only, with 2 references
    return {
        "plain": _audit(plain, folder / "audit-plain", 4 if full else 2),
        "dp": _audit(private, folder / "audit-dp", 4 if full else 0),
        "plain_adapter": plain,
    }


def test_an_overfit_adapter_is_caught_and_the_dp_adapter_is_not(audits: dict[str, Path]) -> None:
    plain, _ = load_audit(audits["plain"])
    private, _ = load_audit(audits["dp"])
    assert plain.n_members == plain.n_non_members == N and plain.n_patients == 2 * N
    caught = plain.figures["loss_threshold_auc"]
    assert caught.low is not None and caught.low > 0.6, caught
    lira = plain.figures["lira_offline_auc"]
    assert lira.low is not None and lira.low > 0.6, lira
    held = private.figures["loss_threshold_auc"]
    assert held.low is not None and held.high is not None
    assert held.low <= 0.5 <= held.high and held.high <= 0.6, held
    if "lira_offline_auc" in private.figures:
        # LiRA, the stronger attack, may register a small real signal: epsilon 1 allows an AUC up to about 0.73
        # (TPR <= e^epsilon FPR + delta). Measured 0.516 [0.489, 0.542] with 2 references, 0.525 [0.501, 0.545]
        # with 4: bounded, as the release policy's cap asks, though not always at chance.
        lira = private.figures["lira_offline_auc"]
        assert lira.high is not None and lira.high <= 0.6, lira
    assert private.differential_privacy and private.differential_privacy["epsilon"] <= 1.0
    runs = [p.name for p in (Path(os.environ["HAI_HOME"]) / "runs").iterdir()]
    assert not [r for r in runs if "-reference-" in r], runs  # the reference models' runs were removed
    card = (audits["plain"] / "README.md").read_text()
    assert plain.adapter_hash in card and "| loss threshold |" in card and "TPR at 1% FPR" in card


def test_the_policy_caps_the_audit_and_refuses_each_bad_case(audits: dict[str, Path]) -> None:
    plain, _ = load_audit(audits["plain"])
    private, _ = load_audit(audits["dp"])
    policy = PrivacyPolicy.model_validate(
        {"min_members": N, "require_dp": True, "figures": {"loss_threshold_auc": {"max_upper": 0.6}}}
    )
    assert all(c.passed for c in privacy_checks(private, policy))
    failed = {c.name: c.detail for c in privacy_checks(plain, policy) if not c.passed}
    assert set(failed) == {"privacy DP-SGD", "privacy loss_threshold_auc <= (CI upper bound) 0.6"}, failed
    assert failed["privacy DP-SGD"] == "not trained with DP-SGD"
    missing = privacy_checks(None, policy)
    assert not missing[0].passed and missing[0].detail.startswith("none given")
    small = privacy_checks(private, policy.model_copy(update={"min_members": N + 1}))
    assert [c.detail for c in small if not c.passed] == [f"{N} members, {N} non-members (min {N + 1} each)"]
    without_lira = private.model_copy(
        update={"figures": {k: v for k, v in private.figures.items() if not k.startswith("lira")}}
    )
    capped = policy.model_copy(update={"figures": {"lira_offline_auc": MetricBound(max_upper=0.6)}})
    lira = [c for c in privacy_checks(without_lira, capped) if not c.passed]
    assert [(c.name, c.detail) for c in lira] == [
        ("privacy lira_offline_auc <= (CI upper bound) 0.6", "missing from the report")
    ]
    with pytest.raises(ValueError, match="unknown privacy figure"):
        PrivacyPolicy.model_validate({"figures": {"attack_auc": {"max": 0.6}}})


def test_the_audit_refuses_a_dataset_the_adapter_was_not_trained_on(
    audits: dict[str, Path], demo_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit"
    code = evals_main(
        ["privacy", str(audits["plain_adapter"]), "--dataset", demo_dataset, "--output_dir", str(out)]
    )
    assert code == 2
    assert "mia-plain was not trained on demo-screening@2" in capsys.readouterr().err
    assert not out.exists()


def test_attack_arithmetic() -> None:
    """TPR at 1% FPR: with 100 non-members one false positive is allowed; LiRA calibrates by OUT references only,
    and needs an even number of references with each record OUT of half."""
    membership = np.asarray([1] * 4 + [0] * 100)
    score = np.concatenate([[5.0, 4.0, 0.5, -1.0], np.linspace(0, 1, 100)])  # non-members' top score is 1.0
    assert tpr_at_fpr(membership, score) == 0.5  # threshold: the second-highest non-member (0.9899)
    assignment = reference_assignment(6, 4, seed=0)
    assert (assignment.sum(axis=0) == 2).all()
    with pytest.raises(ConfigError, match="or an even number >= 2"):
        reference_assignment(6, 3, seed=0)
    target = np.asarray([1.0, 2.0])
    references = np.asarray(
        [[1.0, 5.0], [3.0, 2.0]]
    )  # record 0 OUT of reference 1, record 1 OUT of reference 0
    trained_on = np.asarray([[True, False], [False, True]])
    scores = lira_offline(target, references, trained_on)
    assert scores[0] > 0 and scores[1] > 0 and scores[1] > scores[0]  # 3 -> 1 and 5 -> 2 both drop
