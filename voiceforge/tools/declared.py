r"""Tools an agent declares as data: an HTTP webhook, a SQL query over the mock tables, or canned results.

A ``[[tool]]`` table in an agent's file (or in a shared tools file) with a ``kind`` becomes a
tool that agent may call, with no Python. Every key of a built-in tool's declaration
(:mod:`voiceforge.tools.declaration`: ``examples``, ``confirm``, ``filler``, ``say``, ...) applies,
plus ``kind`` and its keys:

.. code-block:: toml

    [[tool]]
    name = "check_cake"
    description = "Check whether a cake flavour is available today"   # required: an LLM reads it
    examples = ["do you have chocolate cake", "is the lemon cake available today"]
    kind = "http"                      # or "sql", or "mock"
    method = "GET"                     # http: GET, POST, PUT, PATCH or DELETE
    url = "${BAKERY_API}/cakes/{flavour}"
    headers = { Authorization = "Bearer ${BAKERY_KEY}" }
    body = { flavour = "{flavour}" }   # http: a JSON body ("{param}" alone keeps the value's type)
    timeout_s = 3                      # http: default 5, at most 30
    result = { available = "data.available" }   # http: dotted paths into the JSON answer
    [tool.parameters.flavour]          # a JSON Schema property; required unless required = false
    type = "string"
    description = "the cake flavour, one word"
    examples = ["chocolate", "lemon"]  # values (enum, too): the offline brain hears them

    # kind = "sql":  query = "SELECT points FROM customers WHERE id = :customer_id"
    # kind = "mock": result = {...}, and/or [[tool.results]] tables of when = {...} and result = {...}

``${NAME}`` is read when the tool runs: from the environment, else from Forge's own settings
(``FORGE_SIDECAR_URL``; ``FORGE_API_KEY``, generated into the data folder on first use, as the
sidecar does); a name neither knows is an error when the file is
loaded. ``{param}`` in a URL is the argument, URL-encoded (a ``/`` too). An HTTP tool never
follows a redirect and never reaches a link-local address (169.254.0.0/16, fe80::/10: the cloud
metadata services) unless ``FORGE_HTTP_TOOLS_ALLOW_LINK_LOCAL`` is set; its answer is read up to
``FORGE_HTTP_TOOL_MAX_BYTES``. A SQL tool's query is one SELECT with ``:name`` parameters bound
by the driver, run through the same confined read-only connection as run_sql.

The offline brain fills a parameter without a ``slot`` from its type and schema
(:func:`infer_slot`): an enum or value examples are listened for, a number is read as digits
or words, a date-time as a day and time, a ``customer_id`` as who is calling, and the words
that stand where an example value stands in the tool's example requests are taken as its value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import re
import socket
from typing import Any
from urllib.parse import quote, urlsplit

from voiceforge.tools import slots
from voiceforge.tools.declaration import (
    DeclarationError,
    ParameterDeclaration,
    ToolDeclaration,
    declaration_from_table,
)
from voiceforge.tools.registry import Tool, ToolContext, ToolError

KINDS = {
    "http": {"method", "url", "headers", "body", "timeout_s", "result"},
    "sql": {"query"},
    "mock": {"result", "results"},
}
"""Each kind's own keys (besides ``kind``)."""
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_TIMEOUT_S = 30.0
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\{([A-Za-z_]\w*)\}")
_WORD = r"[\w'-]+"
_SQL_START = re.compile(r"^\s*(select|with)\b", re.I)


def setting_value(name: str, settings: Any) -> str | None:
    """``${NAME}``'s value: the environment's, else Forge's own setting of that name, else None."""
    if name in os.environ:
        return os.environ[name]
    if settings is None:
        return None
    if name == "FORGE_API_KEY":  # the sidecar's key, generated into the data folder on first use
        return settings.ensure_api_key()[0]
    value = getattr(settings, name.lower(), None) if name.lower() in type(settings).model_fields else None
    return None if value is None else str(value)


def _env_names(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_ENV.findall(value))
    if isinstance(value, dict):
        return set().union(*(_env_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_env_names(v) for v in value)) if value else set()
    return set()


def _fill(template: Any, args: dict[str, Any], settings: Any, encode: bool = False) -> Any:
    """``template`` with ``${NAME}`` and ``{param}`` filled (recursively in tables and lists).

    A string that is exactly ``"{param}"`` becomes the argument itself (its JSON type kept);
    ``encode`` URL-encodes arguments (every character but letters, digits and ``-._~``).
    """
    if isinstance(template, dict):
        return {k: _fill(v, args, settings, encode) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, args, settings, encode) for v in template]
    if not isinstance(template, str):
        return template
    whole = re.fullmatch(r"\{([A-Za-z_]\w*)\}", template)
    if whole and not encode:
        return args.get(whole.group(1))

    def piece(match: re.Match[str]) -> str:
        if match.group(1):
            value = setting_value(match.group(1), settings)
            if value is None:
                raise ToolError(f"the setting {match.group(1)} is not set")
            return value
        value = args.get(match.group(2))
        text = "" if value is None else str(value)
        return quote(text, safe="") if encode else text

    return _TEMPLATE.sub(piece, template)


def _dig(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` ("data.items.0.name") of a JSON value, or None."""
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _contexts(value_words: list[str], requests: tuple[str, ...], described: str = "") -> list[str]:
    r"""Patterns that find a value where an example value stands in the example requests.

    "is the lemon cake available today" with the value "lemon" gives ``the\s+([\w'-]+)\s+cake``.
    Words of the parameter's name and description that the example requests use ("the cake
    flavour" and "do you have chocolate cake": "cake") give a pattern for the word said just
    before them ("carrot cake"), so a parameter with no example values is heard too.
    """
    out: list[str] = []
    requests_text = " ".join(requests).lower()
    for word in dict.fromkeys(re.findall(r"[a-z]{3,}", described.lower())):
        if word not in slots.NOT_VALUES and re.search(rf"\b{word}(?:s|es)?\b", requests_text):
            out.append(rf"\b({_WORD})\s+{word}(?:s|es)?\b")
    for request in requests:
        for value in value_words:
            m = re.search(rf"(?:^|\b({_WORD})\s+){re.escape(value)}(?:\s+({_WORD})\b|$)", request, re.I)
            if not m or not (m.group(1) or m.group(2)):
                continue
            width = len(value.split())
            group = rf"({_WORD}(?:\s+{_WORD}){{0,{width}}}?)" if width > 1 else rf"({_WORD})"
            left = rf"\b{re.escape(m.group(1))}\s+" if m.group(1) else r"^\s*"
            right = rf"\s+{re.escape(m.group(2))}\b" if m.group(2) else r"\s*[.!?]?\s*$"
            pattern = left + group + right
            if pattern not in out:
                out.append(pattern)
    return out


def infer_slot(parameter: ParameterDeclaration, requests: tuple[str, ...]) -> ParameterDeclaration:
    """A parameter declared without a ``slot``, with the slot its JSON Schema implies.

    - ``customer_id``: the ``customer`` slot (who is calling);
    - ``format`` date-time or date, or a name that says so (``when``, ``date``, ``time``,
      ``..._at``): ``datetime``;
    - a name with ``phone`` in it: ``phone``;
    - integer or number: ``number``, after the parameter's own words, else anywhere;
    - string: ``value``, with its ``enum`` (closed) or value ``examples`` and the patterns
      :func:`_contexts` learns from the example requests;
    - anything else (boolean, object, array): no slot (its default, or an LLM, fills it).

    A parameter without ``ask`` gets one made from its name ("Which size: small, medium or large?").
    """
    if parameter.slot is not None:
        return parameter
    schema, name = parameter.schema, parameter.name
    kind = schema.get("type")
    words = name.replace("_", " ")
    ask = parameter.ask
    options = dict(parameter.options)
    slot: str | None
    if name == "customer_id":
        slot = "customer"
        ask = ask or "Could you tell me your name or your customer number?"
    elif schema.get("format") in ("date-time", "date") or re.search(r"(^|_)(when|date|time|datetime|at)$", name):
        slot = "datetime"
        ask = ask or f"What day and time would you like for the {words}?"
    elif "phone" in name:
        slot = "phone"
        ask = ask or "Which phone number should I use?"
    elif kind in ("integer", "number"):
        slot = "number"
        options.setdefault("after", [w for w in name.split("_") if len(w) > 2])
        options.setdefault("anywhere", True)
        ask = ask or f"What {words} would you like?"
    elif kind == "string" or (kind is None and "enum" in schema):
        slot = "value"
        enum = [str(v) for v in schema.get("enum", [])]
        values = enum or [str(v) for v in schema.get("examples", [])]
        options.setdefault("values", values)
        options.setdefault("closed", bool(enum))
        options.setdefault("contexts", _contexts(values, requests, f"{words} {schema.get('description', '')}"))
        choices = ", ".join(enum[:-1]) + f" or {enum[-1]}" if len(enum) > 1 else ""
        ask = ask or (f"Which {words}: {choices}?" if choices and len(enum) <= 5 else f"Which {words}?")
    else:
        return parameter
    if not parameter.required and parameter.ask is None:
        ask = None  # an optional parameter is never asked for: its default, or nothing
    options.setdefault("label", words)
    return dataclasses.replace(parameter, slot=slot, ask=ask, options=options)


def _schema(parameters: tuple[ParameterDeclaration, ...]) -> dict[str, Any]:
    """The JSON Schema object of the parameters (every one required unless ``required = false``)."""
    properties = {}
    for p in parameters:
        prop = dict(p.schema)
        prop.setdefault("type", "string")
        if prop.get("format") == "date-time" and "description" not in prop:
            prop["description"] = "ISO 8601 local date and time, e.g. 2026-12-03T10:00"
        properties[p.name] = prop
    return {"type": "object", "properties": properties, "required": [p.name for p in parameters if p.required],
            "additionalProperties": False}


def _check_link_local(host: str, port: int, settings: Any) -> Any:
    """Refuse a host that resolves to a link-local address (the cloud metadata services) unless allowed."""

    async def check() -> None:
        if getattr(settings, "forge_http_tools_allow_link_local", False):
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise ToolError(f"could not find the host {host}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if address.is_link_local or address in _METADATA:
                raise ToolError(f"{host} is a link-local address, which tools may not reach "
                                "(FORGE_HTTP_TOOLS_ALLOW_LINK_LOCAL allows it)")

    return check()


_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200")}
"""Cloud metadata services (AWS, GCP, Azure: 169.254.169.254; AWS IPv6; Alibaba Cloud)."""


def _http_runner(name: str, spec: dict[str, Any]):  # noqa: ANN202
    method, url, headers, body = spec["method"], spec["url"], spec.get("headers", {}), spec.get("body")
    timeout_s, mapping = float(spec.get("timeout_s", 5)), spec.get("result")

    async def run(ctx: ToolContext, **args: Any) -> Any:
        import httpx

        settings = ctx.settings
        target = _fill(url, args, settings, encode=True)
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolError(f"{name}: {target!r} is not an http(s) URL")
        await _check_link_local(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), settings)
        limit = int(getattr(settings, "forge_http_tool_max_bytes", 262_144))
        sent_headers = {str(k): str(_fill(v, args, settings)) for k, v in headers.items()}
        payload = _fill(body, args, settings) if body is not None else None
        try:
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
                async with client.stream(method, target, headers=sent_headers, json=payload) as response:
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise ToolError(f"the {name} service answered with more than {limit} bytes")
                        chunks.append(chunk)
        except httpx.TimeoutException:
            raise ToolError(f"the {name} service did not answer within {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"could not reach the {name} service ({type(exc).__name__})") from None
        raw = b"".join(chunks)
        if response.status_code >= 300:
            detail = ""
            try:
                answer = json.loads(raw)
                detail = str(answer.get("detail") or answer.get("error") or "")[:200] if isinstance(answer, dict) else ""
            except ValueError:
                pass
            raise ToolError(f"the {name} service answered {response.status_code}" + (f": {detail}" if detail else ""))
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = {"text": raw.decode("utf-8", "replace")[:2000]}
        if isinstance(mapping, dict):
            return {key: _dig(answer, path) for key, path in mapping.items()}
        return answer

    return run


def _sql_runner(name: str, query: str):  # noqa: ANN202
    async def run(ctx: ToolContext, **args: Any) -> Any:
        from voiceforge.store.business import customer_by_phone
        from voiceforge.store.readonly import QueryLimits, QueryRefused, run_query

        settings = ctx.settings
        limits = QueryLimits(timeout_ms=settings.forge_sql_timeout_ms, max_rows=settings.forge_sql_max_rows,
                             max_bytes=settings.forge_sql_max_bytes)
        own = await asyncio.to_thread(customer_by_phone, ctx.business, ctx.caller) if ctx.caller else None
        try:
            result = await asyncio.wait_for(asyncio.to_thread(
                run_query, ctx.business, query, limits, settings.forge_sql_reader_url,
                own["customer_id"] if own else None, args), limits.timeout_ms / 1000 + 5)
        except TimeoutError:
            raise ToolError(f"{name}: the query waited too long to run") from None
        except QueryRefused as exc:
            raise ToolError(f"{name}: {exc}") from None
        rows = [dict(zip(result.columns, row, strict=False)) for row in result.rows]
        if not rows:
            raise ToolError(f"{name}: nothing was found")
        return rows[0] if len(rows) == 1 else {"rows": rows, "count": len(rows), "truncated": result.truncated}

    return run


def _mock_runner(name: str, spec: dict[str, Any]):  # noqa: ANN202
    cases = spec.get("results", [])
    default = spec.get("result")

    def same(wanted: Any, given: Any) -> bool:
        if isinstance(wanted, str) and isinstance(given, str):
            return wanted.strip().lower() == given.strip().lower()
        return wanted == given

    async def run(ctx: ToolContext, **args: Any) -> Any:
        for case in cases:
            if all(same(v, args.get(k)) for k, v in case["when"].items()):
                return _fill(case["result"], args, ctx.settings)
        if default is None:
            raise ToolError(f"{name} has no answer for " + (", ".join(f"{k} {v}" for k, v in args.items()) or "that"))
        return _fill(default, args, ctx.settings)

    return run


def _check_kind(table: dict[str, Any], where: str, parameters: set[str]) -> dict[str, Any]:
    """The kind's own keys, checked; the message names the file, the tool and the key."""
    kind = table.get("kind")
    if kind not in KINDS:
        raise DeclarationError(f"{where}: kind must be one of {', '.join(KINDS)} (got {kind!r})")
    spec = {k: table[k] for k in KINDS[kind] if k in table}
    others = {k for k in set().union(*KINDS.values()) if k in table} - KINDS[kind]
    if others:
        raise DeclarationError(f"{where}: {', '.join(sorted(others))} do not apply to a {kind} tool")
    from voiceforge.config import get_settings

    for name in sorted(_env_names(spec) - {"FORGE_API_KEY"}):  # the sidecar's key is generated when first used
        if setting_value(name, get_settings()) is None:
            raise DeclarationError(f"{where}: ${{{name}}} is not set (an environment variable or a Forge setting)")
    if kind == "http":
        spec["method"] = str(spec.get("method", "GET")).upper()
        if spec["method"] not in METHODS:
            raise DeclarationError(f"{where}: method must be one of {', '.join(METHODS)}")
        if not isinstance(spec.get("url"), str) or not spec["url"].strip():
            raise DeclarationError(f"{where}: an http tool needs a url")
        used = {m.group(2) for m in _TEMPLATE.finditer(spec["url"]) if m.group(2)}
        used |= {m.group(2) for v in json.dumps([spec.get("headers"), spec.get("body")]).split('"')
                 for m in _TEMPLATE.finditer(v) if m.group(2)}
        if unknown := used - parameters:
            raise DeclarationError(f"{where}: {{{', '.join(sorted(unknown))}}} is no parameter of the tool")
        if not isinstance(spec.get("headers", {}), dict) or not all(
                isinstance(v, str) for v in spec.get("headers", {}).values()):
            raise DeclarationError(f"{where}: headers must be a table of strings")
        timeout = spec.get("timeout_s", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
            raise DeclarationError(f"{where}: timeout_s must be a number of seconds up to {MAX_TIMEOUT_S:g}")
        if "result" in spec and not (isinstance(spec["result"], dict)
                                     and all(isinstance(v, str) for v in spec["result"].values())):
            raise DeclarationError(f"{where}: an http tool's result maps names to dotted paths of its JSON answer")
    elif kind == "sql":
        query = spec.get("query")
        if not isinstance(query, str) or not _SQL_START.match(query):
            raise DeclarationError(f"{where}: a sql tool needs a query that is one SELECT")
        from voiceforge.store.readonly import _NAMED

        used = {m.group(1) for m in _NAMED.finditer(query) if m.group(1)}
        if unknown := used - parameters:
            raise DeclarationError(f"{where}: :{', :'.join(sorted(unknown))} is no parameter of the tool")
    else:
        cases = spec.get("results", [])
        if not isinstance(cases, list) or not all(
                isinstance(c, dict) and isinstance(c.get("when"), dict) and "result" in c and set(c) <= {"when", "result"}
                for c in cases):
            raise DeclarationError(f"{where}: [[tool.results]] tables hold when = {{...}} and result = ...")
        if "result" not in spec and not cases:
            raise DeclarationError(f"{where}: a mock tool needs a result or [[tool.results]]")
        for case in cases:
            if unknown := set(case["when"]) - parameters:
                raise DeclarationError(f"{where}: when names {', '.join(sorted(unknown))}, no parameter of the tool")
    return {"kind": kind, **spec}


def declared_tool(table: Any, source: str, builtin: set[str] | frozenset[str] = frozenset(),
                  patterns: dict[str, str] | None = None) -> Tool:
    """One ``[[tool]]`` table with a ``kind`` as a :class:`Tool` (see the module docstring).

    Args:
        table: the TOML table.
        source: the file it came from (named in errors).
        builtin: names of the built-in tools, which a declared tool may not take.
        patterns: the file's ``[patterns]`` (for triggers).

    Raises:
        DeclarationError: no description, a built-in's name, an unknown kind or key, a key of
            the wrong type, a ``{param}`` or ``:param`` that is no parameter, or a ``${NAME}``
            that is not set; the message names the file, the tool and the key.
    """
    if not isinstance(table, dict):
        raise DeclarationError(f"{source}: every [[tool]] must be a table")
    name = str(table.get("name", "")).strip()
    where = f"{source}: tool {name!r}"
    if name in builtin:
        raise DeclarationError(f"{where}: {name} is a built-in tool's name; a declared tool needs its own")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise DeclarationError(f"{where}: a tool's name is letters, digits and _ (at most 64)")
    own = set().union(*KINDS.values()) | {"kind"}
    declaration = declaration_from_table({k: v for k, v in table.items() if k not in own}, source, patterns)
    if not declaration.description.strip():
        raise DeclarationError(f"{where}: a declared tool needs a description (an LLM reads it)")
    spec = _check_kind(table, where, {p.name for p in declaration.parameters})
    declaration = dataclasses.replace(declaration, parameters=tuple(
        infer_slot(p, declaration.examples) for p in declaration.parameters))
    runner = {"http": _http_runner, "sql": lambda n, s: _sql_runner(n, s["query"]), "mock": _mock_runner}
    declaration = dataclasses.replace(declaration, opt_in=True)  # only the agents that name it
    return Tool.declared(declaration, runner[spec["kind"]](name, spec), _schema(declaration.parameters),
                         declaration.description, kind=spec["kind"])


def declared_tools(tables: Any, source: str, builtin: set[str] | frozenset[str] = frozenset(),
                   patterns: dict[str, str] | None = None) -> list[Tool]:
    """Every ``[[tool]]`` table of a file as tools (see :func:`declared_tool`).

    Raises:
        DeclarationError: a malformed table, or two with one name.
    """
    if not isinstance(tables, list):
        raise DeclarationError(f"{source}: tools are [[tool]] tables")
    out: list[Tool] = []
    for table in tables:
        tool = declared_tool(table, source, builtin, patterns)
        if any(t.name == tool.name for t in out):
            raise DeclarationError(f"{source}: tool {tool.name!r} is declared twice")
        out.append(tool)
    return out


def tool_from_schema(name: str, description: str, schema: dict[str, Any], run: Any, examples: tuple[str, ...] = (),
                     confirm: bool = False, kind: str = "mcp", source: str = "") -> Tool:
    """A tool known only by its JSON Schema (an MCP server's, a chat client's), run by ``run(ctx, **args)``.

    The offline brain reaches it by ``examples`` (default: its description) and fills its parameters
    by :func:`infer_slot`; ``title`` keys (pydantic's) are dropped from the schema an LLM gets.
    """
    schema = dict(schema or {"type": "object", "properties": {}})
    schema.pop("title", None)
    properties = {p: {k: v for k, v in prop.items() if k != "title"}
                  for p, prop in (schema.get("properties") or {}).items()}
    required = set(schema.get("required") or [])
    examples = tuple(e for e in (examples or ((description or "").strip(),)) if e)
    parameters = tuple(infer_slot(ParameterDeclaration(name=p, schema=prop, required=p in required,
                                                       default=prop.get("default")), examples)
                       for p, prop in properties.items())
    declaration = ToolDeclaration(name=name, description=description or name, parameters=parameters,
                                  examples=examples, confirm=confirm, opt_in=True, source=source)
    return Tool.declared(declaration, run, {**schema, "type": "object", "properties": properties,
                                            "required": sorted(required)}, declaration.description, kind=kind)
