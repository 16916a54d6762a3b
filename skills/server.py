"""The composition root of the serving side: backends, failover router, skills, the review desk and callers from
a ServerConfig (`Skills`), the MCP server over them (`build_server`: EmbedSkill and ReasonerSkill, the screening
call, `submit_for_review` / `get_reviewed_result`, the release's card and manifest as resources) and the HTTP app
(`build_http_app`: streamable HTTP at /mcp, `/health`, `/ready`, `POST /infer_text`, `POST /review`,
`GET /review/{id}`, behind bearer-token callers). `mcp_server.py` is the entry point agents and configs name;
evals and benches build their skills here too (`local_skills`). What each caller's role may receive is decided
in skills/boundary.py. The tools' input schemas are the contracts' field types (skills/contracts.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field, ValidationError

from skills.contracts import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_IMAGE_BASE64_CHARS,
    AdapterName,
    AgeMonths,
    CaseId,
    ContextPassages,
    EmbedRequest,
    EmbedResult,
    ImageMediaType,
    MaxNewTokens,
    Observations,
    Question,
    RadiographRequest,
    RadiographResult,
    RadiologyTask,
    ReasonRequest,
    ReasonResult,
    ReviewedResult,
    ReviewHandle,
    ScreeningRequest,
    ScreeningResult,
    Texts,
)

log = logging.getLogger("mcp_server")

ImageBase64 = Annotated[str, Field(min_length=4, max_length=MAX_IMAGE_BASE64_CHARS)]
ReviewId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


class Composed:
    """A router over backends and the skills on it, sharing one audit log: what the server runs, and what evals
    and benches run (`local_skills`), built the same way."""

    def __init__(self, router: Any, guard: Any, audit: Any) -> None:
        from skills.embed_skill import EmbedSkill

        self.router = router
        self.audit = audit
        self.guard = guard
        self.embed = EmbedSkill(router, audit)
        self.reasoner = self.reasoner_with(guard)

    def reasoner_with(self, guard: Any) -> Any:
        """A ReasonerSkill on the same router and audit log, checked by `guard` (evaluation may pass another)."""
        from skills.reasoner_skill import ReasonerSkill

        return ReasonerSkill(self.router, guard, self.audit)


def local_skills(
    reasoner: str | None = None, embedder: str | None = None, guard: Any = None, audit_log: Path | None = None
) -> Composed:
    """The skills on the local backend alone (evaluations, benches): `guard` a Guard (default: the packaged
    policy's rules)."""
    from hai_tools.audit import AuditLog
    from hai_tools.guard import Guard
    from hai_tools.safety import default_policy
    from skills.backends.local import LocalBackend
    from skills.failover import FailoverRouter

    router = FailoverRouter([LocalBackend(reasoner=reasoner, embedder=embedder)])
    return Composed(router, guard if guard is not None else Guard(default_policy()), AuditLog(audit_log))


def _log_failed_load(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the backends failed: %s (see /ready)", task.exception())


class Skills:
    """The skills and their backends, built from a ServerConfig."""

    def __init__(self, config: Any) -> None:
        from hai_tools.audit import AuditLog
        from hai_tools.callers import CallerRegistry
        from hai_tools.guard import load_guard
        from skills.backends.base import Backend
        from skills.boundary import CallerResolver
        from skills.config import read_token
        from skills.failover import FailoverRouter
        from skills.review_desk import ReviewDesk

        self.config = config
        self.loading: asyncio.Task[None] | None = None  # the backends loading in the background (start)
        self.release = self._release()  # verified first: in release mode it decides every model loaded
        self.backends: list[Backend] = []
        for name in config.backends:
            self.backends.append(self._backend(name))
        router = FailoverRouter(
            self.backends,
            config.timeout_s,
            config.breaker_threshold,
            config.breaker_cooldown_s,
            deadline_s=config.deadline_s,
            max_queue=config.max_queue,
        )
        from skills.metrics import ServingMetrics
        from skills.tracing import Tracing

        self.metrics = ServingMetrics()
        self.metrics.watch(router)
        router.on_failover = self.metrics.failover
        self.tracing = Tracing(config.tracing)
        if self.tracing.enabled:
            router.span = self.tracing.span

        def observe(*call: Any) -> None:
            self.metrics.observe(*call)
            self.tracing.observe(*call)

        audit = AuditLog(Path(config.audit_log) if config.audit_log else None, observer=observe)
        guard_dir = self.models["guard"]
        guard = load_guard(
            Path(config.safety_policy) if config.safety_policy else None,
            Path(guard_dir) if guard_dir else None,
        )
        if guard_dir is None:
            log.warning(
                "no guard artifact configured: requests and answers are checked by the policy's rules alone"
            )
        composed = Composed(router, guard, audit)
        self.radiology = None
        if self.models.get("radiology") or config.radiology is not None:
            from skills.config import RadiologySettings
            from skills.radiology_skill import RadiologySkill

            settings = config.radiology or RadiologySettings()
            released = self.models.get("radiology")
            if released:  # the signed release's image-text model, its interval from the release's eval report
                settings = settings.model_copy(update={"model": released, "eval_report": None})
            self.radiology = RadiologySkill(
                settings, audit, release_folder=Path(config.release) if released else None
            )
        self.router, self.guard, self.embed, self.reasoner = router, guard, composed.embed, composed.reasoner
        self.review = ReviewDesk(self.embed, self.reasoner, config.workflow)
        registry = CallerRegistry(Path(config.callers) if config.callers else None)
        registry.load()  # a registry with an unknown role or a malformed entry stops the start here
        self.resolver = CallerResolver(registry, read_token(config), config.stdio_caller)
        if self.release is not None:  # results name the release when one of its models answers
            for backend in self.backends:
                for capability in ("generate", "embed"):
                    if backend.supports(capability):
                        identity = backend.identity(capability)
                        if identity.manifest_hash in self.release["served"]:
                            identity.release = self.release["name"]
                            identity.release_hash = self.release["hash"]
            if self.radiology is not None and self.radiology.identity.manifest_hash in self.release["served"]:
                self.radiology.identity.release = self.release["name"]
                self.radiology.identity.release_hash = self.release["hash"]

    def _backend(self, name: str) -> Any:
        config = self.config
        if name == "local":
            from skills.backends.local import LocalBackend

            return LocalBackend(reasoner=self.models["reasoner"], embedder=self.models["embedder"])
        if name == "vllm":
            from skills.backends.vllm import VLLMBackend

            return VLLMBackend(
                config.vllm.base_url,
                self.models["vllm_model"],
                config.vllm.embed_model,
                api_key_env=config.vllm.api_key_env,
                timeout_s=config.timeout_s,
                embed_base_url=config.vllm.embed_base_url,
                recheck_s=config.vllm.recheck_s,
            )
        from skills.backends.tflite import TFLiteBackend

        return TFLiteBackend(
            self.models["edge_embedder"], self.models["edge_reasoner"], config.tflite.variant
        )

    def _release(self) -> dict[str, Any] | None:
        """Verify the release and decide the models. With `release_public_key` set, `release` must be a signed
        release that verifies (whatever its manifest's `kind` says), and it is the one input: the local backend
        loads its models, the TFLite backend its edge models, vLLM must serve it under its id. Without a key, a
        signed release is refused, and an unsigned artifact folder (development) is the reasoner it names."""
        from hai_tools.errors import ConfigError
        from hai_tools.manifest import verify_artifact

        config = self.config
        explicit = config.model_fields_set | {f"tflite.{k}" for k in config.tflite.model_fields_set}
        self.models: dict[str, str | None] = {
            "reasoner": config.reasoner,
            "embedder": config.embedder,
            "guard": config.guard,
            "vllm_model": config.vllm.served_model,
            "edge_embedder": config.tflite.embedder_dir,
            "edge_reasoner": config.tflite.reasoner_dir,
        }
        if not config.release:
            if config.release_public_key:
                raise ConfigError("release_public_key is set but no release: name the release to serve")
            return None
        folder = Path(config.release)
        if config.release_public_key:
            from hai_tools.release import verify_release

            verified = verify_release(folder, Path(config.release_public_key))
            explicit |= {"radiology.model"} if config.radiology and config.radiology.model else set()
            second = sorted(
                explicit
                & {"reasoner", "embedder", "tflite.embedder_dir", "tflite.reasoner_dir", "radiology.model"}
            )
            if second:
                raise ConfigError(
                    f"release {verified.name} decides the models served; remove {', '.join(second)} from "
                    "the server config (no second path to another model)"
                )
            if config.vllm.served_model not in (None, verified.name):
                raise ConfigError(
                    f"vllm.served_model is {config.vllm.served_model!r} but the release is {verified.name!r}: "
                    "serve the release under its id"
                )
            path = verified.model_path
            self.models = {
                "reasoner": str(path("reasoner")) if path("reasoner") else None,
                "radiology": str(path("radiology")) if path("radiology") else None,
                "embedder": str(path("embedder")) if path("embedder") else None,
                "guard": str(path("guard")) if path("guard") else None,
                "vllm_model": verified.name,
                "edge_embedder": str(path("tflite_embedder")) if path("tflite_embedder") else None,
                "edge_reasoner": str(path("tflite_causal_lm")) if path("tflite_causal_lm") else None,
            }
            name, manifest_hash, served = verified.name, verified.manifest_hash, verified.served_hashes()
        else:
            manifest = verify_artifact(folder)
            if manifest.kind == "release":
                raise ConfigError(
                    "a signed release needs release_public_key (the trusted ed25519 public key)"
                )
            if (
                "reasoner" in explicit
                and config.reasoner
                and Path(config.reasoner).resolve() != folder.resolve()
            ):
                raise ConfigError(
                    f"reasoner {config.reasoner} is not the release {folder}: the server runs the model "
                    "whose card it shows (drop reasoner: or point it at the release)"
                )
            self.models["reasoner"] = str(folder)
            name, manifest_hash, served = manifest.name, manifest.content_hash, {manifest.content_hash}
        card = folder / "README.md"
        return {
            "manifest": (folder / "manifest.json").read_text(),
            "card": card.read_text() if card.exists() else f"# {name}\n\nNo model card in {folder.name}.",
            "name": name,
            "hash": manifest_hash,
            "served": served,
        }

    async def start(self) -> None:
        """Load the backends in the background: the server answers `initialize` and `tools/list` at once, `/ready`
        says `loading` until every backend is loaded, and a call that arrives earlier waits for its model within
        its deadline (the local backend loads under the lock its calls take)."""
        self.loading = asyncio.get_running_loop().create_task(self.load())
        self.loading.add_done_callback(_log_failed_load)

    async def load(self) -> None:
        """Load every backend now: local models into memory, vLLM's /v1/models checked (then re-checked)."""
        from skills.backends.base import BackendUnavailable
        from skills.backends.local import LocalBackend
        from skills.backends.vllm import VLLMBackend

        if self.radiology is not None:
            await asyncio.to_thread(self.radiology.load)
        for backend in self.backends:
            if isinstance(backend, LocalBackend):
                await asyncio.to_thread(backend.load)
            elif isinstance(backend, VLLMBackend) and (
                backend.supports("generate") or backend.supports("embed")
            ):
                try:
                    await backend.check_ready()
                except BackendUnavailable as exc:
                    log.warning("%s; unavailable until a re-check finds it (see /ready)", exc)
                backend.watch()

    async def ready(self) -> dict[str, Any]:
        loading = self.loading is not None and not self.loading.done()
        if (
            self.loading is not None
            and self.loading.done()
            and not self.loading.cancelled()
            and self.loading.exception() is not None
        ):
            failed = self.loading.exception()
            return {"ready": False, "loading": False, "error": f"{type(failed).__name__}: {failed}"}
        status = {b.name: (not loading) and await b.health() for b in self.backends}
        capable = {
            cap: any(status[b.name] for b in self.router.candidates(cap)) for cap in ("embed", "generate")
        }
        unavailable = {  # a vLLM server that does not list its configured model, at the last check
            b.name: {cap: why for cap, why in getattr(b, "unavailable", {}).items() if why}
            for b in self.backends
        }
        return {
            "ready": all(capable.values()) and not loading,
            "loading": loading,
            "backends": status,
            "capabilities": capable,
            "unavailable": {name: why for name, why in unavailable.items() if why},
            **({"radiology": self.radiology.loaded} if self.radiology is not None else {}),
            "breakers": {n: b.state for n, b in self.router.breakers.items()},
            "queues": dict(self.router.pending),
        }

    async def close(self) -> None:
        if self.loading is not None and not self.loading.done():
            self.loading.cancel()
        for backend in self.backends:
            await backend.close()
        self.tracing.shutdown()


def build_server(skills: Skills, transport: str = "stdio") -> Any:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
    from mcp_types import ToolAnnotations

    from hai_tools.callers import Caller, current_caller
    from hai_tools.errors import HaiError
    from skills.boundary import ReviewBoundary

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await skills.start()
        try:
            yield
        finally:
            await skills.close()

    class TypedErrors(MCPServer):
        """Tool failures reach the caller as `Kind: message` (InvalidInput, Overloaded, ...), one format for the
        SDK's argument validation and ours: the SDK's own text prefixes `Error executing tool <name>` and, for
        arguments, repeats the rejected values (the caller's data) in pydantic's full report."""

        async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
            try:
                return await super().call_tool(name, arguments, context)
            except ToolError as exc:
                cause = exc.__cause__
                if isinstance(exc, UnexpectedToolError):
                    raise
                if isinstance(cause, ValidationError):
                    first = cause.errors()[0]
                    where = ".".join(map(str, first["loc"])) or "arguments"
                    raise ToolError(f"InvalidInput: {where}: {first['msg']}") from cause
                if isinstance(cause, ToolError):
                    raise ToolError(str(cause)) from cause
                raise

    server = TypedErrors(
        name="hai-tools",
        instructions="Clinical decision support tools. Every reasoner output requires clinician review; "
        "callers with the pipeline role receive model output only through submit_for_review and "
        "get_reviewed_result, after a clinician approved or edited it.",
        lifespan=lifespan,
        middleware=[ReviewBoundary(skills.resolver, transport)],
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
        question: Question,
        ctx: Context,
        context: ContextPassages | None = None,
        max_new_tokens: MaxNewTokens = DEFAULT_MAX_NEW_TOKENS,
        adapter: AdapterName = None,
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
        case_id: CaseId, age_months: AgeMonths, observations: Observations, ctx: Context
    ) -> ScreeningResult:
        request = await guarded(
            _validated(ScreeningRequest, case_id=case_id, age_months=age_months, observations=observations)
        )
        await ctx.report_progress(0, 1, "screening")
        result = await guarded(skills.reasoner.screen(request))
        await ctx.report_progress(1, 1, "done")
        return result  # type: ignore[no-any-return]

    if skills.radiology is not None:
        radiology = skills.radiology

        @server.tool(
            name="read_radiograph",
            title="Read a pediatric radiograph (clinician review required)",
            annotations=read_only,
            description="One image (base64 PNG, JPEG or DICOM; DICOM is de-identified first) for a task: "
            "bone_age (months, with an interval), rop or fracture (P(yes), the threshold, the finding). "
            "Every result requires clinician review.",
        )
        async def read_radiograph(
            task: RadiologyTask, image_base64: ImageBase64, media_type: ImageMediaType | None = None
        ) -> RadiographResult:
            request = await guarded(
                _validated(RadiographRequest, task=task, image_base64=image_base64, media_type=media_type)
            )
            return await guarded(radiology.read(request))  # type: ignore[no-any-return]

    def caller() -> Caller:
        served = current_caller()
        if served is None:  # the boundary sets it for every request; refuse rather than guess
            raise ToolError("Unauthorized: no caller")
        return served

    @server.tool(
        name="submit_for_review",
        title="Submit a screening case for clinician review",
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False
        ),
        description="Run a case {case_id, age_months, observations[, question]} through the model and queue "
        "its proposal for a clinician. Returns a review handle, never model text; poll get_reviewed_result.",
    )
    async def submit_for_review(
        case_id: CaseId,
        age_months: AgeMonths,
        observations: Observations,
        question: Annotated[str | None, Field(min_length=1, max_length=1000)] = None,
    ) -> ReviewHandle:
        case = {"case_id": case_id, "age_months": age_months, "observations": observations}
        return await guarded(  # type: ignore[no-any-return]
            skills.review.submit(case | ({"question": question} if question else {}), caller())
        )

    @server.tool(
        name="get_reviewed_result",
        title="Result of a clinician review",
        annotations=read_only,
        description="pending, rejected (nothing released), or released with the text a clinician approved or "
        "edited and the signed release statement.",
    )
    async def get_reviewed_result(review_id: ReviewId) -> ReviewedResult:
        return await guarded(asyncio.to_thread(skills.review.result, review_id, caller()))  # type: ignore[no-any-return]

    @server.resource(
        "hai://review/public-key",
        name="review-public-key",
        mime_type="application/x-pem-file",
        description="ed25519 public key of the review service: verifies release statements",
    )
    def review_public_key() -> str:
        from cryptography.hazmat.primitives import serialization

        return (
            skills.review.service.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_http_app(skills: Skills, host: str = "127.0.0.1") -> Any:
    """Streamable HTTP at /mcp and the REST routes, behind the callers' bearer tokens (skills/boundary.py):
    /health open; POST /infer_text (REST screening) for clinician and admin callers; POST /review and
    GET /review/{id} for every caller."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from hai_tools.errors import HaiError
    from hai_tools.workflow.graph import CaseInvalid
    from hai_tools.workflow.service import CaseNotFound
    from skills.backends.base import RequestRejected
    from skills.boundary import BodyLimit, CallerAuth
    from skills.failover import Overloaded
    from skills.images import ImageRejected

    server = build_server(skills, transport="http")

    def error(exc: Exception) -> JSONResponse:
        if isinstance(exc, ValidationError):
            return JSONResponse({"error": "invalid_input", "detail": exc.errors()[0]["msg"]}, status_code=422)
        if isinstance(exc, ValueError):
            return JSONResponse({"error": "invalid_input", "detail": "malformed JSON"}, status_code=422)
        if isinstance(exc, CaseInvalid):
            return JSONResponse({"error": "invalid_input", "detail": str(exc)}, status_code=422)
        if isinstance(exc, CaseNotFound):
            return JSONResponse({"error": "not_found", "detail": str(exc)}, status_code=404)
        if isinstance(exc, RequestRejected):
            return JSONResponse({"error": "request_rejected", "detail": str(exc)}, status_code=422)
        if isinstance(exc, Overloaded):
            return JSONResponse(
                {"error": "overloaded", "detail": str(exc)},
                status_code=429,
                headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
            )
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=503)

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @server.custom_route("/ready", methods=["GET"])
    async def ready(_: Request) -> JSONResponse:
        state = await skills.ready()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @server.custom_route("/metrics", methods=["GET"])
    async def metrics(_: Request) -> Response:
        """Prometheus exposition (admin callers: a route not listed in skills/boundary.py is admin-only)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(skills.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @server.custom_route("/infer_text", methods=["POST"])
    async def infer_text(request: Request) -> JSONResponse:
        try:
            payload = ScreeningRequest.model_validate(json.loads(await request.body()))
            result = await skills.reasoner.screen(payload)
        except (ValidationError, ValueError, HaiError) as exc:
            return error(exc)
        return JSONResponse(result.model_dump())

    @server.custom_route("/infer_image", methods=["POST"])
    async def infer_image(request: Request) -> JSONResponse:
        """REST radiology: {task, image_base64, media_type?} -> the reading (404 when no model is configured)."""
        if skills.radiology is None:
            return JSONResponse({"error": "not_found", "detail": "no radiology model is configured"}, 404)
        try:
            payload = RadiographRequest.model_validate(json.loads(await request.body()))
            result = await skills.radiology.read(payload)
        except ImageRejected as exc:
            return JSONResponse({"error": "image_rejected", "detail": str(exc)}, status_code=422)
        except (ValidationError, ValueError, HaiError) as exc:
            return error(exc)
        return JSONResponse(result.model_dump())

    @server.custom_route("/review", methods=["POST"])
    async def review_submit(request: Request) -> JSONResponse:
        try:
            case = json.loads(await request.body())
            handle = await skills.review.submit(case, request.state.hai_caller)
        except (ValueError, HaiError) as exc:
            return error(exc)
        return JSONResponse(handle.model_dump(), status_code=202)

    @server.custom_route("/review/{review_id}", methods=["GET"])
    async def review_result(request: Request) -> JSONResponse:
        try:
            review_id = request.path_params["review_id"]
            result = await asyncio.to_thread(skills.review.result, review_id, request.state.hai_caller)
        except HaiError as exc:
            return error(exc)
        return JSONResponse(result.model_dump())

    http = skills.config.http
    body_limit = http.max_body_bytes
    if skills.radiology is not None:  # an image's base64 and its JSON envelope must fit
        body_limit = max(body_limit, skills.radiology.settings.max_image_bytes * 4 // 3 + 65536)
    security = None  # on loopback the SDK keeps its own DNS-rebinding protection (loopback hosts only)
    if http.allowed_hosts or host not in LOOPBACK:
        if not http.allowed_hosts:
            raise HaiError(
                f"--host {host} is not loopback: list the Host headers clients use in http.allowed_hosts "
                "(the SDK's DNS-rebinding protection stays on)"
            )
        from mcp.server.transport_security import TransportSecuritySettings

        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=http.allowed_hosts,
            allowed_origins=http.allowed_origins,
        )
    app: Any = server.streamable_http_app(
        streamable_http_path="/mcp",
        host=host,
        transport_security=security,
        max_request_body_size=body_limit,
        json_response=http.json_response,
        stateless_http=http.stateless,
    )
    app = CallerAuth(app, skills.resolver)
    if http.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=http.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version"],
        )
    return BodyLimit(app, body_limit)
