"""hai-mcp-client: list or call the hai-tools MCP server's tools from a shell. The token comes from the
environment (`--token-env`, default HAI_MCP_TOKEN), never from argv. Exit 0 with JSON on stdout, or non-zero
with a one-line reason on stderr."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from hai_tools_client.client import ClientError, HaiClient


def _arguments(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"--arg {pair!r}: expected key=value")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


async def _run(args: argparse.Namespace) -> Any:
    async with HaiClient(args.url, os.environ.get(args.token_env), args.timeout_s) as hai:
        if args.command == "tools":
            return await hai.tools()
        return await hai.call(args.tool, **_arguments(args.arg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hai-mcp-client", description=__doc__)
    parser.add_argument(
        "--url", required=True, help="the server's MCP endpoint, e.g. http://127.0.0.1:8765/mcp"
    )
    parser.add_argument("--token-env", default="HAI_MCP_TOKEN", help="environment variable holding the token")
    parser.add_argument("--timeout_s", type=float, default=180.0)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tools", help="the tools this caller may use")
    call = commands.add_parser("call", help="call one tool")
    call.add_argument("tool")
    call.add_argument("--arg", action="append", default=[], help="key=value (value parsed as JSON if it is)")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(asyncio.run(_run(args)), indent=2))
    except ClientError as exc:
        print(f"hai-mcp-client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"hai-mcp-client: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
