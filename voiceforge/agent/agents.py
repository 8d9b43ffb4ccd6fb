"""Agents made in the app: create, duplicate, delete, export and import one agent as one TOML file.

An app-made agent is a file ``<data dir>/agents/<id>.toml`` with the same keys as the shipped
personas in ``prompts/`` (plus ``facts``, ``faq``, ``[[tool]]`` and ``[[mcp]]``), so it can be
committed and shared; the Personas page's later edits are versions of it
(:mod:`voiceforge.agent.versions`), and :func:`export_agent` writes the current version back as
one file. Shipped agents (``prompts/``) are never written or deleted here.

Every function checks the whole agent (it must load: :func:`voiceforge.agent.persona.persona_from`)
before anything is written, and writes atomically (a temporary file renamed over), so a crash
leaves either the old file or the new one.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from voiceforge.agent import versions
from voiceforge.agent.persona import (
    AGENTS,
    PROMPTS,
    PersonaError,
    agent_path,
    current_version,
    list_personas,
    persona_from,
)

AGENT_ID = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
"""An agent's id: its file name (lower-case letters, digits and _, 2-48 characters, a letter first)."""
MAX_AGENT_BYTES = 256 * 1024
"""The largest agent file :func:`import_agent` reads."""
NEW_AGENT = {
    "name": "Sam",
    "description": "A new agent.",
    "greeting": "Hi, this is Sam. How can I help you today?",
    "system_prompt": "You are Sam, a friendly voice assistant. Keep answers short: they are spoken.",
    "tools": ["end_call"],
}
"""What a new agent starts from when the form leaves a key empty."""


def check_id(agent_id: str, data_dir: Path, folder: Path = PROMPTS) -> str:
    """``agent_id`` if it is a valid id no agent has yet.

    Raises:
        PersonaError: not a valid id (:data:`AGENT_ID`), or an agent (shipped or app-made) has it.
    """
    agent_id = (agent_id or "").strip()
    if not AGENT_ID.match(agent_id):
        raise PersonaError(f"{agent_id!r} is not a valid agent id: 2-48 lower-case letters, digits and _, "
                           "starting with a letter")
    if agent_path(agent_id, folder, data_dir) is not None:
        raise PersonaError(f"there is already an agent called {agent_id!r}")
    return agent_id


def to_toml(definition: dict[str, Any]) -> str:
    """An agent's definition as the text of its file: ``[[tool]]`` tables, multi-line strings kept multi-line."""
    def shaped(value: Any) -> Any:
        if isinstance(value, str) and "\n" in value:
            return tomlkit.string(value if value.endswith("\n") else value + "\n", multiline=True)
        if isinstance(value, dict):
            return {k: shaped(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shaped(v) for v in value]
        return value

    return tomlkit.dumps(shaped(definition))


def _write(path: Path, definition: dict[str, Any]) -> None:
    """Write ``definition`` as TOML to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = to_toml(definition)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def create_agent(data_dir: Path, agent_id: str, definition: dict[str, Any], folder: Path = PROMPTS,
                 defaults: bool = True) -> Path:
    """Make a new agent in the data folder from ``definition`` (its file's keys); returns its file.

    Keys left out come from :data:`NEW_AGENT` (unless ``defaults`` is False); ``id`` is set to ``agent_id``.

    Raises:
        PersonaError: a bad or taken id, or a definition that does not load (the message says why).
    """
    agent_id = check_id(agent_id, data_dir, folder)
    table = {**(NEW_AGENT if defaults else {}), **{k: v for k, v in definition.items() if v not in (None, "", [])},
             "id": agent_id}
    table = {"id": agent_id, **{k: v for k, v in table.items() if k != "id"}}
    persona_from(agent_id, table, data_dir, folder)
    path = data_dir / AGENTS / f"{agent_id}.toml"
    _write(path, table)
    return path


def duplicate_agent(data_dir: Path, source_id: str, new_id: str, folder: Path = PROMPTS) -> Path:
    """A new app-made agent with the current version of ``source_id`` (shipped or app-made) under ``new_id``.

    Raises:
        PersonaError: no such source agent, or a bad or taken ``new_id``.
    """
    source = current_version(source_id, data_dir, folder)
    definition = dict(source.definition)
    definition["description"] = str(definition.get("description") or "") or f"A copy of {source_id}."
    return create_agent(data_dir, new_id, definition, folder, defaults=False)


def delete_agent(data_dir: Path, agent_id: str, folder: Path = PROMPTS) -> None:
    """Delete an app-made agent: its file and its versions (conversations with it stay stored).

    Raises:
        PersonaError: no such agent, or a shipped one (prompts/ files are edited in the repository).
    """
    path = agent_path(agent_id, folder, data_dir)
    if path is None:
        raise PersonaError(f"no agent {agent_id!r}")
    if path.parent == folder:
        raise PersonaError(f"{agent_id} is shipped in {folder.name}/; only agents made in the app can be deleted here")
    path.unlink()
    shutil.rmtree(versions.PersonaVersions(data_dir, agent_id).folder.parent, ignore_errors=True)


def export_agent(data_dir: Path, agent_id: str, version: int | None = None, folder: Path = PROMPTS) -> str:
    """The agent's current version (or ``version``) as one TOML file's text, ready to commit or import.

    Raises:
        PersonaError: no such agent.
        versions.VersionError: no such version.
    """
    current = current_version(agent_id, data_dir, folder)
    chosen = versions.PersonaVersions(data_dir, agent_id).get(version) if version else current
    definition = {"id": agent_id, **{k: v for k, v in chosen.definition.items() if k != "id"}}
    return to_toml(definition)


def import_agent(data_dir: Path, text: str | bytes, agent_id: str | None = None, folder: Path = PROMPTS) -> Path:
    """Add an agent from one file's text (an export, or a file written by hand) to the data folder.

    Args:
        data_dir: Forge's data folder (the agent goes to its ``agents/``).
        text: the TOML (at most :data:`MAX_AGENT_BYTES`).
        agent_id: its id; default the file's ``id`` key.
        folder: the shipped agents' folder (an id one of them has is taken).

    Raises:
        PersonaError: too large, not UTF-8 TOML, no id, an ``id`` key that is not ``agent_id``,
            a taken id, or an agent that does not load. Nothing is written then.
    """
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_AGENT_BYTES:
        raise PersonaError(f"an agent file is at most {MAX_AGENT_BYTES // 1024} KiB")
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PersonaError(f"not an agent file: {exc}") from None
    file_id = table.get("id")
    if agent_id and file_id and file_id != agent_id:
        raise PersonaError(f"the file's id is {file_id!r}, not {agent_id!r}")
    chosen = agent_id or file_id
    if not isinstance(chosen, str) or not chosen:
        raise PersonaError("the file has no id: give the agent one")
    return create_agent(data_dir, chosen, {k: v for k, v in table.items() if k != "id"}, folder, defaults=False)


def describe_agents(data_dir: Path, folder: Path = PROMPTS) -> list[dict[str, Any]]:
    """Every agent: id, name, where its file is ("shipped" or "app"), its tools and its own tools' kinds.

    An agent whose file does not load is listed with its error.
    """
    out = []
    for agent_id in list_personas(folder, data_dir):
        path = agent_path(agent_id, folder, data_dir)
        row: dict[str, Any] = {"id": agent_id, "where": "shipped" if path and path.parent == folder else "app"}
        try:
            current = current_version(agent_id, data_dir, folder)
            persona = persona_from(agent_id, current.definition, data_dir, folder, current.number)
            row |= {"name": persona.name, "tools": ", ".join(persona.tools),
                    "own tools": ", ".join(f"{t.name} ({t.kind})" for t in persona.own_tools),
                    "MCP servers": ", ".join(s.name for s in persona.mcp), "error": ""}
        except (PersonaError, versions.VersionError) as exc:
            row |= {"name": "", "tools": "", "own tools": "", "MCP servers": "", "error": str(exc)}
        out.append(row)
    return out
