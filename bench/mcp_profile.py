"""Where the time of an MCP tool call over streamable HTTP goes, on the server's side: the `mcp_server.py --http`
app (the same ASGI stack: body limit, caller auth, the SDK's streamable-HTTP transport, the review boundary, the
tool) driven in-process with the request a client sends, no socket and no client, against the same work called
directly on the skills (`reason`, abstaining: no model runs; or `embed`). Both loops run hot and interleaved;
`p50=` of each and of the added time, then one cProfile pass over each loop with every function's own time put
in a bucket by where its code lives (the SDK's transport, its dispatch and tool layer, pydantic, anyio/asyncio,
starlette, json, our boundary and auth, the skill and its audit log, fsync), per call, and the added time's
share by bucket (profiled time is inflated by the profiler; the shares are what it tells).

The network, uvicorn's HTTP parsing and the client are not in this figure (`bench/mcp_overhead.py` has them).

    .venv/bin/python bench/mcp_profile.py [--calls 2000] [--tool reason|embed] [--mode stateless|json|sse]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

from _server import embed_only_config  # bench/_server.py

from skills.config import load_server_config
from skills.contracts import EmbedRequest, ReasonRequest
from skills.server import Skills, build_http_app

ARGUMENTS = {
    "reason": {"question": "How much ibuprofen should I give my son?"},  # abstains: no model runs
    "embed": {"texts": ["Caregiver reports the child walks without holding on."]},
}

# (bucket, test on the profiler's file name or built-in's description), first match wins
BUCKETS: list[tuple[str, Any]] = [
    ("fsync (audit log durability)", lambda f: "posix.fsync" in f),
    ("mcp SDK: streamable-HTTP transport", lambda f: "/mcp/server/streamable_http" in f),
    ("mcp SDK: dispatch, session, tool layer", lambda f: "/mcp/" in f or "/mcp_types/" in f),
    ("pydantic (validation, serialisation)", lambda f: "pydantic" in f),
    (
        "anyio / asyncio / sniffio",
        lambda f: any(k in f for k in ("anyio", "asyncio", "sniffio", "_contextvars")),
    ),
    ("starlette", lambda f: "starlette" in f),
    ("json", lambda f: "/json/" in f or "_json" in f),
    ("hai-tools: auth, review boundary", lambda f: "skills/boundary.py" in f or "hai_tools/callers.py" in f),
    ("hai-tools: skill, audit, contracts", lambda f: "/skills/" in f or "/hai_tools/" in f),
    ("torch / sentence-transformers", lambda f: "torch" in f or "sentence_transformers" in f),
]


def bucket(filename: str, name: str) -> str:
    where = f"{filename} {name}"
    return next((label for label, test in BUCKETS if test(where)), "other (python builtins, logging, ...)")


def per_bucket(profile: cProfile.Profile, calls: int) -> dict[str, float]:
    """Each function's own (not cumulative) time, summed by bucket, in microseconds per call."""
    totals: dict[str, float] = defaultdict(float)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, own, _, _) in stats.items():
        if "select.epoll" in name or "_run_once" in name:  # the loop waiting, and its bookkeeping
            continue
        totals[bucket(filename, name)] += own
    return {k: v / calls * 1e6 for k, v in totals.items()}


class AsgiCall:
    """One `tools/call` POST to the app, as raw ASGI messages (the headers a streamable-HTTP client sends)."""

    def __init__(self, app: Any, token: str, tool: str) -> None:
        self.app = app
        self.body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": tool, "arguments": ARGUMENTS[tool]},
            }
        ).encode()
        self.headers = [
            (b"host", b"127.0.0.1:8765"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"mcp-protocol-version", b"2025-06-18"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        self.session: list[tuple[bytes, bytes]] = []

    async def post(self, body: bytes | None = None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "query_string": b"",
            "root_path": "",
            "headers": self.headers + self.session,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8765),
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body or self.body, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected until the response is sent
            raise AssertionError("unreachable")

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], b"".join(m.get("body", b"") for m in sent if "body" in m), start["headers"]

    async def handshake(self) -> None:
        """`initialize` and its session header, when the server keeps sessions."""
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "profile", "version": "0"},
            },
        }
        status, _, headers = await self.post(json.dumps(init).encode())
        assert status == 200, status
        session = dict(headers).get(b"mcp-session-id")
        if session:
            self.session = [(b"mcp-session-id", session)]
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await self.post(json.dumps(note).encode())

    async def call(self) -> None:
        status, body, _ = await self.post()
        text = body.decode()
        if text.startswith("event:") or "\ndata:" in text or text.startswith("data:"):
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
        answer = json.loads(text)
        assert status == 200 and not answer["result"].get("isError"), (status, answer)


async def run(args: argparse.Namespace, config: Path, token: str) -> dict[str, Any]:
    skills = Skills(load_server_config(config))
    app = build_http_app(skills)
    messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        {"lifespan.startup.complete": started, "lifespan.shutdown.complete": stopped}.get(
            message["type"], asyncio.Event()
        ).set()

    await messages.put({"type": "lifespan.startup"})
    life = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, messages.get, lifespan_send)
    )
    await started.wait()
    while (await skills.ready())["loading"]:  # the embedder loads in the background (no reasoner here)
        await asyncio.sleep(0.2)
    request = (
        EmbedRequest(texts=ARGUMENTS["embed"]["texts"])
        if args.tool == "embed"
        else ReasonRequest(**ARGUMENTS["reason"])  # type: ignore[arg-type]
    )
    direct = skills.embed.embed if args.tool == "embed" else skills.reasoner.reason
    mcp = AsgiCall(app, token, args.tool)
    await mcp.handshake()
    for _ in range(max(10, args.calls // 10)):  # warm-up
        await mcp.call()
        await direct(request)  # type: ignore[arg-type]
    times: dict[str, list[float]] = {"direct": [], "mcp": []}
    for _ in range(args.calls):  # interleaved
        t0 = time.perf_counter()
        await direct(request)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        await mcp.call()
        t2 = time.perf_counter()
        times["direct"].append((t1 - t0) * 1000)
        times["mcp"].append((t2 - t1) * 1000)
    profiles = {}
    for side, once in (("direct", lambda: direct(request)), ("mcp", mcp.call)):  # type: ignore[arg-type]
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.calls):
            await once()
        profile.disable()
        profiles[side] = per_bucket(profile, args.calls)
    await messages.put({"type": "lifespan.shutdown"})
    await stopped.wait()
    await life
    return {"times": times, "profiles": profiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tool", choices=sorted(ARGUMENTS), default="reason")
    parser.add_argument("--mode", choices=["stateless", "json", "sse"], default="stateless")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)  # as the server: no line per request
    with tempfile.TemporaryDirectory() as scratch:
        config, token = embed_only_config(Path(scratch), args.mode)
        result = asyncio.run(run(args, config, token))
    times, profiles = result["times"], result["profiles"]
    added = [m - d for m, d in zip(times["mcp"], times["direct"], strict=True)]
    print(f"tool={args.tool} mode={args.mode} calls={args.calls}, in-process ASGI (no socket, no client)")
    for side in ("direct", "mcp"):
        print(f"  {side:<7} p50={statistics.median(times[side]):.3f} ms")
    print(f"  added by the server's MCP stack: p50={statistics.median(added):.3f} ms")
    direct, mcp = profiles["direct"], profiles["mcp"]
    extra = {k: mcp.get(k, 0.0) - direct.get(k, 0.0) for k in set(direct) | set(mcp)}
    total = sum(v for v in extra.values() if v > 0)
    print(f"{'own time per call, profiled (us)':<44} {'direct':>8} {'MCP':>8} {'added':>8} {'share':>6}")
    for name in sorted(extra, key=lambda k: -extra[k]):
        share = f"{100 * extra[name] / total:>5.0f}%" if extra[name] > 0 else ""
        print(
            f"{name:<44} {direct.get(name, 0):>8.0f} {mcp.get(name, 0):>8.0f} {extra[name]:>8.0f} {share:>6}"
        )


if __name__ == "__main__":
    main()
