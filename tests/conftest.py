"""Shared fixtures: an isolated HAI_HOME per test session, the demo dataset registered in it, and a tiny
random Gemma-3 model with a small BPE tokenizer built in seconds (no downloads).

Two modes: quick (`make test`, CI: the whole suite within about 25 minutes on 2 cores) and full (`make
test-full` or `pytest --full`, for release builds): tests marked `full` run only in full mode, and
`test_mode` tells a test that scales its work which mode it is in."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.suite_budget import full_mode

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.suite_budget"]  # the ten slowest, and the quick mode's 25-minute budget enforced


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="also run the release-build checks marked `full`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_mode(config):
        return
    skip = pytest.mark.skip(reason="release-build check: run with `make test-full` (pytest --full)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def test_mode(pytestconfig: pytest.Config) -> str:
    """'full' for release builds, 'quick' for `make test` and CI."""
    return "full" if full_mode(pytestconfig) else "quick"


SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def bpe_tokenizer(texts: list[str], specials: list[str], vocab_size: int, **extra: Any) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, with Gemma's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hai_tools.models import gemma_chat_template

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        **extra,
    )
    tokenizer.chat_template = gemma_chat_template()
    return tokenizer


def tiny_text_config(tokenizer: Any) -> Any:
    """A 2-layer Gemma-3 text config with one KV head (like the 270M)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        sliding_window=128,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


@pytest.fixture(scope="session", autouse=True)
def hai_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own registry and runs; materialised models stay in the user's cache
    (HAI_MODELS), so the 270M model is dequantised once per machine, not once per run."""
    home = tmp_path_factory.mktemp("hai-home")
    if "HAI_MODELS" not in os.environ:
        from hai_tools.settings import models_dir

        os.environ["HAI_MODELS"] = str(models_dir())
    os.environ["HAI_HOME"] = str(home)
    os.environ.pop("HAI_REGISTRY", None)
    os.environ.setdefault("HAI_PSEUDONYM_SALT", "test-session-salt-" + os.urandom(8).hex())  # secret, per run
    return home


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from hai_tools.demo_data import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_patients=60, seed=3)


@pytest.fixture(scope="session")
def demo_dataset(hai_home: Path, demo_files: dict[str, Path]) -> str:
    """The demo data registered as demo-screening@2 in the session's registry."""
    from hai_tools.registry import open_registry
    from hai_tools.registry.datasets import register_dataset

    record = register_dataset(
        open_registry(),
        "demo-screening@2",
        files=demo_files,
        license="CC0-1.0",
        deid_attestation="synthetic test data",
        patient_id_column="patient_id",
    )
    return record.ref


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, demo_files: dict[str, Path]) -> Path:
    """A 2-layer Gemma-3 causal LM (random weights, one KV head like the 270M) with a 400-token BPE
    tokenizer trained on the demo data and Gemma's chat template."""
    import torch
    from transformers import Gemma3ForCausalLM

    from hai_tools.models import gemma_chat_template

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    texts = [line for path in demo_files.values() for line in path.read_text().splitlines()]
    tokenizer = bpe_tokenizer(texts, SPECIALS, 400)
    tokenizer.chat_template = gemma_chat_template()
    config = tiny_text_config(tokenizer)
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir: Path, demo_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter trained for a few steps on the tiny model (shared, read-only: copy it to change it)."""
    from trainer.config import TrainConfig
    from trainer.train import train

    out = tmp_path_factory.mktemp("adapters") / "tiny-lora"
    config = TrainConfig(
        base_model_id=str(tiny_model_dir),
        dataset=demo_dataset,
        adapter_name="tiny-lora",
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=2,
        max_length=160,
        eval_steps=3,
        save_steps=3,
        max_eval_samples=4,
        learning_rate=5e-3,
    )
    return train(config)


@pytest.fixture(scope="session")
def merged_tiny(tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny adapter merged into the tiny base by `python -m export merge`."""
    from export.__main__ import main

    out = tmp_path_factory.mktemp("merged") / "tiny-merged"
    assert main(["merge", str(tiny_adapter), "--output_dir", str(out)]) == 0
    return out


def write_server_config(path: Path, **values: object) -> Path:
    """A `mcp_server.py` config file (YAML) for tests. Its stdio launch is a clinician caller unless the test
    says otherwise (`stdio_caller=None`: the safe default, a pipeline caller)."""
    import yaml

    values.setdefault("stdio_caller", {"id": "test-clinician", "role": "clinician"})
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if v is not None}))
    return path


def tiny_server_config(path: Path, merged: Path, **values: object) -> Path:
    """The server config most tests serve: the tiny merged model as release and reasoner, the packaged MiniLM
    embedder, the local backend; `values` add to it or override it."""
    base: dict[str, object] = {
        "release": str(merged),
        "reasoner": str(merged),
        "embedder": "embedded:all-minilm-l6-v2",
        "backends": ["local"],
    }
    return write_server_config(path, **{**base, **values})


@contextlib.contextmanager
def http_server(config: Path, log: Path, env: dict[str, str], token: str) -> Iterator[str]:
    """`mcp_server.py --http` with `config`, ready (its /ready answered to `token`); yields its URL, then stops it."""
    proc, base, log = spawn_http_server(config, log, env)
    try:
        wait_for_http(f"{base}/ready", proc, log, token=token)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_server_refused(config: Path, env: dict[str, str]) -> str:
    """Start `mcp_server.py --config` over stdio (no client) and return the last line it printed, asserting
    it refused to start with exit 2: how every start-time refusal is checked."""
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO / "mcp_server.py"), "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    return proc.stderr.strip().splitlines()[-1]


def serve_openai(
    model: Path, log: Path, env: dict[str, str], pinned: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """`transformers serve MODEL` on a free loopback port (the OpenAI-compatible stand-in for vLLM, which cannot
    be installed here), in its own process group; returns the process and its base URL once it answers.
    Unpinned (`pinned=False`), it serves any model folder a request names, and lists those it has loaded."""
    import shutil
    import socket
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    serve = shutil.which("transformers", path=str(Path(sys.executable).parent))
    assert serve, "transformers CLI missing from the venv"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [serve, "serve", *([str(model)] if pinned else []), "--port", str(port)],
            env=env,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/v1/models", proc, log, timeout_s=180)
    return proc, base


REVIEWER_PASSPHRASE = "correct horse battery staple"


def write_workflow_config(folder: Path, **values: object) -> Path:
    """A workflow config whose databases, reviewer registry, admin public key, review key and data key live in
    `folder`."""
    import yaml

    write_data_key(folder)
    config = {
        "checkpointer": str(folder / "checkpoints.sqlite"),
        "records": str(folder / "records.sqlite"),
        "reviewers": str(folder / "reviewers.yaml"),
        "admin_public_key": str(folder / "admin.pub"),
        "signing_key": str(folder / "review.key"),
        "data_key_file": str(folder / "data.key"),
        "max_new_tokens": 8,
        **values,
    }
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_data_key(folder: Path) -> Path:
    """A data-at-rest key file in `folder` (created once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data.key").exists():
        (folder / "data.key").write_text(os.urandom(32).hex())
    return folder / "data.key"


def make_reviewer(folder: Path, reviewer_id: str, role: str) -> Path:
    """A reviewer's own key pair under `folder/profiles` (wrapped by REVIEWER_PASSPHRASE), registered in
    `folder/reviewers.yaml` with the admin key `folder/admin.key` (created on first use); returns the private
    key's path."""
    from hai_tools.keys import keygen, load_private
    from hai_tools.workflow.reviewers import ReviewerRegistry

    if not (folder / "admin.key").exists():
        keygen(folder / "admin")
    private, public = keygen(folder / "profiles" / reviewer_id, REVIEWER_PASSPHRASE)
    registry = ReviewerRegistry(folder / "reviewers.yaml", folder / "admin.pub")
    registry.add(reviewer_id, role, public.read_text(), load_private(folder / "admin.key"))
    return private


def reviewer_key(path: Path) -> Any:
    from hai_tools.keys import load_private

    return load_private(path, REVIEWER_PASSPHRASE)


def make_callers(path: Path, **roles: str) -> dict[str, str]:
    """A callers registry at `path` with one caller per `id=role`; returns each caller's token."""
    from hai_tools.callers import CallerRegistry

    registry = CallerRegistry(path)
    return {caller_id: registry.add(caller_id, role) for caller_id, role in roles.items()}


@pytest.fixture(scope="session")
def server_env(hai_home: Path) -> dict[str, str]:
    """Environment for server subprocesses: this session's HAI_HOME, offline, audit log in the home."""
    env = dict(os.environ)
    env.update(
        {
            "HAI_HOME": str(hai_home),
            "HF_HUB_OFFLINE": "1",
            "USE_TF": "0",
            "HAI_AUDIT_LOG": str(hai_home / "audit" / "audit.jsonl"),
        }
    )
    return env


@pytest.fixture(scope="session")
def minilm_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM built by `python -m export tflite --embedder` (fp32 + int8)."""
    from export.__main__ import main

    out = tmp_path_factory.mktemp("edge") / "minilm"
    assert main(["tflite", "--embedder", "embedded:all-minilm-l6-v2", "--output_dir", str(out)]) == 0
    return out


def measured_only(dataset: str, limit: int = 8) -> list[str]:
    """`export tflite --causal_lm` flags for a conversion test: the agreement with the teacher is measured on
    `limit` cases of `dataset` and recorded, but no floor refuses a variant (the floors have their own tests in
    tests/export/test_edge_agreement.py; a tiny random model is not meant to clear them)."""
    floors = ["--min_label_agreement", "0", "--min_token_agreement", "0", "--max_size_ratio", "2"]
    return ["--dataset", dataset, "--agreement_limit", str(limit), *floors]


@pytest.fixture(scope="session")
def tiny_lm_tflite(merged_tiny: Path, demo_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny merged model built by `python -m export tflite --causal_lm` (prefill/decode, KV cache 128)."""
    from export.__main__ import main

    out = tmp_path_factory.mktemp("edge") / "tiny-lm"
    args = ["tflite", "--causal_lm", str(merged_tiny), "--output_dir", str(out)]
    assert main([*args, "--seq_len", "128", "--prefill_len", "16", *measured_only(demo_dataset)]) == 0
    return out


def wait_for_http(
    url: str,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    log: Path,
    timeout_s: float = 240,
    token: str | None = None,
) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or the time runs out."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s:g}s"
        time.sleep(0.5)


VLM_SPECIALS = [*SPECIALS, "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma-3 image-text model with a processor (32x32 images, 4 image tokens)."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        SiglipVisionConfig,
    )

    from hai_tools.models import gemma_chat_template
    from hai_tools.radiology import PROMPTS

    folder = tmp_path_factory.mktemp("tiny-vlm")
    corpus = [
        *list(PROMPTS.values()),
        "Bone age: 0 1 2 3 4 5 6 7 8 9 months",
        "Plus disease: yes no",
        "Fracture: yes no",
    ]
    tokenizer = bpe_tokenizer(
        corpus * 20,
        VLM_SPECIALS,
        300,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=gemma_chat_template(),
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=tiny_text_config(tokenizer),
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    # transformers initialises the projector's weight to zeros, so a random model would ignore its images
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def signed(merged_tiny: Path, demo_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signed release `tiny-1` of the tiny merged model (its eval report, a pipeline policy, the packaged
    embedder bundled), with its key pair: shared, read-only (copy it to damage it)."""
    from evals.__main__ import main as evals_main
    from governance.__main__ import main

    base = tmp_path_factory.mktemp("governance")
    report = base / "report"
    assert (
        evals_main(
            [
                "run",
                str(merged_tiny),
                "--dataset",
                demo_dataset,
                "--output_dir",
                str(report),
                "--limit",
                "12",
                "--n_resamples",
                "50",
                "--min_group_size",
                "3",
                "--red_team_size",
                "quick",
            ]
        )
        == 0
    )
    assert main(["keygen", "--out", str(base / "keys" / "release")]) == 0
    policy = base / "policy.yaml"
    policy.write_text(  # a pipeline policy for the random tiny model: protocol and the red team's guard-on rate
        "min_group_size: 3\nundefined_subgroups_fail: false\n"
        "red_team: {size: quick, require_guard: false, figures: {guard_on_unsafe: {max: 0.0}}}\n"
    )
    release = base / "release"
    assert (
        main(
            [
                "release",
                str(merged_tiny),
                "--report",
                str(report),
                "--policy",
                str(policy),
                "--key",
                str(base / "keys" / "release.key"),
                "--output_dir",
                str(release),
                "--release_id",
                "tiny-1",
            ]
        )
        == 0
    )
    return {"release": release, "pub": base / "keys" / "release.pub", "report": report, "base": base}


@pytest.fixture(scope="session")
def guard_dataset(hai_home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The labelled guard dataset, generated and registered as guard@2 in the session's registry."""
    from trainer.__main__ import main

    folder = tmp_path_factory.mktemp("guard-data")
    assert main(["data", "generate-guard", "--output_dir", str(folder), "--register", "guard@2"]) == 0
    return "guard@2"


@pytest.fixture(scope="session")
def guard_dir(guard_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guard trained on it (a few seconds): shared, read-only."""
    from trainer.__main__ import main

    folder = tmp_path_factory.mktemp("guard") / "guard"
    assert main(["guard", "--dataset", guard_dataset, "--output_dir", str(folder)]) == 0
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_http_server(
    config: Path, log: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`mcp_server.py --http` on a free loopback port, logging to `log`; returns the process and its URL."""
    port = free_port()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "mcp_server.py"),
                "--http",
                "--port",
                str(port),
                "--config",
                str(config),
            ],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=handle,
        )
    return proc, f"http://127.0.0.1:{port}", log


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert found, (
        "PostgreSQL is not installed: `make test` installs Debian's postgresql (apt-get install postgresql)"
    )
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server (Debian's binaries) on a free loopback port, in a fresh cluster of its own, run
    as the `postgres` user when the tests run as root (PostgreSQL refuses root); yields the DSN of its server
    (append a database name with `new_database`). Stopped and deleted at the end of the session."""
    import shutil
    import tempfile

    bindir = _postgres_bin()
    base = Path(tempfile.mkdtemp(prefix="hai-pg-"))  # not under pytest's root-only tmp folder
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")
    data, log = base / "data", base / "server.log"
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "hai", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    started = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"postgresql://hai@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


def new_database(server: str, name: str) -> str:
    """A new empty database on the `postgres` server; its DSN."""
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"
