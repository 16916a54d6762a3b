"""Where results leave the server: each request is served as a caller (id and role), and the caller's role
decides what may leave, for every MCP method and every HTTP route, deny by default.

- `clinician` and `admin` callers receive proposals (flagged for clinician review, with the disclaimer).
- A `pipeline` caller never receives model text: it may list tools, read resources, call the tools in
  `PIPELINE_TOOLS` (embeddings, `submit_for_review`, `get_reviewed_result`) and the routes in `ROUTES` open to
  it. Any other tool, one added later included, any other MCP method (tasks, completions, ...) and any route
  not listed are refused here, not in each tool.

The MCP check is SDK middleware around every inbound message (`ReviewBoundary`); the HTTP check is the ASGI
layer in front of the whole app (`CallerAuth`), which also answers 401 to an unknown or revoked token.
"""

from __future__ import annotations

import hmac
from typing import Any

from hai_tools.callers import ROLES, Caller, CallerRegistry, acting_as, token_digest, token_id

PIPELINE_TOOLS = frozenset({"embed", "submit_for_review", "get_reviewed_result"})
# MCP methods a pipeline caller may use besides tools/call of PIPELINE_TOOLS; everything else is refused.
PIPELINE_METHODS = frozenset(
    {
        "initialize",  # the handshake before protocol 2026-07-28 ...
        "server/discover",  # ... and from it on
        "ping",
        "logging/setLevel",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
EVERY_ROLE = frozenset(ROLES)
REVIEWERS = frozenset({"clinician", "admin"})
# HTTP routes: (method, path or path prefix ending in '/') -> roles allowed. /health is open; a route that is
# not listed is for admin callers only.
ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/ready"): EVERY_ROLE,
    ("POST", "/infer_text"): REVIEWERS,
    ("POST", "/infer_image"): REVIEWERS,
    ("POST", "/review"): EVERY_ROLE,
    ("GET", "/review/"): EVERY_ROLE,
    ("*", "/mcp"): EVERY_ROLE,
    ("*", "/mcp/"): EVERY_ROLE,
}
ROUTE_REVIEW_REQUIRED = (
    "caller {caller} (pipeline) receives model output only after clinician review: "
    "POST /review, then GET /review/{{review_id}}"
)
OPEN_ROUTES = frozenset({("GET", "/health")})
# server-defined JSON-RPC error codes of the boundary
UNAUTHORIZED_CODE, FORBIDDEN_CODE, REVIEW_REQUIRED_CODE = -32001, -32003, -32004
REVIEW_REQUIRED = (
    "ReviewRequired: caller {caller} ({role}) receives model output only after clinician review: "
    "call submit_for_review, then get_reviewed_result"
)


def may_call_tool(role: str, tool: str) -> bool:
    return role in REVIEWERS or tool in PIPELINE_TOOLS


def may_use_method(role: str, method: str) -> bool:
    return role in REVIEWERS or method in PIPELINE_METHODS or method == "tools/call"


def route_roles(method: str, path: str) -> frozenset[str]:
    for (verb, route), roles in ROUTES.items():
        if verb in ("*", method) and (path == route or (route.endswith("/") and path.startswith(route))):
            return roles
    return frozenset({"admin"})


class CallerResolver:
    """Token -> caller: the callers registry first, then the configured single token (a token without a role
    is a `pipeline` caller). stdio requests are served as the configured stdio caller."""

    def __init__(self, registry: CallerRegistry, legacy_token: str | None, stdio_caller: Caller) -> None:
        self.registry = registry
        self.legacy_token = legacy_token
        self.stdio_caller = stdio_caller

    def from_token(self, token: str | None) -> Caller | None:
        caller = self.registry.resolve(token)
        legacy = self.legacy_token
        if caller is None and token and legacy and hmac.compare_digest(token.encode(), legacy.encode()):
            caller = Caller(id="token", role="pipeline", token_id=token_id(token_digest(token)))
        return caller

    def from_headers(self, headers: Any) -> Caller | None:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        return self.from_token(token) if scheme.lower() == "bearer" else None


class ReviewBoundary:
    """MCP server middleware: serve each message as its caller and let out only what the role may receive."""

    def __init__(self, resolver: CallerResolver, transport: str) -> None:
        self.resolver = resolver
        self.transport = transport

    def caller(self, ctx: Any) -> Caller | None:
        if self.transport == "stdio":
            return self.resolver.stdio_caller
        request = getattr(ctx, "request", None)
        if request is None:
            return None
        # CallerAuth, in front of every HTTP route, resolved this request's token already: one registry read
        known = request.scope.get("state", {}).get("hai_caller")
        return known if isinstance(known, Caller) else self.resolver.from_headers(request.headers)

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        from mcp.shared.exceptions import MCPError

        if ctx.request_id is None:  # a notification carries no result
            return await call_next(ctx)
        caller = self.caller(ctx)
        if caller is None:
            raise MCPError(code=UNAUTHORIZED_CODE, message="Unauthorized: unknown or revoked caller")
        if not may_use_method(caller.role, ctx.method):
            raise MCPError(
                code=FORBIDDEN_CODE, message=f"Forbidden: {ctx.method} is not open to {caller.role} callers"
            )
        if ctx.method == "tools/call":
            tool = str((ctx.params or {}).get("name", ""))
            if not may_call_tool(caller.role, tool):  # a JSON-RPC error: nothing of the tool runs or leaves
                raise MCPError(
                    code=REVIEW_REQUIRED_CODE,
                    message=REVIEW_REQUIRED.format(caller=caller.id, role=caller.role),
                )
        with acting_as(caller):
            result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            tools = [t for t in result.get("tools", []) if may_call_tool(caller.role, str(t.get("name")))]
            result = {**result, "tools": tools}
        return result


class CallerAuth:
    """ASGI layer in front of the HTTP app: 401 without a valid token (except /health), 403 where the route is
    not open to the caller's role; the caller is kept in `scope['state']['hai_caller']` for the routes."""

    def __init__(self, inner: Any, resolver: CallerResolver) -> None:
        self.inner = inner
        self.resolver = resolver

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        if scope["type"] == "lifespan" or (
            scope["type"] == "http" and (scope["method"], scope["path"]) in OPEN_ROUTES
        ):
            await self.inner(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket (or other) route is served: refuse before the app sees it
            await send({"type": "websocket.close", "code": 1008})
            return
        caller = self.resolver.from_headers(Request(scope).headers)
        if caller is None:
            response = JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        elif caller.role not in route_roles(scope["method"], scope["path"]):
            if caller.role == "pipeline":
                body = {"error": "review_required", "detail": ROUTE_REVIEW_REQUIRED.format(caller=caller.id)}
            else:
                body = {
                    "error": "forbidden",
                    "detail": f"{scope['path']} is not open to {caller.role} callers",
                }
            response = JSONResponse(body, status_code=403)
        else:
            scope.setdefault("state", {})["hai_caller"] = caller
            with acting_as(caller):
                await self.inner(scope, receive, send)
            return
        await response(scope, receive, send)


class BodyLimit:
    """ASGI layer: a request body over `max_bytes` is refused with 413 before a route reads it (declared by
    Content-Length, or counted as it streams in)."""

    def __init__(self, inner: Any, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        too_large = JSONResponse(
            {"error": "payload_too_large", "detail": f"request bodies are limited to {self.max_bytes} bytes"},
            status_code=413,
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.inner(scope, counted, watched)
        except _TooLarge:
            if not started:
                await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass
