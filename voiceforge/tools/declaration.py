r"""Tools declared as data: what a tool is called, what it takes, and how a spoken request reaches it.

A declaration is a ``[[tool]]`` table in a TOML file (next to a built-in tool's module, or in
an agent's file). The offline brain reads it; nothing about a tool's phrasings or slots is code:

.. code-block:: toml

    [patterns]                       # named pieces of pattern, used in triggers as {{VISIT}}
    VISIT = '(appointment|booking|repair)s?\b'

    [[tool]]
    name = "cancel_appointment"
    description = "Cancel a scheduled appointment"    # built-ins: the function's docstring
    examples = ["cancel my appointment", "I won't make it, drop the booking"]
    triggers = ['\bcancel\b.*\b{{VISIT}}']          # phrasings that certainly mean this tool
    broad_triggers = []                                 # phrasings that only name its subject
    offer = "cancel an appointment"                     # "Did you want me to <offer>?"
    tags = ["appointments"]
    filler = "One moment while I check that."           # said while it runs past the filler delay
    confirm = false                                     # ask the caller before it runs (true), or only when
                                                        # the request was not clearly for it ("unclear")
    say = "Appointment {appointment_id} is cancelled."  # its result for the ear (else its summary)

    [tool.parameters.appointment_id]                    # a JSON Schema property, plus its slot
    type = "integer"
    description = "the numeric appointment id"
    slot = "number"                                     # how speech fills it (voiceforge/tools/slots.py)
    after = ["appointment", "booking"]                  # the slot's options
    ask = "Which appointment number is it?"             # asked when it is missing
    label = "which appointment"                         # what the agent waits for, shown on the pages

Parameters are filled in the order they are declared. For a built-in tool the JSON Schema comes
from the function's signature and docstring; its declaration adds the slots. Triggers are
regular expressions, matched case-insensitively; ``{{NAME}}`` is replaced by the file's
``[patterns]`` entry, or by a shared one (``WEEKDAY``, ``HOUR``: words the date reader knows).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiceforge.tools import spoken

SCHEMA_KEYS = {"type", "description", "enum", "items", "minimum", "maximum", "format", "examples", "anyOf"}
"""Keys of a parameter table that belong to its JSON Schema (the rest are its slot's)."""
PARAMETER_KEYS = SCHEMA_KEYS | {"slot", "ask", "default", "required"}
TOOL_KEYS = {"name", "description", "examples", "triggers", "broad_triggers", "offer", "tags", "filler", "confirm",
             "opt_in", "say", "say_with", "parameters"}
SHARED_PATTERNS = {"WEEKDAY": "|".join(spoken.WEEKDAYS), "HOUR": "|".join(spoken.HOURS[1:])}
"""Pattern pieces every declaration may use: the weekday words and the hour words from two to
twelve that :func:`spoken.when_in` reads ("one" is left out: "this one instead" is no time)."""
DEFAULT_FILLER = "One moment while I check that."
_PIECE = re.compile(r"\{\{([A-Z_][A-Z0-9_]*)\}\}")


class DeclarationError(ValueError):
    """A tool declaration that cannot be used; the message names the file, the tool and the field."""


@dataclass(frozen=True)
class ParameterDeclaration:
    """One parameter of a declared tool.

    Attributes:
        name: the parameter's name (the tool's argument).
        schema: its JSON Schema property (type, description, enum, ...), as declared.
        required: the tool cannot run without it.
        slot: the reader that fills it from speech (``voiceforge.tools.slots``), or None.
        ask: the question to ask when the slot finds nothing.
        default: the value when the slot finds nothing and nothing is asked.
        options: the slot's own settings (every other key of the table).
    """

    name: str
    schema: dict[str, Any] = field(default_factory=dict)
    required: bool = True
    slot: str | None = None
    ask: str | None = None
    default: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolDeclaration:
    """A tool as data (see the module docstring for the fields and their meaning).

    Attributes:
        name: the tool's name.
        description: what it does, for an LLM (empty for a built-in: its docstring is used).
        parameters: in slot-filling order.
        examples: example requests the offline brain matches by meaning.
        triggers / broad_triggers: compiled patterns (case-insensitive).
        offer: how the brain offers it in a question; tags: what it is about ("orders").
        filler: said while it runs long ("" for silence); confirm: ask before running it (True),
            or only when it was understood by meaning rather than a trigger ("unclear").
        opt_in: only personas that name it get it (not ``tools = ["*"]``).
        say: a template of its result for the ear; say_with: a named phraser instead.
        source: the file it came from.
    """

    name: str
    description: str = ""
    parameters: tuple[ParameterDeclaration, ...] = ()
    examples: tuple[str, ...] = ()
    triggers: tuple[re.Pattern[str], ...] = ()
    broad_triggers: tuple[re.Pattern[str], ...] = ()
    offer: str = ""
    tags: tuple[str, ...] = ()
    filler: str = DEFAULT_FILLER
    confirm: bool | str = False
    opt_in: bool = False
    say: str | None = None
    say_with: str | None = None
    source: str = ""

    def parameter(self, name: str) -> ParameterDeclaration | None:
        """The declared parameter called ``name``, or None."""
        return next((p for p in self.parameters if p.name == name), None)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DeclarationError(f"{where} must be a list of strings")
    return tuple(value)


def _pattern(text: str, patterns: dict[str, str], where: str) -> re.Pattern[str]:
    def piece(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in patterns:
            raise DeclarationError(f"{where}: no pattern {{{{{name}}}}} in [patterns]")
        return patterns[name]

    for _ in range(5):  # a pattern piece may use others (a time of day uses the hour words)
        text, count = _PIECE.subn(piece, text)
        if not count:
            break
    try:
        return re.compile(text, re.I)
    except re.error as exc:
        raise DeclarationError(f"{where}: not a regular expression ({exc})") from None


def _parameter(name: str, table: Any, where: str) -> ParameterDeclaration:
    if not isinstance(table, dict):
        raise DeclarationError(f"{where} must be a table")
    schema = {k: v for k, v in table.items() if k in SCHEMA_KEYS}
    options = {k: v for k, v in table.items() if k not in PARAMETER_KEYS}
    for key in ("slot", "ask"):
        if key in table and not isinstance(table[key], str):
            raise DeclarationError(f"{where}.{key} must be a string")
    required = table.get("required", True)
    if not isinstance(required, bool):
        raise DeclarationError(f"{where}.required must be true or false")
    return ParameterDeclaration(name=name, schema=schema, required=required, slot=table.get("slot"),
                                ask=table.get("ask"), default=table.get("default"), options=options)


def declaration_from_table(table: Any, source: str, patterns: dict[str, str] | None = None) -> ToolDeclaration:
    """One ``[[tool]]`` table as a :class:`ToolDeclaration`.

    Raises:
        DeclarationError: a missing name, an unknown field, a field of the wrong type or a bad
            pattern; the message names ``source``, the tool and the field.
    """
    if not isinstance(table, dict) or not isinstance(table.get("name"), str) or not table["name"].strip():
        raise DeclarationError(f"{source}: every [[tool]] needs a name")
    name = table["name"].strip()
    where = f"{source}: tool {name!r}"
    unknown = set(table) - TOOL_KEYS
    if unknown:
        raise DeclarationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    known = {**SHARED_PATTERNS, **(patterns or {})}
    raw_parameters = table.get("parameters", {})
    if not isinstance(raw_parameters, dict):
        raise DeclarationError(f"{where}: parameters must be a table of tables")
    parameters = tuple(_parameter(p, t, f"{where}: parameters.{p}") for p, t in raw_parameters.items())
    for key in ("description", "offer", "filler", "say", "say_with"):
        if key in table and not isinstance(table[key], str):
            raise DeclarationError(f"{where}: {key} must be a string")
    if "opt_in" in table and not isinstance(table["opt_in"], bool):
        raise DeclarationError(f"{where}: opt_in must be true or false")
    if "confirm" in table and table["confirm"] not in (True, False, "unclear"):
        raise DeclarationError(f"{where}: confirm must be true, false or \"unclear\"")
    return ToolDeclaration(
        name=name, description=table.get("description", ""), parameters=parameters,
        examples=_strings(table.get("examples", []), f"{where}: examples"),
        triggers=tuple(_pattern(t, known, f"{where}: triggers") for t in _strings(table.get("triggers", []),
                                                                                  f"{where}: triggers")),
        broad_triggers=tuple(_pattern(t, known, f"{where}: broad_triggers")
                             for t in _strings(table.get("broad_triggers", []), f"{where}: broad_triggers")),
        offer=table.get("offer", ""), tags=_strings(table.get("tags", []), f"{where}: tags"),
        filler=table.get("filler", DEFAULT_FILLER), confirm=table.get("confirm", False),
        opt_in=table.get("opt_in", False), say=table.get("say"), say_with=table.get("say_with"), source=source,
    )


def load_declarations(path: Path) -> dict[str, ToolDeclaration]:
    """Every ``[[tool]]`` of a TOML file, by name.

    Raises:
        DeclarationError: the file cannot be read or parsed, or a declaration is malformed, or
            two declare the same name; the message names the file.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DeclarationError(f"{path}: {exc}") from None
    patterns = data.get("patterns", {})
    if not isinstance(patterns, dict) or not all(isinstance(v, str) for v in patterns.values()):
        raise DeclarationError(f"{path}: [patterns] must map names to strings")
    tools = data.get("tool", [])
    if not isinstance(tools, list):
        raise DeclarationError(f"{path}: tools are [[tool]] tables")
    out: dict[str, ToolDeclaration] = {}
    for table in tools:
        declaration = declaration_from_table(table, str(path), patterns)
        if declaration.name in out:
            raise DeclarationError(f"{path}: tool {declaration.name!r} is declared twice")
        out[declaration.name] = declaration
    return out
