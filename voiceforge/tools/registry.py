"""The tool registry: plain typed functions become LLM tools with a derived JSON schema.

A tool is a function whose first parameter is a :class:`ToolContext` and whose other
parameters have type hints; its docstring's first paragraph is the description and its
``Args:`` section describes each parameter. Raise :class:`ToolError` with a message the LLM
may see; any other exception becomes a generic failure and is logged.

For the offline brain a tool also carries its declaration (voiceforge/tools/declaration.py):
the phrasings that mean it, example requests, and the slots that fill its arguments from
speech; the brain reads those, never tool-specific code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import re
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from voiceforge.tools import slots
from voiceforge.tools.declaration import DEFAULT_FILLER, DeclarationError, ToolDeclaration

log = logging.getLogger(__name__)


class ToolError(Exception):
    """A tool failure whose message is shown to the LLM (and the user): keep it plain."""


@dataclass
class ToolContext:
    """What a tool may use: the database, settings, the conversation and call controls.

    Attributes:
        db: the :class:`voiceforge.store.db.Database` (conversations, calls, devices).
        settings: the :class:`voiceforge.config.Settings`.
        conversation_id: the conversation the call belongs to, if stored.
        state: per-conversation scratch (e.g. the verified customer id), kept between turns.
        on_end_call: called by end_call to hang up (phone) or close the conversation.
        services: optional clients keyed by name ("twilio", "telegram").
        caller: the E.164 number of the person on the phone or SMS thread, if any.
        child_id: the child a storyteller device belongs to, if any.
        playback: recordings a tool asks to play after the reply: (title, PCM16, Hz).
        business_db: the Database holding the mock business tables when it is not ``db``
            (``BUSINESS_DATABASE_URL``, DuckDB); read it through :attr:`business`.
    """

    db: Any
    settings: Any
    conversation_id: int | None = None
    state: dict[str, Any] = field(default_factory=dict)
    on_end_call: Callable[[str], Any] | None = None
    services: dict[str, Any] = field(default_factory=dict)
    caller: str | None = None
    child_id: int | None = None
    playback: list[tuple[str, bytes, int]] = field(default_factory=list)
    business_db: Any = None

    @property
    def business(self) -> Any:
        """The Database of customers, orders and appointments: ``business_db``, else ``db``."""
        return self.business_db if self.business_db is not None else self.db


Extractor = Callable[[str, dict[str, Any]], "dict[str, Any] | str | None"]
"""Offline-brain argument extractor: (utterance, conversation state) → arguments, or a
question to ask back (str), or None when the utterance is not for this tool."""


@dataclass
class Tool:
    """A registered tool: name, description, parameter schema, the function, and its declaration.

    ``triggers``, ``broad_triggers``, ``examples``, ``offer``, ``tags``, ``filler``, ``opt_in``,
    ``extract`` and ``phrase`` come from the declaration (:class:`ToolDeclaration`); a tool
    registered without one has no phrasings, so the offline brain never picks it.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any]
    triggers: list[re.Pattern[str]] = field(default_factory=list)
    extract: Extractor | None = None
    phrase: Callable[[Any], str | None] | None = None
    filler: str = DEFAULT_FILLER
    tags: tuple[str, ...] = ()
    opt_in: bool = False
    examples: list[str] = field(default_factory=list)
    offer: str = ""
    broad_triggers: list[re.Pattern[str]] = field(default_factory=list)
    declaration: ToolDeclaration | None = None
    kind: str = "built-in"
    """Where it runs: "built-in" (Python), "http", "sql" or "mock" (declared in an agent's file), "mcp"."""

    @classmethod
    def declared(cls, declaration: ToolDeclaration, func: Callable[..., Any], parameters: dict[str, Any],
                 description: str, kind: str = "built-in") -> Tool:
        """A tool run by ``func`` that the offline brain reaches through ``declaration`` (its phrasings and slots).

        Args:
            declaration: the tool's declaration (name, examples, triggers, slots, say).
            func: runs it: ``func(ctx, **arguments)``, async or not.
            parameters: the JSON Schema object of its arguments.
            description: what it does, for an LLM.
            kind: see :attr:`kind`.
        """
        return cls(
            name=declaration.name, description=description, parameters=parameters, func=func,
            triggers=list(declaration.triggers), broad_triggers=list(declaration.broad_triggers),
            extract=functools.partial(slots.extract, declaration),
            phrase=functools.partial(slots.phrase, declaration) if declaration.say or declaration.say_with else None,
            filler=declaration.filler, tags=declaration.tags, opt_in=declaration.opt_in,
            examples=list(declaration.examples), offer=declaration.offer, declaration=declaration, kind=kind,
        )

    @property
    def confirm(self) -> bool | str:
        """Its declaration asks for the caller's confirmation before it runs: True, "unclear" or False."""
        return self.declaration.confirm if self.declaration is not None else False

    def openai_schema(self) -> dict[str, Any]:
        """The Chat Completions `tools` entry: {"type": "function", "function": {...}}."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def matches(self, utterance: str) -> bool:
        """True when any trigger pattern, exact or broad, matches the utterance (case-insensitive)."""
        return self.matches_exactly(utterance) or any(p.search(utterance) for p in self.broad_triggers)

    def matches_exactly(self, utterance: str) -> bool:
        """True when a trigger that certainly means this tool matches (not only a broad one)."""
        return any(p.search(utterance) for p in self.triggers)


@dataclass
class Fault:
    """Injected behaviour for one tool: extra delay (ms) and/or a failure message."""

    delay_ms: int = 0
    fail: str | None = None


@dataclass
class ToolResult:
    """What running a tool produced: the result or an error, and how long it took (ms)."""

    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the tool returned without error."""
        return self.error is None

    def for_llm(self) -> str:
        """The tool message content the LLM sees (JSON)."""
        import json

        payload = {"error": self.error} if self.error else {"result": self.result}
        return json.dumps(payload, default=str)


_PY_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(hint: Any) -> dict[str, Any]:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        return _json_type(members[0]) if len(members) == 1 else {"anyOf": [_json_type(m) for m in members]}
    if origin is Literal:
        values = list(get_args(hint))
        return {"type": _PY_TO_JSON[type(values[0])], "enum": values}
    if origin in (list, tuple, set):
        args = get_args(hint)
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict or hint is dict:
        return {"type": "object"}
    if hint in _PY_TO_JSON:
        return {"type": _PY_TO_JSON[hint]}
    raise TypeError(f"unsupported tool parameter type: {hint!r}")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring → (description, {param: description})."""
    doc = inspect.cleandoc(doc or "")
    description = doc.split("\n\n")[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?)+)", doc, re.M)
    if match:
        current = None
        for line in match.group(1).splitlines():
            m = re.match(r"\s+(\w+)(?: \([^)]*\))?:\s*(.*)", line)
            if m and len(line) - len(line.lstrip()) <= 4:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current:
                params[current] += " " + line.strip()
    return description, params


def schema_for(func: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """Derive (description, JSON schema of parameters) from type hints and the docstring.

    The first parameter (the ToolContext) is skipped; parameters without defaults are required.

    Raises:
        TypeError: a parameter lacks a type hint or has an unsupported type.
    """
    description, docs = _parse_docstring(func.__doc__ or "")
    hints = typing.get_type_hints(func)
    params = list(inspect.signature(func).parameters.values())[1:]
    properties: dict[str, Any] = {}
    required = []
    for p in params:
        if p.name not in hints:
            raise TypeError(f"{func.__name__}: parameter {p.name!r} needs a type hint")
        prop = _json_type(hints[p.name])
        if p.name in docs:
            prop["description"] = docs[p.name]
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        properties[p.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    schema["additionalProperties"] = False
    return description, schema


class ToolRegistry:
    """Tools by name, with per-tool injected faults and a default artificial delay (ms)."""

    def __init__(self, default_delay_ms: int = 0) -> None:
        self._tools: dict[str, Tool] = {}
        self.faults: dict[str, Fault] = {}
        self.default_delay_ms = default_delay_ms

    def register(self, tool: Tool) -> Tool:
        """Add or replace a tool."""
        self._tools[tool.name] = tool
        return tool

    def add(self, func: Callable[..., Any], declaration: ToolDeclaration | None = None) -> Tool:
        """Register a function as a tool, deriving its schema (see :func:`schema_for`).

        Args:
            func: the tool (first parameter a :class:`ToolContext`, the others type-hinted).
            declaration: how the offline brain reaches it (phrasings, examples, slots); its
                parameters must be the function's.

        Raises:
            TypeError: see :func:`schema_for`.
            DeclarationError: the declaration is for another tool, or names a parameter the
                function does not take.
        """
        description, parameters = schema_for(func)
        name = func.__name__
        if declaration is None:
            return self.register(Tool(name=name, description=description, parameters=parameters, func=func))
        if declaration.name != name:
            raise DeclarationError(f"{declaration.source}: declaration {declaration.name!r} is not for {name}")
        unknown = [p.name for p in declaration.parameters if p.name not in parameters["properties"]]
        if unknown:
            raise DeclarationError(f"{declaration.source}: tool {name!r} takes no parameter {', '.join(unknown)}")
        required = set(parameters["required"])  # the signature says what is required, not the file
        declaration = dataclasses.replace(declaration, parameters=tuple(
            dataclasses.replace(p, required=p.name in required) for p in declaration.parameters))
        return self.register(Tool.declared(declaration, func, parameters, declaration.description or description))

    def derive(self, replacements: dict[str, Callable[..., Any]]) -> ToolRegistry:
        """A registry with the same tools and faults, some run by other functions.

        Each replacement keeps its tool's name, schema and declaration, takes the tool's
        arguments, and has no filler. A Realtime client that declares a tool runs it itself;
        the replacement hands the call over and waits for the result.
        """
        derived = ToolRegistry(self.default_delay_ms)
        derived.faults = self.faults
        for name, tool in self._tools.items():
            if name in replacements:
                tool = dataclasses.replace(tool, func=replacements[name], filler="")
            derived.register(tool)
        return derived

    def with_tools(self, tools: list[Tool]) -> ToolRegistry:
        """A registry with these tools too (an agent's declared and MCP tools), after the built-ins.

        Faults are shared with this registry (the Tools page's injected delay or failure apply).
        With no ``tools`` this registry itself is returned.
        """
        if not tools:
            return self
        extended = ToolRegistry(self.default_delay_ms)
        extended.faults = self.faults
        for tool in [*self._tools.values(), *tools]:
            extended.register(tool)
        return extended

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def select(self, names: list[str] | None) -> list[Tool]:
        """The tools named (unknown names ignored); ``*`` among them, or None, means every tool that is not opt-in.

        ``*`` leaves out opt-in tools (a persona's own, like the storyteller's, and the tools an
        agent declares), which must be named. Registration order is kept whatever the order of
        ``names``: the offline brain takes the first tool whose triggers match.
        """
        if names is None:
            names = ["*"]
        wanted = set(names)
        every = "*" in wanted
        return [t for n, t in self._tools.items() if n in wanted or (every and not t.opt_in)]

    def set_fault(self, name: str, delay_ms: int = 0, fail: str | None = None) -> None:
        """Inject a delay (ms) and/or a failure message into one tool; zeros clear it."""
        if delay_ms or fail:
            self.faults[name] = Fault(delay_ms=delay_ms, fail=fail)
        else:
            self.faults.pop(name, None)

    async def execute(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run a tool with validated arguments; never raises for tool failures.

        Returns:
            A ToolResult with ``result`` or ``error`` (the ToolError message, or a generic
            message for unexpected exceptions, which are logged with the tool name only).
        """
        start = time.perf_counter()
        result = ToolResult(name=name, arguments=dict(arguments))
        tool = self._tools.get(name)
        try:
            if tool is None:
                raise ToolError(f"there is no tool called {name!r}")
            kwargs = _validate(tool, arguments)
            fault = self.faults.get(name, Fault())
            delay = fault.delay_ms or self.default_delay_ms
            if delay:
                await asyncio.sleep(delay / 1000)
            if fault.fail:
                raise ToolError(fault.fail)
            if inspect.iscoroutinefunction(tool.func):
                result.result = await tool.func(ctx, **kwargs)
            else:
                result.result = await asyncio.to_thread(tool.func, ctx, **kwargs)
        except ToolError as exc:
            result.error = str(exc)
        except Exception:
            log.exception("tool %s failed", name)
            result.error = f"the {name} tool failed unexpectedly"
        result.duration_ms = (time.perf_counter() - start) * 1000
        return result


def _validate(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """Check arguments against the tool's schema; coerce numeric strings the LLM sent."""
    props = tool.parameters["properties"]
    unknown = set(arguments) - set(props)
    if unknown:
        raise ToolError(f"unknown argument(s) for {tool.name}: {', '.join(sorted(unknown))}")
    missing = [p for p in tool.parameters["required"] if arguments.get(p) in (None, "")]
    if missing:
        raise ToolError(f"{tool.name} needs: {', '.join(missing)}")
    out = {}
    for key, value in arguments.items():
        kind = props[key].get("type")
        try:
            if value is None:
                pass
            elif kind == "integer" and not isinstance(value, bool):
                value = int(value)
            elif kind == "number":
                value = float(value)
            elif kind == "string":
                value = str(value)
            elif kind == "boolean" and isinstance(value, str):
                value = value.lower() in ("true", "1", "yes")
        except (TypeError, ValueError):
            raise ToolError(f"{key} must be a {kind}") from None
        if "enum" in props[key] and value not in props[key]["enum"]:
            raise ToolError(f"{key} must be one of {props[key]['enum']}")
        out[key] = value
    return out
