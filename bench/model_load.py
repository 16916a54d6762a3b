"""Cold load of the embedded models, each in a fresh process (the OS page cache stays warm: dropping it needs
root, so "cold" means a new interpreter, as a server restart is). Timed from the first line of the worker to the
first answer (one forward pass for the 270M, one embedding for MiniLM), imports included, as a user waits:

- `gemma-cache`: the embedded 270M from the materialised cache: `resolve_base_model` (its identity re-verified
  against the manifest: a stat check, a full re-hash when anything changed) then `from_pretrained` of the
  memory-mapped safetensors;
- `gemma-gguf`: its first materialisation from the packaged GGUF (assemble, hash, dequantise, save) into an
  empty models folder, then the same load;
- `minilm`: the packaged all-MiniLM-L6-v2 (no materialisation: its safetensors ship in the package).

Each worker then loads its model a second time in the same process (`+loaded` rows): the libraries imported,
as a running server reloading a model pays. A cold process is mostly imports (torch, transformers and what
`from_pretrained` imports lazily: about 6 of its 6.6 s measured on 2 cores), which the model's format cannot
change. Repeats interleaved; min/median/max per kind; `ratio=` gguf/cache medians; goal: <= 2 s from cache.

    .venv/bin/python bench/model_load.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(kind: str) -> None:
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if kind == "minilm":
        from sentence_transformers import SentenceTransformer

        from hai_tools.models import embedder_path

        def load() -> None:
            model = SentenceTransformer(str(embedder_path()), device="cpu")
            model.encode(["Walks without holding on."])
    else:
        import torch
        from transformers import AutoModelForCausalLM

        from hai_tools.models import EMBEDDED_REASONER, materialise_gemma_270m, resolve_base_model

        if kind == "gemma-gguf":
            materialise_gemma_270m(force=True)

        def load() -> None:
            base = resolve_base_model(EMBEDDED_REASONER)  # the identity re-verified (stat check, or re-hash)
            model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
            with torch.no_grad():
                model(torch.tensor([[2, 9259, 1902]]))

    load()
    cold = time.perf_counter() - started
    started = time.perf_counter()
    load()
    print(json.dumps({"kind": kind, "seconds": cold, "loaded": time.perf_counter() - started}))


def run(kind: str, env: dict[str, str]) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", kind], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed: {done.stderr.strip().splitlines()[-1:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return float(answer["seconds"]), float(answer["loaded"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, no GGUF materialisation (tests)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    repeats = 1 if args.quick else args.repeats
    kinds = ["gemma-cache", "minilm"] + ([] if args.quick else ["gemma-gguf"])
    times: dict[str, list[float]] = {name: [] for kind in kinds for name in (kind, f"{kind}+loaded")}
    with tempfile.TemporaryDirectory(prefix="hai-models-") as scratch:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "USE_TF": "0"}
        gguf_env = {**env, "HAI_MODELS": scratch}  # an empty models folder: a first materialisation
        run("gemma-cache", env)  # the shared cache exists before the first timed load
        for _ in range(repeats):
            for kind in kinds:
                cold, loaded = run(kind, gguf_env if kind == "gemma-gguf" else env)
                times[kind].append(cold)
                if kind != "gemma-gguf":  # its second load is a load from cache again
                    times[f"{kind}+loaded"].append(loaded)
    import torch
    import transformers

    print(
        f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(f"{'load':<20} {'min s':>7} {'median s':>9} {'max s':>7}")
    for kind, values in [(k, v) for k, v in times.items() if v]:
        print(f"{kind:<20} {min(values):>7.2f} {statistics.median(values):>9.2f} {max(values):>7.2f}")
    cache = statistics.median(times["gemma-cache"])
    loaded = statistics.median(times["gemma-cache+loaded"])
    print(
        f"270M from cache, cold process: p50={cache:.2f} s (goal <= 2 s: {'met' if cache <= 2 else 'not met'})"
    )
    print(
        f"270M from cache, libraries imported: p50={loaded:.2f} s (goal <= 2 s: {'met' if loaded <= 2 else 'not met'})"
    )
    print(
        f"MiniLM: p50={statistics.median(times['minilm']):.2f} s, libraries imported: "
        f"p50={statistics.median(times['minilm+loaded']):.2f} s"
    )
    if "gemma-gguf" in times:
        print(
            f"ratio={statistics.median(times['gemma-gguf']) / cache:.2f} (first materialisation / from cache)"
        )


if __name__ == "__main__":
    main()
