"""Latency an MCP tool call over streamable HTTP on loopback adds to a direct skill call: the same `embed`
request, direct (in-process EmbedSkill) and through `mcp_server.py --http` in its own process, measured side
by side in one run, repeats interleaved (a direct call, then the same call over MCP). Goal: p50 <= 2 ms and
p99 <= 10 ms added. `--mode` picks the streamable-HTTP transport: `sse` (default: session, SSE-framed
responses), `json` (session, plain JSON responses) or `stateless` (JSON responses, no session).

    .venv/bin/python bench/mcp_overhead.py [--calls 200] [--mode sse|json|stateless]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

from skills.config import load_server_config
from skills.contracts import EmbedRequest, ReasonRequest
from skills.server import Skills

ROOT = Path(__file__).resolve().parent.parent
TOKEN: dict[str, str] = {}
TEXT = ["Caregiver reports the child walks without holding on."]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# An abstaining `reason` call runs no model: it isolates the cost of the MCP path itself.
ABSTAIN = {"question": "How much ibuprofen should I give my son?"}


async def direct(config_path: Path, calls: int) -> dict[str, list[float]]:
    skills = Skills(load_server_config(config_path))
    await skills.load()
    embed_request, abstain_request = EmbedRequest(texts=TEXT), ReasonRequest(**ABSTAIN)
    await skills.embed.embed(embed_request)
    times: dict[str, list[float]] = {"embed": [], "abstain": []}
    for _ in range(calls):
        started = time.perf_counter()
        await skills.embed.embed(embed_request)
        times["embed"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await skills.reasoner.reason(abstain_request)
        times["abstain"].append((time.perf_counter() - started) * 1000)
    await skills.close()
    return times


async def over_mcp(url: str, calls: int) -> dict[str, list[float]]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN['bench']}"})
    times: dict[str, list[float]] = {"embed": [], "abstain": []}
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        await client.call_tool("embed", {"texts": TEXT})
        for _ in range(calls):
            for name, tool, args in (("embed", "embed", {"texts": TEXT}), ("abstain", "reason", ABSTAIN)):
                started = time.perf_counter()
                result = await client.call_tool(tool, args)
                times[name].append((time.perf_counter() - started) * 1000)
                assert not result.is_error
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--mode", choices=["sse", "json", "stateless"], default="sse")
    args = parser.parse_args()
    from hai_tools.callers import CallerRegistry

    with tempfile.TemporaryDirectory() as scratch:
        TOKEN["bench"] = CallerRegistry(Path(scratch) / "callers.yaml").add("bench", "clinician")
        config = Path(scratch) / "server.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "reasoner": None,
                    "embedder": "embedded:all-minilm-l6-v2",
                    "backends": ["local"],
                    "audit_log": str(Path(scratch) / "audit.jsonl"),
                    "callers": str(Path(scratch) / "callers.yaml"),
                    "http": {"json_response": args.mode != "sse", "stateless": args.mode == "stateless"},
                }
            )
        )
        with http_server(config, TOKEN["bench"]) as url:
            direct_ms = asyncio.run(direct(config, args.calls))
            mcp_ms = asyncio.run(over_mcp(url, args.calls))
    print(f"mode={args.mode} calls={args.calls}")
    print(f"{'call':<34} {'p50 ms':>8} {'p99 ms':>8}")
    for name, label in (("embed", "embed (MiniLM, 1 text)"), ("abstain", "reason, abstains (no model)")):
        d, m = direct_ms[name], mcp_ms[name]
        print(f"{label + ' direct':<34} {statistics.median(d):>8.2f} {_pct(d, 0.99):>8.2f}")
        print(f"{label + ' MCP/HTTP':<34} {statistics.median(m):>8.2f} {_pct(m, 0.99):>8.2f}")
        added_p50 = statistics.median(m) - statistics.median(d)
        print(
            f"  added by MCP ({name}): p50={added_p50:.2f} ms p99={_pct(m, 0.99) - _pct(d, 0.99):.2f} ms "
            "(goal p50 <= 2, p99 <= 10)"
        )


if __name__ == "__main__":
    main()
