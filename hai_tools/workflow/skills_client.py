"""The workflow reaches the skills only through MCP: the SDK's own `mcp.Client` over stdio (spawning
`mcp_server.py`) or streamable HTTP (a running server, bearer token from the environment). The connection
opens on the first call, so a process that only records a clinician's decision never starts a model."""

from __future__ import annotations

import contextlib
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from hai_tools.errors import ConfigError, HaiError

ROOT = Path(__file__).resolve().parents[2]


class SkillCallError(HaiError):
    """An MCP tool call failed or returned an error result."""


class Skills(Protocol):
    async def open(self) -> None: ...

    async def embed(self, texts: list[str]) -> dict[str, Any]: ...

    async def reason(self, question: str, context: list[str], max_new_tokens: int) -> dict[str, Any]: ...

    async def screen(self, case_id: str, age_months: int, observations: str) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class McpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["stdio", "http"] = "stdio"
    server_config: str = Field(
        "configs/mcp_server.yaml", description="stdio: the mcp_server.py config file it is started with"
    )
    url: str | None = Field(
        None, description="http: the server's MCP endpoint, e.g. http://127.0.0.1:8765/mcp"
    )
    token_env: str = Field("HAI_MCP_TOKEN", description="http: environment variable holding the bearer token")
    timeout_s: float = Field(600.0, gt=0)


class McpSkills:
    """EmbedSkill and ReasonerSkill as MCP tool calls on one lazily opened client session."""

    def __init__(self, config: McpConfig, env: dict[str, str] | None = None) -> None:
        self.config = config
        self._env = env
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def _session(self) -> Any:
        if self._client is not None:
            return self._client
        from mcp import Client, StdioServerParameters

        stack = AsyncExitStack()
        if self.config.transport == "stdio":
            server_config = Path(self.config.server_config)
            if not server_config.is_file():
                raise ConfigError(f"MCP server config {server_config} does not exist")
            target: Any = StdioServerParameters(
                command=sys.executable,
                args=[str(ROOT / "mcp_server.py"), "--config", str(server_config.resolve())],
                env=self._env or dict(os.environ),
                cwd=str(ROOT),
            )
        else:
            if not self.config.url:
                raise ConfigError("mcp.transport http needs mcp.url")
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            token = os.environ.get(self.config.token_env)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(self.config.timeout_s))
            )
            target = streamable_http_client(self.config.url, http_client=http)
        try:
            self._client = await stack.enter_async_context(
                Client(target, read_timeout_seconds=self.config.timeout_s)
            )
        except Exception as exc:  # transport errors arrive as exception groups from the SDK's task groups
            with contextlib.suppress(Exception):
                await stack.aclose()
            where = self.config.url if self.config.transport == "http" else "mcp_server.py over stdio"
            raise SkillCallError(f"cannot open an MCP session with {where}: {_first_cause(exc)}") from None
        self._stack = stack
        return self._client

    async def open(self) -> None:
        """Open the MCP session now (in the calling task, not inside a graph node)."""
        await self._session()

    async def _call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        client = await self._session()
        result = await client.call_tool(tool, arguments)
        if result.is_error or not result.structured_content:
            text = " ".join(getattr(c, "text", "") for c in result.content).strip()
            raise SkillCallError(f"MCP tool {tool} failed: {text[:300] or 'no structured result'}")
        return dict(result.structured_content)

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        return await self._call("embed", {"texts": texts})

    async def reason(self, question: str, context: list[str], max_new_tokens: int) -> dict[str, Any]:
        return await self._call(
            "reason", {"question": question, "context": context, "max_new_tokens": max_new_tokens}
        )

    async def screen(self, case_id: str, age_months: int, observations: str) -> dict[str, Any]:
        return await self._call(
            "screen", {"case_id": case_id, "age_months": age_months, "observations": observations}
        )

    async def aclose(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack, self._client = None, None


def _first_cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]
