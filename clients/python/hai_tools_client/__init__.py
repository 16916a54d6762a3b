"""Client-only install for the hai-tools MCP server (streamable HTTP): typed calls, typed errors."""

from hai_tools_client.client import AccessDenied, ClientError, HaiClient, ReviewFlagMissing, ToolFailed

__all__ = ["AccessDenied", "ClientError", "HaiClient", "ReviewFlagMissing", "ToolFailed"]
