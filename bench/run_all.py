"""`make bench`: run every bench, record its figures (`ratio=`, `p50=`, `p99=`, `lost=` ...), the command, the
machine and library versions in `bench/results.json`, and a table of them in `docs/benchmarks.md`. Benches that
need built artifacts (the guard, the TFLite models of `make demo`) are run when those exist and listed as skipped
otherwise. `--quick` runs each bench in its quick mode (tests: writes to `--output_dir`).

Each row's command is recorded with paths relative to the checkout, and what runs is that recorded command, split
as a shell splits it, from the checkout: every row reruns as written on any clone (`--out` must therefore lie
inside the checkout; `make demo` writes `out/`).

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--out out] [--output_dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTES = "<!-- kept by bench/run_all.py: notes written by hand below -->"
FIGURE = re.compile(r"\b(ratio|p50|p99|lost|answered|overloaded|throughput)=([-+]?[0-9][0-9.]*)")


PYTHON = ".venv/bin/python"  # the project's venv, as `make bench` runs it from the checkout


class OutsideCheckout(ValueError):
    """An artifacts folder outside the checkout: a command naming it would not rerun on another clone."""


def relative_out(out: Path) -> Path:
    """`out` as a path relative to the checkout, or OutsideCheckout."""
    resolved = (out if out.is_absolute() else ROOT / out).resolve()
    try:
        return resolved.relative_to(ROOT)
    except ValueError:
        raise OutsideCheckout(
            f"--out {out}: give a folder inside the checkout ({ROOT}); the commands recorded in "
            "bench/results.json name it and must rerun from any clone"
        ) from None


def command_of(argv: list[str]) -> str:
    """The command line recorded for a bench, which is also the one that runs (`shlex.split` of it)."""
    if any(Path(arg).is_absolute() for arg in argv):
        raise OutsideCheckout(f"bench arguments name an absolute path: {shlex.join(argv)}")
    return shlex.join([PYTHON, *argv])


def benches(out: Path, quick: bool) -> dict[str, tuple[list[str], list[Path]]]:
    """name -> (arguments, artifacts it needs), `out` relative to the checkout."""
    # make demo builds both edge models (the reasoner only when it agrees with the served model: else skipped)
    edge = ["--embedder_dir", str(out / "edge/minilm"), "--causal_lm_dir", str(out / "edge/reasoner")]
    full: dict[str, tuple[list[str], list[Path]]] = {
        "mcp_overhead": (["bench/mcp_overhead.py", "--mode", "stateless"], []),
        "mcp_profile": (["bench/mcp_profile.py"], []),
        "cold_start": (["bench/cold_start.py"], []),
        "load": (["bench/load.py"], []),
        "embed_batching": (["bench/embed_batching.py"], []),
        "generate_batching": (["bench/generate_batching.py"], []),
        "model_load": (["bench/model_load.py", "--repeats", "2"], []),
        "train_overhead": (["bench/train_overhead.py"], []),
        "base_verify": (["bench/base_verify.py"], []),
        "bias_audit": (["bench/bias_audit.py"], []),
        "guard_latency": (["bench/guard_latency.py", "--guard", str(out / "guard")], [out / "guard"]),
        "edge": (["bench/edge.py", *edge], [out / "edge/minilm", out / "edge/reasoner"]),
    }
    if not quick:
        return full
    short = {
        "mcp_overhead": ["--calls", "5"],
        "mcp_profile": ["--calls", "20"],
        "cold_start": ["--repeats", "1"],
        "load": ["--clients", "3", "--seconds", "3"],
        "embed_batching": ["--calls", "16", "--callers", "4", "--repeats", "1"],
        "generate_batching": ["--callers", "3", "--tokens", "4", "--repeats", "1"],
        "model_load": ["--quick"],
        "train_overhead": ["--steps", "2", "--batch", "2", "--repeats", "1", "--eval_records", "4"],
        "base_verify": ["--repeats", "1"],
        "bias_audit": ["--quick", "--repeats", "1"],
        "guard_latency": ["--repeats", "20"],
        "edge": [],
    }
    return {name: ([*args, *short[name]], needs) for name, (args, needs) in full.items()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "sentence-transformers", "mcp", "ai-edge-litert", "fairlearn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, str | int | None]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "amx": "amx_tile" in flags,
        "python": platform.python_version(),
    }


def where(entry: dict[str, Any], run: dict[str, Any]) -> str:
    """A row's machine in a few words, with the library versions that differ from this run's."""
    about = entry.get("machine") or {}
    if not about:
        return "unknown"
    cpu = re.sub(r"\(R\)|\(TM\)|Processor|\b\d+-Core\b", "", str(about.get("cpu", ""))).split()
    label = " ".join(cpu[:3]) + f", {about.get('cpus')} CPUs"
    label += ", AMX" if about.get("amx") else ", AVX-512" if about.get("avx512") else ""
    if about != run["machine"]:
        label = f"**{label}**"  # not this run's machine
    differ = [f"{k} {v}" for k, v in (entry.get("versions") or {}).items() if run["versions"].get(k) != v]
    return label + (f" ({', '.join(differ)})" if differ else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        nargs="*",
        help="bench names to run (default: all); the other rows keep their last figures and dates",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        help="where `make demo` wrote its artifacts, inside the checkout (relative to it, or absolute)",
    )
    parser.add_argument(
        "--output_dir", type=Path, default=None, help="default: bench/ and docs/ of this checkout"
    )
    args = parser.parse_args()
    try:
        out = relative_out(args.out)
    except OutsideCheckout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "benches": {},
    }
    bench_dir = args.output_dir or ROOT / "bench"
    docs_dir = args.output_dir or ROOT / "docs"
    earlier: dict[str, dict[str, Any]] = {}
    if args.only and (bench_dir / "results.json").is_file():  # the other rows keep their figures and dates
        previous = json.loads((bench_dir / "results.json").read_text())
        for name, entry in previous.get("benches", {}).items():
            entry.setdefault("date", previous.get("date"))  # files written before rows carried their own
            entry.setdefault("machine", previous.get("machine"))
            entry.setdefault("versions", previous.get("versions"))
            earlier[name] = entry
    table = [
        "| bench | figures | seconds | measured | machine | command |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    failed = 0
    for name, (argv, needs) in benches(out, args.quick).items():
        if args.only and name not in args.only:
            if name in earlier:
                entry = earlier[name]
                results["benches"][name] = entry  # type: ignore[index]
                shown = ", ".join(entry.get("figures") or []) or str(
                    entry.get("skipped") or entry.get("error")
                )
                table.append(
                    f"| {name} | {shown} | {entry.get('seconds', '')} | {str(entry['date'])[:10]} "
                    f"| {where(entry, results)} | `{entry['command']}` |"
                )
            continue
        command = command_of(argv)  # as recorded, and as run, from the checkout
        missing = [str(p) for p in needs if not (ROOT / p).exists()]
        if missing:
            results["benches"][name] = {  # type: ignore[index]
                "command": command,
                "skipped": f"needs {', '.join(missing)} (make demo)",
                "date": results["date"],
            }  # type: ignore[index]
            table.append(
                f"| {name} | skipped: needs `make demo` artifacts | | {str(results['date'])[:10]} | | `{command}` |"
            )
            print(f"{name}: skipped (needs {', '.join(missing)})", flush=True)
            continue
        print(f"{name}: {command}", flush=True)
        started = time.monotonic()
        done = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True)
        seconds = time.monotonic() - started
        figures = [f"{k}={v}" for k, v in FIGURE.findall(done.stdout)]
        entry = {
            "command": command,
            "seconds": round(seconds, 1),
            "figures": figures,
            "stdout": done.stdout,
            "date": results["date"],
            "machine": results["machine"],
            "versions": results["versions"],
        }
        if done.returncode != 0:
            failed += 1
            entry["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        results["benches"][name] = entry  # type: ignore[index]
        shown = ", ".join(figures) if done.returncode == 0 else f"failed: {entry['error']}"
        table.append(
            f"| {name} | {shown} | {entry['seconds']} | {str(results['date'])[:10]} | {where(entry, results)} | `{command}` |"
        )
        print(f"  {shown}", flush=True)
    bench_dir.mkdir(parents=True, exist_ok=True)
    docs_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    about = results["machine"]
    head = [
        "# Benchmarks",
        "",
        f"Last run {results['date']} by `make bench` (`bench/run_all.py`{' --quick' if args.quick else ''}) on "
        f"{about['cpu']}, {about['cpus']} CPUs (AVX-512: {about['avx512']}, AMX: {about['amx']}), Python "  # type: ignore[index]
        f"{about['python']}; " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",  # type: ignore[index, attr-defined]
        "Rows kept from earlier runs name their own machine, and their library versions where those differ; "
        "compare figures across rows of one machine only.",
        "Each bench's docstring says what both sides do; the full output of each run is in `bench/results.json`.",
        "",
    ]
    docs = docs_dir / "benchmarks.md"
    notes = ""  # what follows the marker is written by hand (what each row's figures are) and kept
    if docs.is_file() and NOTES in (text := docs.read_text()):
        notes = "\n" + text[text.index(NOTES) :]
    docs.write_text("\n".join(head + table) + "\n" + notes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
