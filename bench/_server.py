"""`mcp_server.py --http` for the benches: started on a free loopback port, waited for until its backends have
loaded (an embed-only server is never fully "ready": it has no reasoner), stopped on exit."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def embed_only_config(scratch: Path, mode: str) -> tuple[Path, str]:
    """A server config with the embedder alone (no reasoner: an abstaining `reason` runs no model), one clinician
    caller `bench` (also the stdio caller), the audit log in `scratch`, and streamable HTTP in `mode` (sse, json:
    JSON responses with sessions, stateless). Returns the config's path and the caller's token."""
    import yaml

    from hai_tools.callers import CallerRegistry

    token = CallerRegistry(scratch / "callers.yaml").add("bench", "clinician")
    config = scratch / "server.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "reasoner": None,
                "embedder": "embedded:all-minilm-l6-v2",
                "backends": ["local"],
                "audit_log": str(scratch / "audit.jsonl"),
                "callers": str(scratch / "callers.yaml"),
                "stdio_caller": {"id": "bench", "role": "clinician"},
                "http": {"json_response": mode != "sse", "stateless": mode == "stateless"},
            }
        )
    )
    return config, token


@contextmanager
def http_server(config: Path, token: str, timeout_s: float = 240) -> Iterator[str]:
    """The server's base URL, once `/ready` says its backends are loaded."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "mcp_server.py"), "--http", "--port", str(port), "--config", str(config)],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ready = httpx.get(f"{url}/ready", timeout=2, headers={"Authorization": f"Bearer {token}"})
                if ready.status_code in (200, 503) and ready.json().get("loading") is False:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server at {url} did not load within {timeout_s:g}s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
