"""`HaiClient`: one MCP session over streamable HTTP with a bearer token. Each call returns the tool's structured
result (a dict, as the tool's output schema describes it); failures are raised typed, never returned as text."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

# Results of these tools are model output: the server marks each for clinician review.
REVIEWED_TOOLS = {"reason": "requires_clinician_review", "screen": "requires_clinician_review"}


class ClientError(Exception):
    """Base of the client's errors."""


class AccessDenied(ClientError):
    """The server refused the caller: unknown token, or a role that may not use this tool or method."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ToolFailed(ClientError):
    """The tool ran and refused or failed; `kind` is the server's error type (InvalidInput, Overloaded, ...)."""

    def __init__(self, tool: str, kind: str, message: str) -> None:
        super().__init__(f"{tool}: {kind}: {message}")
        self.tool, self.kind, self.detail = tool, kind, message


class ReviewFlagMissing(ClientError):
    """A model result came back without the clinician-review flag: never use it."""


class HaiClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 180.0) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self._stack: AsyncExitStack | None = None
        self.session: ClientSession | None = None

    async def __aenter__(self) -> HaiClient:
        stack = AsyncExitStack()
        try:
            read, write, _ = await stack.enter_async_context(
                streamablehttp_client(self.url, headers=self.headers, timeout=self.timeout_s)
            )
            self.session = await stack.enter_async_context(ClientSession(read, write))
            await self.session.initialize()
        except BaseException as exc:
            failure: BaseException = exc
            try:  # the transport's task group reports the HTTP failure as it closes
                await stack.aclose()
            except BaseException as closing:
                failure = closing
            status = _status(exc) or _status(failure)
            if status in (401, 403):
                raise AccessDenied(status, "the server refused this token") from None
            raise failure from None
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack, self.session = None, None

    def _open(self) -> ClientSession:
        if self.session is None:
            raise ClientError("use the client as `async with HaiClient(...) as hai:`")
        return self.session

    async def tools(self) -> list[str]:
        """The tools this caller may use (the server lists no other)."""
        listed = await self._open().list_tools()
        return [tool.name for tool in listed.tools]

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        try:
            result = await self._open().call_tool(tool, arguments)
        except McpError as exc:
            raise AccessDenied(exc.error.code, exc.error.message) from None
        if result.isError:
            text = " ".join(getattr(part, "text", "") for part in result.content).strip()
            kind, _, message = text.partition(": ")
            raise ToolFailed(tool, kind if message else "Error", message or text)
        structured = result.structuredContent
        if not isinstance(structured, dict):
            raise ClientError(f"{tool} returned no structured result")
        flag = REVIEWED_TOOLS.get(tool)
        if flag is not None and structured.get(flag) is not True:
            raise ReviewFlagMissing(f"{tool} result without {flag}: not for use")
        return structured

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list((await self.call("embed", texts=texts))["vectors"])

    async def screen(self, case_id: str, age_months: int, observations: str) -> dict[str, Any]:
        return await self.call("screen", case_id=case_id, age_months=age_months, observations=observations)

    async def reason(self, question: str, context: list[str] | None = None) -> dict[str, Any]:
        return await self.call("reason", question=question, context=context or [])

    async def submit_for_review(
        self, case_id: str, age_months: int, observations: str, question: str | None = None
    ) -> dict[str, Any]:
        extra = {"question": question} if question else {}
        return await self.call(
            "submit_for_review", case_id=case_id, age_months=age_months, observations=observations, **extra
        )

    async def reviewed_result(self, review_id: str) -> dict[str, Any]:
        return await self.call("get_reviewed_result", review_id=review_id)


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind a failed connection, if any (the SDK may wrap it in an exception group)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    for inner in getattr(exc, "exceptions", ()):
        status = _status(inner)
        if status is not None:
            return status
    return None
