"""Personas: data files in `prompts/` (TOML), plus the editable personalization.

A persona file holds: ``id``, ``name``, ``description``, ``greeting``, ``system_prompt``,
``tools`` (names, or ["*"] for all), ``phone_max_sentences`` (reply length limit on calls),
``domain_words`` (spelling hints for STT: the domain's uncommon words, which Whisper's prompt
biases it toward), ``realtime`` (its phone calls run over a Realtime
session), ``sql_for_unknown_texters`` (run_sql for SMS from numbers that are no customer's) and
``[voice]`` with one voice per provider, and the persona's knowledge: ``facts`` (sentences) and
``faq`` (question/answer tables), which every brain reads from the system prompt
(:mod:`voiceforge.agent.knowledge`).
A persona with ``personalized = true`` fills ``{assistant_name}``, ``{user_name}``,
``{missing_data}`` and ``{system_message_suffix}`` from the personalization file.

An agent file may also declare its own tools as data (``[[tool]]`` tables with a ``kind``:
:mod:`voiceforge.tools.declared`) and name MCP servers (``[[mcp]]`` tables:
:mod:`voiceforge.tools.mcp_servers`); every agent may name the tools of the shared tools files
(``prompts/tools/*.toml``). The file name is the agent's id (an ``id`` key must match it).
Agents made in the app (:mod:`voiceforge.agent.agents`) are files in ``<data dir>/agents/``.

Edits made on the Personas page (system prompt, greeting, voices, turn detection, facts, tools)
are new versions of the persona in the data folder (:mod:`voiceforge.agent.versions`), so the
repository's files stay as shipped; a changed file becomes a new version when it is next read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from voiceforge.agent import knowledge, versions
from voiceforge.config import ROOT, get_settings

log = logging.getLogger(__name__)
PROMPTS = ROOT / "prompts"
AGENTS = "agents"
"""The folder of app-made agents in the data folder (``<data dir>/agents/<id>.toml``)."""
SHARED_TOOLS = "tools"
"""The folder of shared tools files next to the agent files (``prompts/tools/*.toml``, ``<data dir>/agents/tools/``)."""
DEFAULT_PERSONALIZATION = PROMPTS / "personalization.json"
PERSONALIZATION_KEYS = ("assistant_name", "user_name", "missing_data", "system_message_suffix")
SEED_KEYS = {"ai_assistant_name": "assistant_name", "patient_name": "user_name"}
"""The seeds' personalization.json names for Forge's keys (``missing_data`` and
``system_message_suffix`` are the same in both)."""
IGNORED_SEED_KEYS = {"sql_dialect": "the SQL dialect follows the database (DATABASE_URL or SQL_DIALECT)"}


class PersonaError(ValueError):
    """A persona file is missing, malformed or lacks a required field."""


@dataclass
class Persona:
    """One persona, with its templates already filled."""

    id: str
    name: str
    description: str
    greeting: str
    system_prompt: str
    tools: list[str] = field(default_factory=lambda: ["*"])
    phone_max_sentences: int = 2
    domain_words: list[str] = field(default_factory=list)
    voice: dict[str, str] = field(default_factory=dict)
    kid_safe: bool = False
    realtime: bool = False
    endpointing_ms: int | None = None
    vad_threshold: float | None = None
    sql_for_unknown_texters: bool = False
    """run_sql answers an SMS from a number that is no customer's (off by default: a stranger's text)."""
    reprompt: str = "Are you still there?"
    """Said when the caller has been silent ``idle_s`` after the agent finished speaking."""
    idle_goodbye: str = "It sounds like you have stepped away, so I will end the call here. Goodbye!"
    """Said, before hanging up, when the reprompts went unanswered."""
    wrap_up: str = "We have reached the time limit for this call. Thank you for calling, goodbye!"
    """Said, before hanging up, when the conversation reaches ``max_call_s`` (or the server drains)."""
    idle_s: float | None = None
    """Seconds of silence before the reprompt (None: ``FORGE_IDLE_S``; 0: never)."""
    idle_reprompts: int | None = None
    """Reprompts before the goodbye (None: ``FORGE_IDLE_REPROMPTS``)."""
    max_call_s: float | None = None
    """The longest conversation, s (None: ``FORGE_MAX_CALL_S``; 0: no limit)."""
    turn_detector: str | None = None
    """"model" or "silence" (None: ``FORGE_TURN_DETECTOR``)."""
    knowledge: list[knowledge.Entry] = field(default_factory=list)
    """Facts and FAQ pairs (``facts`` and ``faq``)."""
    version: int | None = None
    """The persona version this was loaded from (:mod:`voiceforge.agent.versions`)."""
    keypad: dict[str, str] = field(default_factory=dict)
    """Keypad digits (or digit strings ended by ``#``) mapped to what the caller means by them,
    e.g. ``{"1": "I want to check my order"}``; others reach the agent as "I pressed 1 on the keypad"."""
    own_tools: list = field(default_factory=list)
    """Tools declared as data for this agent (its ``[[tool]]`` tables and the shared tools files'),
    as :class:`voiceforge.tools.Tool`; offered when ``tools`` names them (or is ``["*"]``)."""
    mcp: list = field(default_factory=list)
    """Its MCP servers (:class:`voiceforge.tools.mcp_servers.McpServer`); their allowed tools are offered."""
    made_in_app: bool = False
    """The agent's file is in the data folder (made, duplicated or imported in the app), not in prompts/."""

    def offered(self, own: list) -> list[str]:
        """The tool names it may use, given its own tools ``own`` (declared and MCP).

        ``tools = ["*"]`` means every built-in that is not opt-in and all its own; a list means
        those names, plus the allowed tools of its MCP servers.
        """
        if "*" in self.tools:
            return ["*", *(t.name for t in own)]
        return [*self.tools, *(t.name for t in own if t.kind == "mcp" and t.name not in self.tools)]

    def prompt_for(self, channel: str) -> str:
        """The system prompt, then the persona's knowledge, then (on a call) the reply-length rule."""
        prompt = self.system_prompt
        if self.knowledge:
            prompt += "\n\n" + knowledge.render(self.knowledge)
        if channel == "phone":
            prompt += (f"\n\nYou are on a phone call: answer in at most {self.phone_max_sentences} short"
                       " sentences, with no lists, markdown or emoji.")
        return prompt


def load_personalization(data_dir: Path) -> dict[str, str]:
    """The personalization: `<data dir>/personalization.json` over `prompts/personalization.json`.

    The seeds' format is read too (``ai_assistant_name``, ``patient_name``, ``missing_data``,
    ``system_message_suffix``; ``sql_dialect`` is noted and left to the database settings). A
    key neither format knows is a warning naming it.

    Raises:
        PersonaError: the saved file is not a JSON object.
    """
    values = json.loads(DEFAULT_PERSONALIZATION.read_text())
    saved = data_dir / "personalization.json"
    if saved.exists():
        try:
            raw = json.loads(saved.read_text())
        except json.JSONDecodeError as exc:
            raise PersonaError(f"{saved} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise PersonaError(f"{saved} must hold a JSON object")
        for key, value in raw.items():
            name = SEED_KEYS.get(key, key)
            if name in PERSONALIZATION_KEYS:
                values[name] = value
            elif key in IGNORED_SEED_KEYS:
                log.info("%s: %s is not used: %s", saved.name, key, IGNORED_SEED_KEYS[key])
            else:
                log.warning("%s: unknown key %r ignored (known: %s)", saved,
                            key, ", ".join([*PERSONALIZATION_KEYS, *SEED_KEYS]))
    return {k: str(values.get(k, "")) for k in PERSONALIZATION_KEYS}


def save_personalization(data_dir: Path, values: dict[str, str]) -> Path:
    """Write the personalization (only the known keys) to `<data dir>/personalization.json`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "personalization.json"
    clean = {k: str(values.get(k, "")).strip() for k in PERSONALIZATION_KEYS}
    if not clean["assistant_name"]:
        raise PersonaError("assistant_name cannot be empty")
    path.write_text(json.dumps(clean, indent=2))
    return path


EDITABLE_KEYS = ("system_prompt", "greeting", "voice", "endpointing_ms", "vad_threshold", "facts", "faq", "name",
                 "description", "tools", "tool", "mcp", "turn_detector", "idle_s", "max_call_s")
"""What the Personas page may change; each save is a new version (:mod:`voiceforge.agent.versions`)."""


def agent_path(persona_id: str, folder: Path = PROMPTS, data_dir: Path | None = None) -> Path | None:
    """The file of agent ``persona_id``: ``folder/<id>.toml``, else ``<data dir>/agents/<id>.toml``; None if neither."""
    if not persona_id or not persona_id.replace("_", "").isalnum() or not persona_id.isascii():
        return None
    for where in (folder, (data_dir or get_settings().forge_data_dir) / AGENTS):
        path = where / f"{persona_id}.toml"
        if path.is_file():
            return path
    return None


def _file(persona_id: str, folder: Path, data_dir: Path | None = None) -> tuple[Path, str, dict]:
    """(path, text, table) of the agent's file (:func:`agent_path`).

    Raises:
        PersonaError: no such file, invalid TOML, or an ``id`` that is not the file's name.
    """
    path = agent_path(persona_id, folder, data_dir)
    if path is None:
        raise PersonaError(f"no persona {persona_id!r} in {folder} or the data folder's {AGENTS}/")
    text = path.read_text(encoding="utf-8")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PersonaError(f"{path.name}: {exc}") from None
    if "id" in table and table["id"] != persona_id:
        raise PersonaError(f"{path.name}: id {table['id']!r} is not the file's name ({persona_id})")
    return path, text, table


def current_version(persona_id: str, data_dir: Path, folder: Path = PROMPTS) -> versions.Version:
    """The persona's newest version, made first when the file is new or changed since the last one.

    A data folder from before versions were kept may hold the Personas page's edits as
    ``personas/<id>.json``: they become version 2 over the file's version 1.

    Raises:
        PersonaError: no such persona file, or invalid TOML.
    """
    path, text, table = _file(persona_id, folder, data_dir)
    store = versions.PersonaVersions(data_dir, persona_id)
    sha = versions.file_sha(text)
    latest = store.latest()
    if latest is None:
        latest = store.add(table, "file", f"{path.name} as first read", sha)
        legacy = data_dir / "personas" / f"{persona_id}.json"
        if legacy.is_file():
            try:
                edits = json.loads(legacy.read_text())
            except json.JSONDecodeError:
                edits = {}
            if isinstance(edits, dict) and (kept := {k: v for k, v in edits.items() if k in EDITABLE_KEYS}):
                latest = store.add(_edited(table, kept), "app", "edits saved before versions were kept", sha)
            with contextlib.suppress(FileNotFoundError):  # another process migrated it first
                legacy.rename(legacy.with_suffix(".json.migrated"))
    elif latest.file_sha != sha:
        latest = store.add(table, "file", f"{path.name} changed", sha)
    return latest


def _edited(definition: dict, values: dict) -> dict:
    """``definition`` with the Personas page's ``values`` applied (None or "" removes a key; voices merge)."""
    out = dict(definition)
    for key, value in values.items():
        if key == "voice" and isinstance(value, dict):
            out["voice"] = {**dict(out.get("voice") or {}), **value}
        elif value is None or value == "":
            out.pop(key, None)
        else:
            out[key] = value
    return out


def save_persona_edits(data_dir: Path, persona_id: str, values: dict, folder: Path = PROMPTS) -> versions.Version:
    """Save edits of a persona (only :data:`EDITABLE_KEYS`) as a new version; returns it.

    Raises:
        PersonaError: no such persona, an empty system prompt, an endpointing silence outside
            100–5,000 ms, a VAD threshold outside 0.3–0.95, or malformed facts or FAQ.
    """
    current = current_version(persona_id, data_dir, folder)
    clean = {k: v for k, v in values.items() if k in EDITABLE_KEYS}
    if "system_prompt" in clean and not str(clean["system_prompt"] or "").strip():
        raise PersonaError("the system prompt cannot be empty")
    if clean.get("endpointing_ms") and not 100 <= int(clean["endpointing_ms"]) <= 5000:
        raise PersonaError("endpointing silence must be 100-5000 ms")
    if clean.get("vad_threshold") and not 0.3 <= float(clean["vad_threshold"]) <= 0.95:
        raise PersonaError("VAD threshold must be 0.3-0.95")
    definition = _edited(current.definition, clean)
    persona_from(persona_id, definition, data_dir, folder)  # the edit must load: PersonaError names what is wrong
    changed = sorted(k for k in clean if definition.get(k) != current.definition.get(k))
    note = "edited " + ", ".join(changed) if changed else "saved unchanged"
    return versions.PersonaVersions(data_dir, persona_id).add(definition, "app", note, current.file_sha)


def reset_persona(data_dir: Path, persona_id: str, folder: Path = PROMPTS) -> versions.Version:
    """A new version equal to the persona's file (the Personas page's "Back to the shipped persona").

    Raises:
        PersonaError: no such persona file, or invalid TOML.
    """
    current_version(persona_id, data_dir, folder)
    path, text, table = _file(persona_id, folder, data_dir)
    return versions.PersonaVersions(data_dir, persona_id).add(table, "reset", f"back to {path.name}",
                                                              versions.file_sha(text))


def rollback_persona(data_dir: Path, persona_id: str, number: int, folder: Path = PROMPTS) -> versions.Version:
    """Make version ``number`` current again, as a new version (history is never rewritten).

    Raises:
        PersonaError: no such persona file.
        versions.VersionError: no such version.
    """
    current = current_version(persona_id, data_dir, folder)
    store = versions.PersonaVersions(data_dir, persona_id)
    return store.add(store.get(number).definition, "rollback", f"rollback to version {number}", current.file_sha)


def load_persona(persona_id: str, data_dir: Path, folder: Path = PROMPTS, version: int | None = None) -> Persona:
    """The persona as of its current version (or ``version``), templates filled.

    Raises:
        PersonaError: no such file, invalid TOML, or a required field missing.
        versions.VersionError: no such ``version``.
    """
    current = current_version(persona_id, data_dir, folder)
    chosen = versions.PersonaVersions(data_dir, persona_id).get(version) if version else current
    return persona_from(persona_id, chosen.definition, data_dir, folder, chosen.number)


def persona_from(persona_id: str, raw: dict, data_dir: Path, folder: Path = PROMPTS,
                 number: int | None = None) -> Persona:
    """A persona from its definition (a file's table, or a version's), templates filled.

    Raises:
        PersonaError: a required field missing, or a field, a declared tool or an MCP server malformed.
    """
    label = f"{persona_id}" + (f" (version {number})" if number else "")
    missing = [k for k in ("name", "greeting", "system_prompt") if not str(raw.get(k) or "").strip()]
    if missing:
        raise PersonaError(f"{label} lacks {', '.join(missing)}")
    tools = raw.get("tools", ["*"])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise PersonaError(f"{label}: tools is a list of tool names")
    path = agent_path(persona_id, folder, data_dir)
    name = raw["name"]
    greeting = raw["greeting"]
    prompt = raw["system_prompt"]
    if raw.get("personalized"):
        values = load_personalization(data_dir)
        name = values["assistant_name"] or name
        greeting = greeting.format(**values)
        prompt = prompt.format(**values)
    return Persona(
        id=persona_id,
        name=name,
        description=raw.get("description", ""),
        greeting=greeting.strip(),
        system_prompt=prompt.strip(),
        tools=list(raw.get("tools", ["*"])),
        phone_max_sentences=int(raw.get("phone_max_sentences", 2)),
        # The assistant's own name is not among them: callers rarely say it, and a short name in
        # Whisper's prompt is heard in ordinary speech ("mm-hmm" and "about Hanuman" came back
        # as "Ava." with the customer-service persona's name in it).
        domain_words=list(raw.get("domain_words", [])),
        voice=dict(raw.get("voice", {})),
        kid_safe=bool(raw.get("kid_safe", False)),
        realtime=bool(raw.get("realtime", False)),
        endpointing_ms=int(raw["endpointing_ms"]) if raw.get("endpointing_ms") else None,
        vad_threshold=float(raw["vad_threshold"]) if raw.get("vad_threshold") else None,
        sql_for_unknown_texters=bool(raw.get("sql_for_unknown_texters", False)),
        knowledge=_knowledge(raw, f"{persona_id}.toml"),
        version=number,
        own_tools=_own_tools(raw, f"{persona_id}.toml", data_dir, folder),
        mcp=_mcp(raw, f"{persona_id}.toml", path, folder),
        made_in_app=bool(path and path.parent != folder),
        **_turn_taking(raw, f"{persona_id}.toml"),
    )


def shared_tool_files(data_dir: Path, folder: Path = PROMPTS) -> list[Path]:
    """The shared tools files every agent may name tools from: ``prompts/tools/*.toml``, ``<data dir>/agents/tools/*.toml``."""
    return [*sorted((folder / SHARED_TOOLS).glob("*.toml")), *sorted((data_dir / AGENTS / SHARED_TOOLS).glob("*.toml"))]


def _own_tools(raw: dict, file: str, data_dir: Path, folder: Path) -> list:
    """The agent's declared tools (its ``[[tool]]`` tables), then the shared files' tools it names.

    Raises:
        PersonaError: a declaration is malformed (the message names the file, the tool and the key).
    """
    from voiceforge.tools import builtin_names
    from voiceforge.tools.declaration import DeclarationError
    from voiceforge.tools.declared import declared_tools

    builtin = builtin_names()
    try:
        patterns = raw.get("patterns", {})
        own = declared_tools(raw.get("tool", []), file, builtin, patterns if isinstance(patterns, dict) else {})
        named = set(raw.get("tools", []))
        for shared in shared_tool_files(data_dir, folder):
            try:
                table = tomllib.loads(shared.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise PersonaError(f"{shared.name}: {exc}") from None
            for tool in declared_tools(table.get("tool", []), shared.name, builtin, table.get("patterns", {})):
                if tool.name in named and all(t.name != tool.name for t in own):
                    own.append(tool)
    except DeclarationError as exc:
        raise PersonaError(str(exc)) from None
    return own


def _mcp(raw: dict, file: str, path: Path | None, folder: Path) -> list:
    """The agent's MCP servers (``[[mcp]]``).

    A stdio server is a program this machine runs, so only a repository's agent file may start
    one: the agent's file is in ``folder`` (prompts/) and this definition's servers are the
    file's own. An agent made, imported or edited in the app may name MCP servers by URL only,
    unless ``FORGE_MCP_APP_COMMANDS`` allows commands too.

    Raises:
        PersonaError: a table is malformed, or an app-made definition starts a program.
    """
    if "mcp" not in raw:
        return []
    from voiceforge.tools.declaration import DeclarationError
    from voiceforge.tools.mcp_servers import parse_servers

    try:
        servers = parse_servers(raw["mcp"], file, path.parent if path else folder)
    except DeclarationError as exc:
        raise PersonaError(str(exc)) from None
    if any(s.command for s in servers) and not get_settings().forge_mcp_app_commands:
        shipped = path is not None and path.parent == folder
        if not shipped or tomllib.loads(path.read_text(encoding="utf-8")).get("mcp") != raw["mcp"]:
            raise PersonaError(f"{file}: an agent made or edited in the app may not start programs ([[mcp]] "
                               "command); name the MCP server by url, put the agent file in prompts/, or set "
                               "FORGE_MCP_APP_COMMANDS=true")
    return servers


KEYPAD_KEYS = frozenset("0123456789*#")


def _knowledge(raw: dict, file: str) -> list[knowledge.Entry]:
    """The persona's facts and FAQ.

    Raises:
        PersonaError: either is malformed (see :func:`voiceforge.agent.knowledge.entries`).
    """
    try:
        return knowledge.entries(raw.get("facts", []), raw.get("faq", []))
    except knowledge.KnowledgeError as exc:
        raise PersonaError(f"{file}: {exc}") from None


def _turn_taking(raw: dict, file: str) -> dict:
    """A persona file's idle, limit and keypad keys (absent keys keep the defaults).

    Raises:
        PersonaError: a wrong type, a negative number, or a keypad key that is not digits, * or #.
    """
    out: dict = {}
    for key in ("reprompt", "idle_goodbye", "wrap_up"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise PersonaError(f"{file}: {key} must be a non-empty string")
            out[key] = raw[key].strip()
    for key, kind in (("idle_s", float), ("idle_reprompts", int), ("max_call_s", float)):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PersonaError(f"{file}: {key} must be a number of 0 or more")
            out[key] = kind(value)
    if "turn_detector" in raw:
        if raw["turn_detector"] not in ("model", "silence"):
            raise PersonaError(f'{file}: turn_detector must be "model" or "silence"')
        out["turn_detector"] = raw["turn_detector"]
    keypad = raw.get("keypad", {})
    if not isinstance(keypad, dict) or not all(
            isinstance(k, str) and k and set(k) <= KEYPAD_KEYS and isinstance(v, str) and v.strip()
            for k, v in keypad.items()):
        raise PersonaError(f"{file}: [keypad] maps keys of digits, * or # to what the caller means, as text")
    if keypad:
        out["keypad"] = {k.rstrip("#") or k: v.strip() for k, v in keypad.items()}
    return out


def list_personas(folder: Path = PROMPTS, data_dir: Path | None = None) -> list[str]:
    """Ids of every agent file in ``folder`` and in ``<data dir>/agents/`` (default: the settings'), sorted."""
    app_made = (data_dir or get_settings().forge_data_dir) / AGENTS
    return sorted({p.stem for p in folder.glob("*.toml")} | {p.stem for p in app_made.glob("*.toml")})
