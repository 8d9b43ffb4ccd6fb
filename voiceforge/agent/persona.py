"""Personas: data files in `prompts/` (TOML), plus the editable personalization.

A persona file holds: ``id``, ``name``, ``description``, ``greeting``, ``system_prompt``,
``tools`` (names, or ["*"] for all), ``phone_max_sentences`` (reply length limit on calls),
``domain_words`` (spelling hints for STT), ``realtime`` (its phone calls run over a Realtime
session) and ``[voice]`` with one voice per provider.
A persona with ``personalized = true`` fills ``{assistant_name}``, ``{user_name}``,
``{missing_data}`` and ``{system_message_suffix}`` from the personalization file.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from voiceforge.config import ROOT

PROMPTS = ROOT / "prompts"
DEFAULT_PERSONALIZATION = PROMPTS / "personalization.json"
PERSONALIZATION_KEYS = ("assistant_name", "user_name", "missing_data", "system_message_suffix")


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

    def prompt_for(self, channel: str) -> str:
        """The system prompt, with the reply-length rule for phone calls added."""
        if channel == "phone":
            return (
                self.system_prompt
                + f"\n\nYou are on a phone call: answer in at most {self.phone_max_sentences} short"
                " sentences, with no lists, markdown or emoji."
            )
        return self.system_prompt


def load_personalization(data_dir: Path) -> dict[str, str]:
    """The personalization: `<data dir>/personalization.json` over `prompts/personalization.json`."""
    values = json.loads(DEFAULT_PERSONALIZATION.read_text())
    saved = data_dir / "personalization.json"
    if saved.exists():
        try:
            values.update({k: v for k, v in json.loads(saved.read_text()).items() if k in PERSONALIZATION_KEYS})
        except json.JSONDecodeError as exc:
            raise PersonaError(f"{saved} is not valid JSON: {exc}") from None
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
    name, greeting, prompt = raw["name"], raw["greeting"], raw["system_prompt"]
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
        domain_words=list(raw.get("domain_words", [])) + ([name] if raw.get("personalized") else []),
        voice=dict(raw.get("voice", {})),
        kid_safe=bool(raw.get("kid_safe", False)),
        realtime=bool(raw.get("realtime", False)),
    )


def list_personas(folder: Path = PROMPTS) -> list[str]:
    """Ids of every persona file in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.toml"))
