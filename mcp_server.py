"""The MCP server of hai-tools: EmbedSkill and ReasonerSkill (and the original screening call) as MCP tools,
the release's model card and manifest as resources. stdio by default; `--http` serves streamable HTTP in a
Starlette app with bearer-token auth, `/health`, `/ready` and the REST route `POST /infer_text`.

    python mcp_server.py --config configs/mcp_server.yaml                 # stdio
    HAI_MCP_TOKEN=... python mcp_server.py --http --port 8765             # http://127.0.0.1:8765/mcp
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field, ValidationError

from hai_tools.cli import offline_defaults
from skills.contracts import (
    EmbedRequest,
    EmbedResult,
    ReasonRequest,
    ReasonResult,
    ScreeningRequest,
    ScreeningResult,
)

log = logging.getLogger("mcp_server")

Texts = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=4000)]], Field(min_length=1, max_length=64)
]


class Skills:
    """The skills and their backends, built from a ServerConfig."""

    def __init__(self, config: Any) -> None:
        from hai_tools.audit import AuditLog
        from hai_tools.safety import default_policy
        from skills.backends.base import Backend
        from skills.embed_skill import EmbedSkill
        from skills.failover import FailoverRouter
        from skills.reasoner_skill import ReasonerSkill

        self.config = config
        self.backends: list[Backend] = []
        for name in config.backends:
            self.backends.append(self._backend(name))
        router = FailoverRouter(
            self.backends, config.timeout_s, config.breaker_threshold, config.breaker_cooldown_s
        )
        audit = AuditLog(Path(config.audit_log) if config.audit_log else None)
        self.router = router
        self.embed = EmbedSkill(router, audit)
        self.reasoner = ReasonerSkill(router, default_policy(), audit)
        self.release = self._release()
        if self.release is not None:  # results name the release when it is the model that answers
            for backend in self.backends:
                for capability in ("generate", "embed"):
                    if backend.supports(capability):
                        identity = backend.identity(capability)
                        if identity.manifest_hash == self.release["hash"]:
                            identity.release = self.release["name"]

    def _backend(self, name: str) -> Any:
        config = self.config
        if name == "local":
            from skills.backends.local import LocalBackend

            return LocalBackend(reasoner=config.reasoner, embedder=config.embedder)
        if name == "vllm":
            from skills.backends.vllm import VLLMBackend

            return VLLMBackend(
                config.vllm.base_url,
                config.vllm.served_model,
                config.vllm.embed_model,
                api_key_env=config.vllm.api_key_env,
                timeout_s=config.timeout_s,
            )
        from skills.backends.tflite import TFLiteBackend

        return TFLiteBackend(config.tflite.embedder_dir, config.tflite.reasoner_dir, config.tflite.variant)

    def _release(self) -> dict[str, Any] | None:
        """The release folder's manifest (verified) and card; refuse to start on one that does not verify."""
        if not self.config.release:
            return None
        from hai_tools.errors import ConfigError
        from hai_tools.manifest import load_manifest, verify_artifact

        folder = Path(self.config.release)
        served_hash = None
        if (folder / "manifest.json").exists() and load_manifest(folder).kind == "release":
            if not self.config.release_public_key:
                raise ConfigError(
                    "a signed release needs release_public_key (the trusted ed25519 public key)"
                )
            from governance.release import verify_release

            verify_release(folder, Path(self.config.release_public_key))
            manifest = load_manifest(folder)
            served_hash = manifest.input("merged_model").hash
        else:
            manifest = verify_artifact(folder)
        card = folder / "README.md"
        return {
            "manifest": (folder / "manifest.json").read_text(),
            "card": card.read_text()
            if card.exists()
            else f"# {manifest.name}\n\nNo model card in {folder.name}.",
            "name": manifest.name,
            "hash": served_hash or manifest.content_hash,
        }

    async def start(self) -> None:
        from skills.backends.base import BackendUnavailable
        from skills.backends.local import LocalBackend
        from skills.backends.vllm import VLLMBackend

        for backend in self.backends:
            if isinstance(backend, LocalBackend):
                await asyncio.to_thread(backend.load)
            elif isinstance(backend, VLLMBackend) and (
                backend.supports("generate") or backend.supports("embed")
            ):
                try:
                    await backend.check_ready()
                except BackendUnavailable as exc:
                    log.warning("%s; calls will fail over", exc)

    async def ready(self) -> dict[str, Any]:
        status = {b.name: await b.health() for b in self.backends}
        capable = {
            cap: any(status[b.name] for b in self.router.candidates(cap)) for cap in ("embed", "generate")
        }
        return {
            "ready": all(capable.values()),
            "backends": status,
            "capabilities": capable,
            "breakers": {n: b.state for n, b in self.router.breakers.items()},
        }

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()


def build_server(skills: Skills) -> Any:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import ToolAnnotations

    from hai_tools.errors import HaiError

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await skills.start()
        try:
            yield
        finally:
            await skills.close()

    server = MCPServer(
        name="hai-tools",
        instructions="Clinical decision support tools. Every reasoner output requires clinician review.",
        lifespan=lifespan,
    )
    read_only = ToolAnnotations(
        readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False
    )

    async def guarded(coro: Any) -> Any:
        try:
            return await coro
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ToolError(f"InvalidInput: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        except HaiError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from None

    @server.tool(
        name="embed",
        title="Embed texts",
        annotations=read_only,
        description="Sentence embeddings (L2-normalised) of up to 64 texts.",
    )
    async def embed(texts: Texts) -> EmbedResult:
        return await guarded(skills.embed.embed(EmbedRequest(texts=texts)))  # type: ignore[no-any-return]

    @server.tool(
        name="reason",
        title="Clinical reasoning (clinician review required)",
        annotations=read_only,
        description="Answer a clinician's question about a case, with rationale. Abstains on "
        "out-of-scope requests. Every result requires clinician review.",
    )
    async def reason(
        question: Annotated[str, Field(min_length=1, max_length=4000)],
        ctx: Context,
        context: Annotated[list[Annotated[str, Field(min_length=1, max_length=4000)]], Field(max_length=8)]
        | None = None,
        max_new_tokens: Annotated[int, Field(ge=1, le=512)] = 256,
        adapter: Annotated[str | None, Field(max_length=128)] = None,
    ) -> ReasonResult:
        request = await guarded(
            _validated(
                ReasonRequest,
                question=question,
                context=context or [],
                max_new_tokens=max_new_tokens,
                adapter=adapter,
            )
        )
        await ctx.report_progress(0, 2, "checked against the safety policy")
        result = await guarded(skills.reasoner.reason(request))
        await ctx.report_progress(2, 2, "answered")
        return result  # type: ignore[no-any-return]

    @server.tool(
        name="screen",
        title="Developmental screening (clinician review required)",
        annotations=read_only,
        description="The original screening call: {case_id, age_months, observations} -> "
        "refer / monitor / on-track with rationale.",
    )
    async def screen(
        case_id: Annotated[str, Field(min_length=1, max_length=64)],
        age_months: Annotated[int, Field(ge=0, le=216)],
        observations: Annotated[str, Field(min_length=1, max_length=4000)],
        ctx: Context,
    ) -> ScreeningResult:
        request = await guarded(
            _validated(ScreeningRequest, case_id=case_id, age_months=age_months, observations=observations)
        )
        await ctx.report_progress(0, 1, "screening")
        result = await guarded(skills.reasoner.screen(request))
        await ctx.report_progress(1, 1, "done")
        return result  # type: ignore[no-any-return]

    if skills.release is not None:
        release = skills.release

        @server.resource(
            "hai://release/model-card",
            name="model-card",
            mime_type="text/markdown",
            description=f"Model card of release {release['name']}",
        )
        def model_card() -> str:
            return str(release["card"])

        @server.resource(
            "hai://release/manifest",
            name="release-manifest",
            mime_type="application/json",
            description=f"Manifest (hashes, inputs, metrics) of release {release['name']}",
        )
        def release_manifest() -> str:
            return str(release["manifest"])

    return server


async def _validated(model: Any, **values: Any) -> Any:
    return model(**values)


def build_http_app(skills: Skills, token: str) -> Any:
    """Streamable HTTP at /mcp behind bearer auth; /health and /ready open; POST /infer_text (REST screening)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from hai_tools.errors import HaiError

    server = build_server(skills)

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @server.custom_route("/ready", methods=["GET"])
    async def ready(_: Request) -> JSONResponse:
        state = await skills.ready()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @server.custom_route("/infer_text", methods=["POST"])
    async def infer_text(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            payload = ScreeningRequest.model_validate(json.loads(await request.body()))
            result = await skills.reasoner.screen(payload)
        except (ValidationError, ValueError) as exc:
            detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "malformed JSON"
            return JSONResponse({"error": "invalid_input", "detail": detail}, status_code=422)
        except HaiError as exc:
            return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=503)
        return JSONResponse(result.model_dump())

    app = server.streamable_http_app(streamable_http_path="/mcp")

    class BearerAuth:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if (
                scope["type"] == "http"
                and scope["path"].startswith("/mcp")
                and not authorised(Request(scope))
            ):
                unauthorized = JSONResponse(
                    {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await unauthorized(scope, receive, send)
                return
            await self.inner(scope, receive, send)

    return BearerAuth(app)


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
    from hai_tools.errors import HaiError
    from skills.config import load_server_config, read_token

    try:
        config = load_server_config(args.config)
        skills = Skills(config)
        if not args.http:
            build_server(skills).run("stdio")
            return 0
        token = read_token(config)
        if not token:
            raise HaiError(
                f"--http needs a bearer token: set ${config.token_env} or token_file in the config"
            )
        import uvicorn

        uvicorn.run(build_http_app(skills, token), host=args.host, port=args.port, log_level="warning")
        return 0
    except HaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
