"""Cold start of `mcp_server.py` over stdio, as an agent host launches it: seconds from process start to the
`initialize` answer and then to the `tools/list` answer (issue 19's goal: both within 1 s), and to the first
tool call's answer. The server is the full one (the embedded 270M reasoner and MiniLM on the local backend): it
answers before its models load (they load in the background, and a call that arrives earlier waits within its
deadline), so `initialize` and `tools/list` time the interpreter, the imports the server needs to speak MCP and
its configuration, and the first `embed` adds the embedder's load.

Baseline: the floor of any MCP server written with this SDK, a one-tool `MCPServer` over stdio (no hai-tools
import), timed the same way. Each side in a fresh process, repeats interleaved; min/median/max; `p50=` / `p99=`
of our initialize and tools/list; `ratio=` our initialize / the floor's (medians). The OS page cache stays warm
(dropping it needs root): "cold" means a new interpreter, as a restart is.

    .venv/bin/python bench/cold_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOOR_SERVER = """
from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")


@server.tool()
def echo(text: str) -> str:
    return text


server.run()
"""


async def one_start(command: list[str], call: tuple[str, dict[str, object]]) -> dict[str, float]:
    """Seconds from process start to each answer, through mcp_overhead.py's raw stdio client (JSON-RPC lines on
    the server's pipes, no MCP library)."""
    from mcp_overhead import RawStdioClient  # bench/mcp_overhead.py

    client = RawStdioClient(command)
    started = time.perf_counter()
    times: dict[str, float] = {}
    try:
        await client.start()  # initialize, then notifications/initialized
        times["initialize"] = time.perf_counter() - started
        await client.request("tools/list", {})
        times["tools/list"] = time.perf_counter() - started
        await client.call_tool(*call)
        times[f"first {call[0]}"] = time.perf_counter() - started
    finally:
        if hasattr(client, "process"):
            await client.close()
    return times


def server_config(scratch: Path) -> Path:
    """The full server: embedded reasoner and embedder on the local backend, a clinician stdio caller, the audit
    log in `scratch`."""
    import yaml

    config = scratch / "server.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "reasoner": "embedded:gemma-3-270m",
                "embedder": "embedded:all-minilm-l6-v2",
                "backends": ["local"],
                "audit_log": str(scratch / "audit.jsonl"),
                "stdio_caller": {"id": "bench", "role": "clinician"},
            }
        )
    )
    return config


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as scratch:
        floor = Path(scratch) / "floor_server.py"
        floor.write_text(FLOOR_SERVER)
        sides = {
            "ours": ([sys.executable, str(ROOT / "mcp_server.py"), "--config", str(server_config(Path(scratch)))],
                     ("embed", {"texts": ["fever and rash"]})),
            "floor": ([sys.executable, str(floor)], ("echo", {"text": "fever"})),
        }  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, (command, call) in sides.items():  # interleaved
                runs[side].append(asyncio.run(one_start(command, call)))
    print(f"cold start over stdio, seconds from process start to each answer; {os.cpu_count()} CPUs; "
          f"{args.repeats} interleaved repeats; python {sys.version.split()[0]}")  # fmt: skip
    print(f"{'side':<6} {'answer':<14} {'min':>7} {'median':>7} {'max':>7}")
    for side, starts in runs.items():
        for answer in starts[0]:
            values = [s[answer] for s in starts]
            print(
                f"{side:<6} {answer:<14} {min(values):>7.3f} {statistics.median(values):>7.3f} {max(values):>7.3f}"
            )
    for answer in ("initialize", "tools/list"):
        values = [s[answer] for s in runs["ours"]]
        print(
            f"ours {answer}: p50={percentile(values, 0.5):.3f} s p99={percentile(values, 0.99):.3f} s (goal 1 s)"
        )
    ratio = statistics.median(s["initialize"] for s in runs["ours"]) / statistics.median(
        s["initialize"] for s in runs["floor"]
    )
    print(f"initialize ours / the SDK's one-tool server: ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
