"""Tools from MCP servers, through the official ``mcp`` SDK (https://modelcontextprotocol.io).

An agent's file names its servers as ``[[mcp]]`` tables:

.. code-block:: toml

    [[mcp]]
    name = "menu"                                  # how errors and the Tools page name it
    command = ["python", "menu_server.py"]         # stdio: the server's command line (run in the file's folder)
    # url = "http://127.0.0.1:9000/mcp"            # or streamable HTTP
    # headers = { Authorization = "Bearer ${MENU_KEY}" }   # HTTP only; ${NAME} from the environment
    allow = ["price_of", "list_pizzas"]            # the tools the agent may call (required)
    timeout_s = 10                                 # start, list and each call (default FORGE_MCP_TIMEOUT_S)
    confirm = ["place_order"]                      # asked before they run
    [mcp.examples]                                 # example requests the offline brain matches
    price_of = ["how much is a margherita", "what does a large pepperoni cost"]

The servers' tools are listed once per process (:func:`tools_for`, cached) and each becomes a
:class:`Tool` of kind "mcp": its input schema is the JSON Schema an LLM gets, arguments are
checked against it (jsonschema) before the call, and its parameters get the same slots as a
declared tool's (:func:`voiceforge.tools.declared.infer_slot`). Each call opens its own
session (a stdio server is started for it: about half a second on this machine, covered by the
tool's filler), so no session outlives the event loop that opened it. A tool outside ``allow``
is never offered, and a server's error comes back as the :class:`ToolError` the agent speaks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiceforge.tools.declaration import DeclarationError
from voiceforge.tools.declared import setting_value, tool_from_schema
from voiceforge.tools.registry import Tool, ToolContext, ToolError

log = logging.getLogger(__name__)
MCP_KEYS = {"name", "command", "url", "headers", "env", "allow", "timeout_s", "confirm", "examples"}


@dataclass(frozen=True)
class McpServer:
    """One ``[[mcp]]`` table (see the module docstring).

    Attributes:
        name: its label; command: the stdio command line, or None; url: the streamable HTTP
        URL, or None; allow: the tool names the agent may call; timeout_s: per start, list and
        call (None: ``FORGE_MCP_TIMEOUT_S``); confirm: tools asked about before they run;
        examples: example requests per tool; headers / env: values with ``${NAME}``;
        folder: where a stdio command runs (the agent file's folder).
    """

    name: str
    command: tuple[str, ...] | None = None
    url: str | None = None
    allow: tuple[str, ...] = ()
    timeout_s: float | None = None
    confirm: tuple[str, ...] = ()
    examples: tuple[tuple[str, tuple[str, ...]], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    folder: str = ""

    def timeout(self, settings: Any) -> float:
        """Seconds allowed per start, list and call."""
        return float(self.timeout_s or getattr(settings, "forge_mcp_timeout_s", 10.0))

    def client(self, settings: Any) -> Any:
        """An ``mcp.Client`` for this server (not yet connected)."""
        from mcp import Client, StdioServerParameters

        timeout = self.timeout(settings)
        if self.command:
            import os

            env = {**os.environ, **{k: _expand(v, settings) for k, v in self.env}}
            params = StdioServerParameters(command=self.command[0], args=list(self.command[1:]), env=env,
                                           cwd=self.folder or None)
            return Client(params, read_timeout_seconds=timeout)
        headers = {k: _expand(v, settings) for k, v in self.headers}
        if headers:
            import httpx2  # the HTTP client the SDK's transport takes
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=headers, timeout=timeout)
            return Client(streamable_http_client(self.url, http_client=http), read_timeout_seconds=timeout)
        return Client(self.url, read_timeout_seconds=timeout)


def _expand(value: str, settings: Any) -> str:
    def piece(match: re.Match[str]) -> str:
        found = setting_value(match.group(1), settings)
        if found is None:
            raise ToolError(f"the setting {match.group(1)} is not set")
        return found

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", piece, value)


def parse_servers(tables: Any, source: str, folder: Path | None = None) -> list[McpServer]:
    """The ``[[mcp]]`` tables of an agent's file.

    Raises:
        DeclarationError: not a list of tables, an unknown key, neither or both of ``command``
            and ``url``, no ``allow`` list, or a key of the wrong type; the message names the
            file and the server.
    """
    if not isinstance(tables, list):
        raise DeclarationError(f"{source}: MCP servers are [[mcp]] tables")
    out = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise DeclarationError(f"{source}: every [[mcp]] must be a table")
        name = str(table.get("name") or f"mcp{index + 1}")
        where = f"{source}: MCP server {name!r}"
        if unknown := set(table) - MCP_KEYS:
            raise DeclarationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        command, url = table.get("command"), table.get("url")
        if (command is None) == (url is None):
            raise DeclarationError(f"{where}: give either command (stdio) or url (streamable HTTP)")
        if command is not None and (not isinstance(command, list) or not command
                                    or not all(isinstance(c, str) for c in command)):
            raise DeclarationError(f"{where}: command is a list of strings: the program and its arguments")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise DeclarationError(f"{where}: url must be an http(s) URL")
        allow = table.get("allow")
        if not isinstance(allow, list) or not allow or not all(isinstance(a, str) for a in allow):
            raise DeclarationError(f"{where}: allow lists the tools the agent may call (at least one)")
        for key in ("headers", "env", "examples"):
            if not isinstance(table.get(key, {}), dict):
                raise DeclarationError(f"{where}: {key} must be a table")
        examples = table.get("examples", {})
        if not all(isinstance(v, list) and all(isinstance(e, str) for e in v) for v in examples.values()):
            raise DeclarationError(f"{where}: examples map a tool's name to a list of requests")
        timeout = table.get("timeout_s")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                    or not 0 < timeout <= 120):
            raise DeclarationError(f"{where}: timeout_s must be a number of seconds up to 120")
        confirm = table.get("confirm", [])
        if not isinstance(confirm, list) or not all(isinstance(c, str) for c in confirm):
            raise DeclarationError(f"{where}: confirm lists tool names")
        out.append(McpServer(
            name=name, command=tuple(command) if command else None, url=url, allow=tuple(allow),
            timeout_s=float(timeout) if timeout else None, confirm=tuple(confirm),
            examples=tuple((k, tuple(v)) for k, v in examples.items()),
            headers=tuple((str(k), str(v)) for k, v in table.get("headers", {}).items()),
            env=tuple((str(k), str(v)) for k, v in table.get("env", {}).items()),
            folder=str(folder or ""),
        ))
    return out


def _content(result: Any) -> Any:
    """A ``CallToolResult``'s value: its structured content, else its text (parsed when it is JSON)."""
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return structured
    texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
    text = "\n".join(texts)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _runner(server: McpServer, name: str, schema: dict[str, Any]):  # noqa: ANN202
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)

    async def run(ctx: ToolContext, **args: Any) -> Any:
        problems = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
        if problems:
            raise ToolError(f"{name}: {problems[0].message}")
        timeout = server.timeout(ctx.settings)
        try:
            async with asyncio.timeout(timeout):
                async with server.client(ctx.settings) as client:
                    result = await client.call_tool(name, args)
        except TimeoutError:
            raise ToolError(f"the {server.name} server did not answer within {timeout:g} s") from None
        except ToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds; the agent speaks one
            log.warning("MCP server %s: calling %s failed: %s", server.name, name, exc)
            raise ToolError(f"the {server.name} server failed ({type(exc).__name__})") from None
        if result.is_error:
            raise ToolError(f"{name}: {str(_content(result))[:300]}")
        return _content(result)

    return run


def _tool(server: McpServer, listed: Any) -> Tool:
    schema = dict(listed.input_schema or {"type": "object", "properties": {}})
    tool = tool_from_schema(listed.name, listed.description or listed.name, schema, None,
                            dict(server.examples).get(listed.name, ()), listed.name in server.confirm,
                            source=f"MCP server {server.name}")
    tool.func = _runner(server, listed.name, tool.parameters)
    return tool


async def list_tools(server: McpServer, settings: Any, builtin: Sequence[str] = ()) -> list[Tool]:
    """The server's allowed tools, as tools (a name a built-in has is left out, with a warning).

    Raises:
        ToolError: the server did not start or answer within its timeout, or failed.
    """
    timeout = server.timeout(settings)
    try:
        async with asyncio.timeout(timeout):
            async with server.client(settings) as client:
                listed = (await client.list_tools()).tools
    except TimeoutError:
        raise ToolError(f"the MCP server {server.name} did not list its tools within {timeout:g} s") from None
    except ToolError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ToolError(f"the MCP server {server.name} failed to start or list its tools ({exc})") from None
    out = []
    for item in listed:
        if item.name not in server.allow:
            continue
        if item.name in builtin:
            log.warning("MCP server %s: tool %s has a built-in tool's name and is left out", server.name, item.name)
            continue
        out.append(_tool(server, item))
    missing = set(server.allow) - {t.name for t in out} - set(builtin)
    if missing:
        log.warning("MCP server %s lists no tool %s", server.name, ", ".join(sorted(missing)))
    return out


@dataclass
class _Listing:
    tools: list[Tool] = field(default_factory=list)
    error: str | None = None


_cache: dict[McpServer, _Listing] = {}
_cache_lock = threading.Lock()


def tools_for(servers: Sequence[McpServer], settings: Any, builtin: Sequence[str] = ()) -> list[Tool]:
    """The allowed tools of these servers, listed once per process and kept.

    The first listing of a server blocks the calling thread (it runs in its own thread with
    its own event loop, so it may be called from inside one); a server that fails is logged
    and offers no tools until :func:`forget` (the Tools page's "List again").
    """
    out: list[Tool] = []
    for server in servers:
        with _cache_lock:
            listing = _cache.get(server)
        if listing is None:
            listing = _Listing()

            def work(server: McpServer = server, listing: _Listing = listing) -> None:
                try:
                    listing.tools = asyncio.run(list_tools(server, settings, builtin))
                except ToolError as exc:
                    listing.error = str(exc)
                    log.warning("%s", exc)

            thread = threading.Thread(target=work, name=f"mcp-list-{server.name}", daemon=True)
            thread.start()
            thread.join()
            with _cache_lock:
                _cache[server] = listing
        out += listing.tools
    return out


def status(servers: Sequence[McpServer]) -> list[dict[str, Any]]:
    """Per server: name, transport, allowed tools, the tools listed and the listing's error (None if not listed yet)."""
    out = []
    for server in servers:
        with _cache_lock:
            listing = _cache.get(server)
        out.append({"server": server.name, "transport": "stdio" if server.command else "streamable HTTP",
                    "allow": ", ".join(server.allow),
                    "listed": ", ".join(t.name for t in listing.tools) if listing else "not yet",
                    "error": listing.error if listing else None})
    return out


def forget(servers: Sequence[McpServer] | None = None) -> None:
    """Drop the cached listings of these servers (all when None): the next use lists them again."""
    with _cache_lock:
        for server in list(_cache) if servers is None else servers:
            _cache.pop(server, None)
