"""Load on the MCP server over streamable HTTP on loopback: N concurrent clients (each its own MCP session) for
T seconds, mixed tools (embed; reason that the guard refuses, no model; screen, the embedded 270M reasoner), the
server in its own process. Every call must be answered or told `Overloaded` (the bounded queues): `lost=` counts
the others (timeouts, dropped connections, protocol errors) and must be 0.

    .venv/bin/python bench/load.py [--clients 200] [--seconds 60]      # quick: --clients 20 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

import httpx2
import yaml
from _server import http_server  # bench/_server.py
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
CALLS = [
    ("embed", {"texts": ["Caregiver reports the child walks without holding on."]}),
    ("reason", {"question": "How much ibuprofen should I give my son?"}),
    ("screen", {"case_id": "load", "age_months": 18, "observations": "Says two words, points to ask."}),
]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def client_loop(url: str, token: str, until: float, seed: int, out: dict[str, list]) -> None:
    rng = random.Random(seed)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(300))
    try:
        async with Client(
            streamable_http_client(f"{url}/mcp", http_client=http), read_timeout_seconds=300
        ) as client:
            while time.monotonic() < until:
                tool, args = rng.choice(CALLS)
                started = time.perf_counter()
                try:
                    result = await client.call_tool(tool, args)
                except Exception as exc:  # a call that got no answer at all
                    out["lost"].append(f"{tool}: {type(exc).__name__}")
                    continue
                ms = (time.perf_counter() - started) * 1000
                text = result.content[0].text if result.is_error and result.content else ""
                if not result.is_error:
                    out["answered"].append((tool, ms))
                elif "Overloaded:" in text:  # the bounded queue said so: an answer, not a loss
                    out["overloaded"].append((tool, ms))
                else:
                    out["lost"].append(f"{tool}: {text[:80]}")
    except Exception as exc:  # the session itself failed
        out["lost"].append(f"session: {type(exc).__name__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    from hai_tools.callers import CallerRegistry

    with tempfile.TemporaryDirectory() as scratch:
        token = CallerRegistry(Path(scratch) / "callers.yaml").add("load", "clinician")
        config = Path(scratch) / "server.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "embedder": "embedded:all-minilm-l6-v2",
                    "backends": ["local"],
                    "audit_log": str(Path(scratch) / "audit.jsonl"),
                    "callers": str(Path(scratch) / "callers.yaml"),
                }
            )
        )
        with http_server(config, token) as url:
            out: dict[str, list] = {"answered": [], "overloaded": [], "lost": []}
            started = time.monotonic()

            async def run() -> None:
                until = time.monotonic() + args.seconds
                await asyncio.gather(*(client_loop(url, token, until, i, out) for i in range(args.clients)))

            asyncio.run(run())
            took = time.monotonic() - started
    answered = [ms for _, ms in out["answered"]]
    print(f"clients={args.clients} seconds={args.seconds:g} wall={took:.1f}s")
    for tool, _ in CALLS:
        mine = [ms for t, ms in out["answered"] if t == tool]
        told = sum(1 for t, _ in out["overloaded"] if t == tool)
        print(
            f"  {tool:<7} answered={len(mine):>6} overloaded={told:>6} p50={_pct(mine, 0.5):.1f}ms p99={_pct(mine, 0.99):.1f}ms"
        )
    print(
        f"answered={len(answered)} overloaded={len(out['overloaded'])} lost={len(out['lost'])} "
        f"throughput={len(answered) / took:.1f}/s p50={statistics.median(answered) if answered else float('nan'):.1f}ms "
        f"p99={_pct(answered, 0.99):.1f}ms"
    )
    for reason in sorted(set(out["lost"]))[:10]:
        print(f"  lost: {reason}")


if __name__ == "__main__":
    main()
