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
