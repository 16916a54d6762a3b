"""Every bench runs in its quick mode and prints its figure (`ratio=`, `p50=`, `lost=`), so none rots. These
check that the benches run and report, never a speed: figures come from full runs (docs in README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_module(name: str) -> Any:
    """bench/NAME.py loaded as a module (the bench folder is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(args: list[str], env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    ("args", "figure"),
    [
        (["bench/bias_audit.py", "--quick", "--repeats", "1"], "ratio="),
        (["bench/embed_batching.py", "--calls", "16", "--callers", "4", "--repeats", "1"], "ceiling ratio="),
        (["bench/base_verify.py", "--repeats", "1"], "ratio="),
        (["bench/generate_batching.py", "--callers", "3", "--tokens", "4", "--repeats", "1"], "ratio="),
        (["bench/mcp_overhead.py", "--calls", "5"], "MCP/stdio-raw (abstain) above direct + floor: p50="),
        (
            ["bench/mcp_overhead.py", "--calls", "5", "--mode", "stateless"],
            "MCP/http-raw (abstain) above direct",
        ),
        (["bench/mcp_profile.py", "--calls", "20"], "mcp SDK: streamable-HTTP transport"),
        (["bench/load.py", "--clients", "3", "--seconds", "3"], "lost=0 "),
        (["bench/cold_start.py", "--repeats", "1"], "ours tools/list: p50="),
        (["bench/model_load.py", "--quick"], "p50="),
    ],
    ids=[
        "bias_audit",
        "embed_batching",
        "base_verify",
        "generate_batching",
        "mcp_overhead",
        "mcp_overhead_stateless",
        "mcp_profile",
        "load",
        "cold_start",
        "model_load",
    ],
)
def test_a_bench_runs_quick_and_prints_its_figure(
    args: list[str], figure: str, server_env: dict[str, str]
) -> None:
    assert figure in _bench(args, server_env)


def test_the_guard_and_edge_benches_run_quick(
    guard_dir: Path, minilm_tflite: Path, tiny_lm_tflite: Path, server_env: dict[str, str]
) -> None:
    out = _bench(["bench/guard_latency.py", "--guard", str(guard_dir), "--repeats", "20"], server_env)
    assert "p50=" in out and "ratio=" in out
    out = _bench(
        ["bench/edge.py", "--embedder_dir", str(minilm_tflite), "--causal_lm_dir", str(tiny_lm_tflite)],
        server_env,
    )
    assert "ratio=" in out


def test_make_bench_records_figures_machine_and_skips(tmp_path: Path, server_env: dict[str, str]) -> None:
    """`bench/run_all.py` (make bench): the figures a bench printed, its command, the machine and versions in
    results.json and the table; a bench whose artifacts are missing is listed as skipped, not silently left out."""
    import json

    none = f"out-missing-{tmp_path.name}"  # inside the checkout, and absent: the edge bench is skipped
    args = ["bench/run_all.py", "--quick", "--only", "model_load", "edge", "--out", none]
    _bench([*args, "--output_dir", str(tmp_path)], server_env)
    results = json.loads((tmp_path / "results.json").read_text())
    model_load = results["benches"]["model_load"]
    assert any(f.startswith("p50=") for f in model_load["figures"]) and "error" not in model_load
    assert model_load["command"] == ".venv/bin/python bench/model_load.py --repeats 2 --quick"
    assert results["benches"]["edge"]["skipped"].startswith("needs ")
    assert results["machine"]["cpus"] and results["versions"]["torch"]
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| model_load | p50=" in table and "| edge | skipped" in table
    first = next(line for line in table.splitlines() if line.startswith("| model_load |"))
    assert "**" not in first and "CPUs" in first  # this run's machine, not marked as another
    assert model_load["machine"] == results["machine"] and model_load["versions"] == results["versions"]
    # --only runs those benches; the others keep their last figures, the date they were measured, and the
    # machine and versions they were measured on, which the table names when they are not this run's
    model_load["date"] = "2026-01-02T00:00:00+00:00"
    model_load["machine"] = {**results["machine"], "cpu": "AMD EPYC 9B14 96-Core Processor", "amx": False}
    model_load["versions"] = {**results["versions"], "torch": "2.99.0"}
    (tmp_path / "results.json").write_text(json.dumps(results))
    notes = (
        "<!-- kept by bench/run_all.py: notes written by hand below -->\n## What the figures are\n- a note\n"
    )
    (tmp_path / "benchmarks.md").write_text(table + "\n" + notes)
    _bench([*args[:3], "edge", "--out", none, "--output_dir", str(tmp_path)], server_env)
    kept = json.loads((tmp_path / "results.json").read_text())["benches"]["model_load"]
    assert kept["figures"] == model_load["figures"] and kept["machine"]["cpu"].startswith("AMD EPYC")
    table = (tmp_path / "benchmarks.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| model_load |"))
    assert (
        "| 2026-01-02 | **AMD EPYC 9B14, " in row
        and "(torch 2.99.0) | `.venv/bin/python bench/model_load.py" in row
    )
    assert table.endswith(notes) and table.count("## What the figures are") == 1


def test_the_train_overhead_bench_runs_quick(
    tiny_model_dir: Path, demo_dataset: str, server_env: dict[str, str]
) -> None:
    args = ["bench/train_overhead.py", "--base_model_id", str(tiny_model_dir), "--dataset", demo_dataset]
    out = _bench([*args, "--steps", "2", "--batch", "2", "--repeats", "2", "--eval_records", "3"], server_env)
    assert "ratio=" in out and "trainer" in out and "bare" in out
    # both sides' adapters scored by one function, two seeds each, the gap judged against their spread
    assert out.count("eval_loss trainer") == 1 and "eval_loss bare" in out and "(seeds: " in out
    assert "eval_loss grouped" in out and "with --group_by_length: bare / grouped trainer" in out
    assert out.count("eval_loss_gap=") == 2 and "(trainer - bare)" in out and "(grouped - trainer)" in out


def test_the_eval_loss_verdict_calls_a_gap_outside_the_seed_spread_or_with_every_seed_apart() -> None:
    """bench/train_overhead.py's judge of a speed choice, on the seeds measured on 2026-12-02 (16 steps x 4)."""
    bench = _bench_module("train_overhead")
    trainer, bare, grouped = [0.9071, 0.8296, 0.8817], [0.8689, 0.8875, 0.8957], [0.9091, 0.9329, 0.9075]
    assert bench.loss_gap(trainer, bare) == "-0.0058 (seed spread 0.0775: within noise)"
    # within the spread, yet every grouped seed above every ungrouped one: not noise
    assert bench.loss_gap(grouped, trainer) == "+0.0274 (seed spread 0.0775: systematic, every seed apart)"
    assert bench.loss_gap([0.5, 1.4, 1.5], [0.4, 0.41, 0.6]) == "+0.9900 (seed spread 1.0000: within noise)"
    # the seeds touch, but the medians lie further apart than either side's range
    assert bench.loss_gap([1.0, 1.9, 2.0], [0.0, 0.1, 1.0]) == "+1.8000 (seed spread 1.0000: OUTSIDE noise)"


def test_the_raw_http_client_reopens_a_connection_the_server_closed_idle_and_never_resends_a_begun_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench/mcp_overhead.py's hand-written keep-alive client against a loopback server that closes the connection
    after each answer, as uvicorn does once a connection idles 5 s (CI failed on the second warm-up pass with
    IncompleteReadError). A server that closes halfway through an answer is an error, not a request to resend."""
    import asyncio

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = _bench_module("mcp_overhead")
    received: list[bytes] = []

    async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def close_halfway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()
        writer.close()

    async def run(handler: object) -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        client = bench.RawClient(f"http://127.0.0.1:{port}/mcp", "t")
        await client.start()
        try:
            answers = [await client.request("GET", "/health")]
            await asyncio.sleep(0.05)  # the server's close reaches the client before the next request
            answers.append(await client.request("GET", "/health"))
            await client.request("GET", "/health")  # its close not awaited: found when the answer is missing
            return answers
        finally:
            await client.close()
            server.close()

    assert asyncio.run(run(close_after_answer)) == [(200, b"ok"), (200, b"ok")]
    assert len(received) == 3  # one request each: none sent twice
    received.clear()
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(run(close_halfway))
    assert len(received) == 1


def test_every_recorded_bench_row_reruns_from_the_checkout_as_written() -> None:
    """Each row of the committed bench/results.json is exactly the command `make bench` runs for it now (so
    `make bench` reruns every row as recorded), with paths relative to the checkout that exist in it (its
    script) or that `make demo` writes (out/)."""
    import json
    import shlex

    run_all = _bench_module("run_all")
    results = json.loads((ROOT / "bench" / "results.json").read_text())
    now = run_all.benches(Path("out"), quick=False)
    assert set(results["benches"]) == set(now)
    for name, entry in results["benches"].items():
        assert entry["command"] == run_all.command_of(now[name][0]), name
        argv = shlex.split(entry["command"])
        assert argv[0] == ".venv/bin/python" and (ROOT / argv[1]).is_file(), entry["command"]
        assert not any(Path(arg).is_absolute() for arg in argv), entry["command"]
        for arg in argv[2:]:
            assert not arg.startswith(("/", "~")) and "/tmp" not in arg, (name, arg)


def test_make_bench_refuses_an_artifacts_folder_outside_the_checkout(tmp_path: Path) -> None:
    """A row naming /tmp/... would not rerun on another clone: refused before any bench runs, nothing written."""
    done = subprocess.run(
        [
            sys.executable,
            "bench/run_all.py",
            "--quick",
            "--out",
            str(tmp_path / "out"),
            "--output_dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        f"error: --out {tmp_path / 'out'}: give a folder inside the checkout"
    )
    assert list(tmp_path.iterdir()) == []
    run_all = _bench_module("run_all")
    with pytest.raises(run_all.OutsideCheckout, match="absolute path"):
        run_all.command_of(["bench/edge.py", "--embedder_dir", "/tmp/demo/out/edge/minilm"])
