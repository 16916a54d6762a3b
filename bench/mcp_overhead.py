"""Latency an MCP tool call over streamable HTTP on loopback adds to a direct skill call: the same `embed`
request, direct (in-process skills), through `mcp_server.py --http` in its own process and through
`mcp_server.py` over stdio, measured side by side in one run, repeats interleaved (a direct call, then the same
call over each transport); the added latency is taken per repeat (paired). Goal: p50 <= 2 ms and p99 <= 10 ms
added.

Two HTTP clients: the Python SDK's `Client` (what an agent host in Python runs) and a lean JSON-RPC client
(`LeanClient`: one HTTP POST per call, the MCP handshake and session header when the server keeps sessions, the
SSE frame or JSON body parsed, the result checked for `isError`). The lean path is the transport and the server's
own share; the difference between the two is the SDK client's cost, which a caller pays whichever server it calls.
In stateless mode a third HTTP client, `RawClient`, writes HTTP/1.1 on one keep-alive socket (asyncio streams, no
HTTP library): what it adds is the server's share (uvicorn, the MCP stack, our middlewares) plus loopback, with
the least client cost one can have. The transport's floor is measured beside them: a plain `GET /health` (no MCP,
no skill) on the lean client's and on the raw client's connection; the MCP stack's own share is what an MCP call
adds above the direct call plus that floor, for the call that runs no model (an `embed`'s model time varies
between two runs by more than that share, so its paired figures are noisier). `--mode` picks the streamable-HTTP
transport: `sse` (default: session, SSE-framed responses), `json` (session, plain JSON responses) or `stateless`
(JSON responses, no session; `make bench` runs this one).

Over stdio likewise two clients: the SDK's `Client` (launching the server as agent hosts do) and `RawStdioClient`
(JSON-RPC lines on the server's pipes, no MCP library: the stdio server's own share); its floor is an MCP `ping`
(answered by the SDK's session: pipes, framing and JSON, no tool, no skill).

    .venv/bin/python bench/mcp_overhead.py [--calls 200] [--mode sse|json|stateless]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

import httpx2
from _server import embed_only_config, http_server  # bench/_server.py
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from skills.config import load_server_config
from skills.contracts import EmbedRequest, ReasonRequest
from skills.server import Skills

ROOT = Path(__file__).resolve().parent.parent
TOKEN: dict[str, str] = {}
TEXT = ["Caregiver reports the child walks without holding on."]


PATHS = ("http", "http-lean", "http-raw", "stdio", "stdio-raw")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# An abstaining `reason` call runs no model: it isolates the cost of the MCP path itself.
ABSTAIN = {"question": "How much ibuprofen should I give my son?"}


class LeanClient:
    """An MCP client over streamable HTTP reduced to what the protocol needs: `initialize` and the session header
    when the server keeps sessions (none in stateless mode), then one POST per `tools/call`."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx2.AsyncClient(
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-06-18",
            }
        )
        self.next_id = 0

    async def _post(self, message: dict[str, object]) -> dict[str, object] | None:
        response = await self.http.post(self.url, json=message)
        response.raise_for_status()
        if "id" not in message:
            return None
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for line in response.text.splitlines():  # the frame that answers this request
                if line.startswith("data:"):
                    answer = json.loads(line[5:])
                    if answer.get("id") == message["id"]:
                        return answer  # type: ignore[no-any-return]
            raise RuntimeError("no answer in the SSE stream")
        return response.json()  # type: ignore[no-any-return]

    async def start(self) -> None:
        self.next_id += 1
        init = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "lean", "version": "0"},
        }
        response = await self.http.post(
            self.url, json={"jsonrpc": "2.0", "id": self.next_id, "method": "initialize", "params": init}
        )
        response.raise_for_status()
        if session := response.headers.get("mcp-session-id"):
            self.http.headers["Mcp-Session-Id"] = session
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call_tool(self, name: str, arguments: dict[str, object]) -> dict[str, object]:
        self.next_id += 1
        answer = await self._post(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments},
            }
        )
        assert answer is not None and "result" in answer and not answer["result"].get("isError"), answer  # type: ignore[union-attr]
        return answer["result"]  # type: ignore[return-value]


class RawClient:
    """JSON-RPC over HTTP/1.1 written by hand on one keep-alive socket: stateless mode only (no session, a JSON
    body with Content-Length), the result checked for `isError` as the other clients do."""

    def __init__(self, url: str, token: str) -> None:
        self.host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        self.port = int(port)
        self.token = token
        self.next_id = 0

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request on the kept-alive connection. uvicorn closes a connection idle for 5 s (the stdio servers'
        loads in the warm-up take longer under load): as any keep-alive client does, a connection the server has
        closed is opened again and the request sent once more, since a server that closed it idle never read it."""
        if self.reader.at_eof():
            await self.reconnect()
        try:
            return await self._exchange(method, path, body)
        except (asyncio.IncompleteReadError, ConnectionResetError) as error:
            if isinstance(error, asyncio.IncompleteReadError) and error.partial:
                raise  # the server began an answer: not an idle close, do not send it again
            await self.reconnect()
            return await self._exchange(method, path, body)

    async def reconnect(self) -> None:
        self.writer.close()
        await self.start()

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
            "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n"
        )
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(
            int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")
        )
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def call_tool(self, name: str, arguments: dict[str, object]) -> dict[str, object]:
        self.next_id += 1
        message = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        status, body = await self.request("POST", "/mcp", json.dumps(message).encode())
        answer = json.loads(body)
        assert status == 200 and not answer["result"].get("isError"), answer
        return answer["result"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class RawStdioClient:
    """JSON-RPC lines written by hand to `mcp_server.py` over its stdin and read from its stdout (asyncio pipes,
    no MCP library): `initialize`, `notifications/initialized`, then one line per call, the answer matched by
    id. What it adds is the stdio server's share plus the pipes; `ping` (answered by the SDK's session, no tool,
    no skill) is the stdio transport's floor."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.next_id = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 24,  # an embed's answer is one long line
        )
        init = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        }
        await self.request("initialize", init)
        assert self.process.stdin is not None
        self.process.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    async def request(self, method: str, params: dict[str, object]) -> dict[str, object]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()
        while True:  # skip notifications the server sends (log messages, progress)
            answer = json.loads(await self.process.stdout.readline())
            if answer.get("id") == self.next_id:
                assert "result" in answer, answer
                return answer["result"]  # type: ignore[no-any-return]

    async def call_tool(self, name: str, arguments: dict[str, object]) -> dict[str, object]:
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        assert not result.get("isError"), result
        return result

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await self.process.wait()


async def measure(
    config_path: Path, url: str, calls: int, stateless: bool
) -> dict[str, dict[str, list[float]]]:
    """One loop, interleaved: each request direct (in-process skills), then over MCP/HTTP, then over MCP/stdio
    (`mcp_server.py` launched by the client, as agent hosts launch it)."""
    import sys

    from mcp import StdioServerParameters

    skills = Skills(load_server_config(config_path))
    await skills.load()
    requests = {"embed": ("embed", {"texts": TEXT}), "abstain": ("reason", ABSTAIN)}
    direct_calls = {
        "embed": lambda: skills.embed.embed(EmbedRequest(texts=TEXT)),
        "abstain": lambda: skills.reasoner.reason(ReasonRequest(**ABSTAIN)),
    }
    times: dict[str, dict[str, list[float]]] = {
        path: {"embed": [], "abstain": []} for path in ("direct", *PATHS)
    }
    # a plain HTTP round trip (no MCP, no skill) and an MCP `ping` over stdio (no tool, no skill)
    floors: dict[str, list[float]] = {"lean": [], "raw": [], "stdio-raw": []}
    lean = LeanClient(f"{url}/mcp", TOKEN["bench"])
    await lean.start()
    raw = RawClient(url, TOKEN["bench"]) if stateless else None
    if raw:
        await raw.start()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN['bench']}"})
    server_command = [sys.executable, str(ROOT / "mcp_server.py"), "--config", str(config_path)]
    stdio = StdioServerParameters(command=server_command[0], args=server_command[1:], cwd=str(ROOT))
    raw_stdio = RawStdioClient(server_command)
    await raw_stdio.start()
    async with (
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as over_http,
        Client(stdio, read_timeout_seconds=300) as over_stdio,
    ):
        paths: list[tuple[str, Any]] = [
            ("http", over_http),
            ("http-lean", lean),
            ("http-raw", raw),
            ("stdio", over_stdio),
            ("stdio-raw", raw_stdio),
        ]
        clients = [(path, client) for path, client in paths if client is not None]  # raw: stateless only
        for _ in range(2):  # warm-up: the stdio servers' loads, then every connection used again (keep-alive)
            for _, client in clients:
                await client.call_tool("embed", {"texts": TEXT})
        for name in requests:
            await direct_calls[name]()
        for _ in range(calls):
            for name, (tool, args) in requests.items():
                started = time.perf_counter()
                await direct_calls[name]()
                times["direct"][name].append((time.perf_counter() - started) * 1000)
                for path, client in clients:
                    started = time.perf_counter()
                    result = await client.call_tool(tool, args)
                    times[path][name].append((time.perf_counter() - started) * 1000)
                    assert isinstance(result, dict) or not result.is_error, result
            started = time.perf_counter()
            (await lean.http.get(f"{url}/health")).raise_for_status()
            floors["lean"].append((time.perf_counter() - started) * 1000)
            if raw:
                started = time.perf_counter()
                assert (await raw.request("GET", "/health"))[0] == 200
                floors["raw"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await raw_stdio.request("ping", {})
            floors["stdio-raw"].append((time.perf_counter() - started) * 1000)
    times["floor"] = floors
    await raw_stdio.close()
    if raw:
        await raw.close()
    await lean.http.aclose()
    await skills.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--mode", choices=["sse", "json", "stateless"], default="sse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        config, TOKEN["bench"] = embed_only_config(Path(scratch), args.mode)
        with http_server(config, TOKEN["bench"]) as url:
            times = asyncio.run(measure(config, url, args.calls, args.mode == "stateless"))
    print(f"mode={args.mode} calls={args.calls} (HTTP mode; stdio is one mode)")
    print(f"{'call':<40} {'min ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, label in (("embed", "embed (MiniLM, 1 text)"), ("abstain", "reason, abstains (no model)")):
        d = times["direct"][name]
        print(f"{label + ' direct':<40} {min(d):>8.2f} {statistics.median(d):>8.2f} {_pct(d, 0.99):>8.2f}")
        for path in PATHS:
            m = times[path][name]
            if not m:  # the raw client speaks stateless mode only
                continue
            print(
                f"{label + ' MCP/' + path:<40} {min(m):>8.2f} {statistics.median(m):>8.2f} {_pct(m, 0.99):>8.2f}"
            )
            added = [mcp - direct for mcp, direct in zip(m, d, strict=True)]  # paired: the same repeat
            print(
                f"  added by MCP/{path} ({name}): p50={statistics.median(added):.2f} ms "
                f"p99={_pct(added, 0.99):.2f} ms (goal p50 <= 2, p99 <= 10)"
            )
    for client, f in times["floor"].items():
        if not f:
            continue
        path = client if client.startswith("stdio") else f"http-{client}"
        what = (
            "MCP ping over stdio, no tool, no skill"
            if client.startswith("stdio")
            else f"GET /health on the {client} client's connection, no MCP, no skill"
        )
        print(f"floor of MCP/{path} ({what}): p50={statistics.median(f):.2f} ms p99={_pct(f, 0.99):.2f} ms")
        # abstain only: an embed's model time varies by more than the MCP share between two runs of it
        above = [
            m - d - h for m, d, h in zip(times[path]["abstain"], times["direct"]["abstain"], f, strict=True)
        ]
        print(
            f"  MCP/{path} (abstain) above direct + floor: p50={statistics.median(above):.2f} ms (the MCP stack)"
        )


if __name__ == "__main__":
    main()
