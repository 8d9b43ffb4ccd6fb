"""Persona versions: every change is a numbered, immutable version with its diff; a changed file is
picked up as one; conversations record the version they ran on; any version can run again or be
made current (a rollback is a new version, history is never rewritten)."""

from __future__ import annotations

import json
import shutil

import pytest

from voiceforge.agent.persona import (
    PROMPTS,
    PersonaError,
    load_persona,
    reset_persona,
    rollback_persona,
    save_persona_edits,
)
from voiceforge.agent.versions import PersonaVersions, VersionError
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.store import conversations

pytestmark = pytest.mark.integration


def test_saves_resets_rollbacks_and_file_changes_are_versions(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(PROMPTS / "calm_concierge.toml", prompts / "calm_concierge.toml")
    data = tmp_path / "data"
    first = load_persona("calm_concierge", data, prompts)
    assert first.version == 1 and first.greeting == "Good day, this is Morgan. How may I assist you?"
    edited = save_persona_edits(data, "calm_concierge", {"greeting": "Hello from version two."}, prompts)
    assert (edited.number, edited.source, edited.note) == (2, "app", "edited greeting")
    assert '+  "greeting": "Hello from version two."' in edited.diff
    assert load_persona("calm_concierge", data, prompts).greeting == "Hello from version two."
    assert load_persona("calm_concierge", data, prompts, version=1).greeting == first.greeting  # any version runs

    file = prompts / "calm_concierge.toml"
    file.write_text(file.read_text().replace("How may I assist you?", "What brings you here?"))
    picked = load_persona("calm_concierge", data, prompts)  # the file changed: a new version, from the file
    assert picked.version == 3 and picked.greeting.endswith("What brings you here?")
    assert PersonaVersions(data, "calm_concierge").get(3).source == "file"

    back = rollback_persona(data, "calm_concierge", 2, prompts)
    assert (back.number, back.note) == (4, "rollback to version 2")
    assert load_persona("calm_concierge", data, prompts).greeting == "Hello from version two."
    assert reset_persona(data, "calm_concierge", prompts).number == 5
    assert load_persona("calm_concierge", data, prompts).greeting.endswith("What brings you here?")
    stored = json.loads((data / "personas" / "calm_concierge" / "versions" / "0002.json").read_text())
    assert stored["definition"]["greeting"] == "Hello from version two."  # kept whole, as saved
    with pytest.raises(VersionError, match="no version 9"):
        load_persona("calm_concierge", data, prompts, version=9)
    with pytest.raises(PersonaError, match="system prompt cannot be empty"):
        save_persona_edits(data, "calm_concierge", {"system_prompt": "  "}, prompts)
    assert PersonaVersions(data, "calm_concierge").numbers() == [1, 2, 3, 4, 5]  # a refused edit made none


def test_edits_kept_before_versions_become_version_two(tmp_path):
    data = tmp_path / "data"
    (data / "personas").mkdir(parents=True)
    (data / "personas" / "friendly_guide.json").write_text(json.dumps({"greeting": "An old edit."}))
    persona = load_persona("friendly_guide", data)
    assert persona.greeting == "An old edit." and persona.version == 2
    assert [v.source for v in PersonaVersions(data, "friendly_guide").all()] == ["file", "app"]
    assert not (data / "personas" / "friendly_guide.json").exists()


async def test_conversations_record_the_version_they_ran_on(tmp_path):
    engine = Engine(load_settings(forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'v.db'}"))
    engine.ensure_mock_data()
    first = engine.pipeline("customer_service", channel="api")
    await first.text_turn("hello")
    save_persona_edits(tmp_path, "customer_service", {"greeting": "Version two says hi."})
    second = engine.pipeline("customer_service", channel="api")
    await second.text_turn("hello")
    old = engine.pipeline("customer_service", channel="api", persona_version=1)
    await old.text_turn("hello")
    versions = [conversations.get_conversation(engine.db, p.conversation_id)["persona_version"]
                for p in (first, second, old)]
    assert versions == [1, 2, 1]
