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

Edits made on the settings page (system prompt, greeting, voices, turn detection) are kept in
``<data dir>/personas/<id>.json`` and laid over the file, so the repository's files stay as shipped.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from voiceforge.agent import knowledge
from voiceforge.config import ROOT

log = logging.getLogger(__name__)
PROMPTS = ROOT / "prompts"
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
    """Facts and FAQ pairs (the file's ``facts`` and ``faq``, or the settings page's edits)."""
    keypad: dict[str, str] = field(default_factory=dict)
    """Keypad digits (or digit strings ended by ``#``) mapped to what the caller means by them,
    e.g. ``{"1": "I want to check my order"}``; others reach the agent as "I pressed 1 on the keypad"."""

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


OVERRIDE_KEYS = ("system_prompt", "greeting", "voice", "endpointing_ms", "vad_threshold", "facts", "faq")
"""What the settings page may change per persona."""


def persona_overrides(data_dir: Path, persona_id: str) -> dict:
    """The saved edits of ``persona_id`` (empty when none).

    Raises:
        PersonaError: the overrides file is not valid JSON.
    """
    path = data_dir / "personas" / f"{persona_id}.json"
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PersonaError(f"{path} is not valid JSON: {exc}") from None
    return {k: v for k, v in raw.items() if k in OVERRIDE_KEYS} if isinstance(raw, dict) else {}


def save_persona_overrides(data_dir: Path, persona_id: str, values: dict) -> Path:
    """Keep edits of a persona (only :data:`OVERRIDE_KEYS`; None or "" drops one) in the data folder.

    Raises:
        PersonaError: no such persona, an empty system prompt, an endpointing silence outside
            100–5,000 ms or a VAD threshold outside 0.3–0.95.
    """
    load_persona(persona_id, data_dir)  # it must exist
    clean = {k: v for k, v in values.items() if k in OVERRIDE_KEYS and v not in (None, "", {})}
    if "system_prompt" in values and not str(values["system_prompt"] or "").strip():
        raise PersonaError("the system prompt cannot be empty")
    if "endpointing_ms" in clean and not 100 <= int(clean["endpointing_ms"]) <= 5000:
        raise PersonaError("endpointing silence must be 100-5000 ms")
    if "vad_threshold" in clean and not 0.3 <= float(clean["vad_threshold"]) <= 0.95:
        raise PersonaError("VAD threshold must be 0.3-0.95")
    for key in ("facts", "faq"):  # an emptied list is an edit too: the persona then knows nothing
        if isinstance(values.get(key), list):
            clean[key] = values[key]
    try:
        knowledge.entries(clean.get("facts", []), clean.get("faq", []))
    except knowledge.KnowledgeError as exc:
        raise PersonaError(str(exc)) from None
    folder = data_dir / "personas"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{persona_id}.json"
    path.write_text(json.dumps(clean, indent=2))
    return path


def load_persona(persona_id: str, data_dir: Path, folder: Path = PROMPTS) -> Persona:
    """Load ``folder/<persona_id>.toml``.

    Raises:
        PersonaError: no such file, invalid TOML, or a required field missing.
    """
    path = folder / f"{persona_id}.toml"
    if not path.is_file() or not persona_id.replace("_", "").isalnum():
        raise PersonaError(f"no persona {persona_id!r} in {folder}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PersonaError(f"{path.name}: {exc}") from None
    missing = [k for k in ("name", "greeting", "system_prompt") if k not in raw]
    if missing:
        raise PersonaError(f"{path.name} lacks {', '.join(missing)}")
    overrides = persona_overrides(data_dir, persona_id)
    name = raw["name"]
    greeting = overrides.get("greeting") or raw["greeting"]
    prompt = overrides.get("system_prompt") or raw["system_prompt"]
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
        voice={**dict(raw.get("voice", {})), **dict(overrides.get("voice") or {})},
        kid_safe=bool(raw.get("kid_safe", False)),
        realtime=bool(raw.get("realtime", False)),
        endpointing_ms=int(overrides["endpointing_ms"]) if overrides.get("endpointing_ms") else None,
        vad_threshold=float(overrides["vad_threshold"]) if overrides.get("vad_threshold") else None,
        sql_for_unknown_texters=bool(raw.get("sql_for_unknown_texters", False)),
        knowledge=_knowledge(raw, overrides, path.name),
        **_turn_taking(raw, path.name),
    )


KEYPAD_KEYS = frozenset("0123456789*#")


def _knowledge(raw: dict, overrides: dict, file: str) -> list[knowledge.Entry]:
    """The persona's facts and FAQ: the settings page's edits of each, else the file's.

    Raises:
        PersonaError: either is malformed (see :func:`voiceforge.agent.knowledge.entries`).
    """
    try:
        return knowledge.entries(overrides.get("facts", raw.get("facts", [])), overrides.get("faq", raw.get("faq", [])))
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


def list_personas(folder: Path = PROMPTS) -> list[str]:
    """Ids of every persona file in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.toml"))
