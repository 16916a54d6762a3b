"""The MCP server of hai-tools: EmbedSkill and ReasonerSkill (and the original screening call) as MCP tools,
`submit_for_review` / `get_reviewed_result` for callers that may only receive reviewed output, the release's
model card and manifest as resources. stdio by default; `--http` serves streamable HTTP in a Starlette app with
bearer-token callers, `/health`, `/ready` and the REST routes `POST /infer_text`, `POST /review`,
`GET /review/{id}`. The server itself is built in skills/server.py (the composition root); this file is
the entry point agents and configs name.

    python mcp_server.py --config configs/mcp_server.yaml                 # stdio (stdio_caller in the config)
    python -m hai_tools.callers add ward-agent --role clinician           # a token per caller
    python mcp_server.py --http --port 8765                               # http://127.0.0.1:8765/mcp
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hai_tools.cli import offline_defaults
from skills.server import Skills, build_http_app, build_server

__all__ = ["Skills", "build_http_app", "build_server", "main"]


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    parser = argparse.ArgumentParser(prog="python mcp_server.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ["HAI_MCP_CONFIG"]) if os.environ.get("HAI_MCP_CONFIG") else None,
        help="YAML server config (default: $HAI_MCP_CONFIG; see configs/mcp_server.yaml)",
    )
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # the SDK logs "Terminating session" at INFO for every stateless HTTP request: a line per call, no news
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    from hai_tools.errors import HaiError
    from skills.config import load_server_config

    try:
        config = load_server_config(args.config)
        skills = Skills(config)
        if not args.http:
            build_server(skills).run("stdio")
            return 0
        if not skills.resolver.legacy_token and not any(
            c.active for c in skills.resolver.registry.load().values()
        ):
            raise HaiError(
                "--http needs callers: python -m hai_tools.callers add NAME --role clinician|pipeline|admin "
                f"(or a single pipeline token in ${config.token_env} / token_file)"
            )
        import uvicorn

        app = build_http_app(skills, args.host)  # refuses a non-loopback host without allowed_hosts
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    except HaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
