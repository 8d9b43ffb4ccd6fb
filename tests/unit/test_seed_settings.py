"""The seeds' settings beside Forge's: personalization.json keys, SQL_DIALECT with SQLITE_URL /
POSTGRES_URL, TELEGRAM_URL, PHONE_NUMBER_FROM, USE_AZURE; unknown keys named; `forge config`."""

from __future__ import annotations

import json
import logging

import pytest

from forge.cli import main
from voiceforge.agent.persona import load_persona
from voiceforge.config import ConfigError, Settings, get_settings, load_settings
from voiceforge.providers.registry import resolve

pytestmark = pytest.mark.unit


def test_a_seed_personalization_file_is_applied_and_an_unknown_key_named(tmp_path, caplog):
    (tmp_path / "personalization.json").write_text(json.dumps({
        "ai_assistant_name": "Maya", "patient_name": "Sam", "missing_data": "the date of birth",
        "sql_dialect": "sqlite", "system_message_suffix": "Always be brief.", "favourite_colour": "blue"}))
    with caplog.at_level(logging.INFO):
        persona = load_persona("customer_service", tmp_path)
    assert persona.name == "Maya" and "Maya" in persona.greeting
    assert "ask for the date of birth" in persona.system_prompt and "Always be brief." in persona.system_prompt
    assert "Sam" in persona.system_prompt + persona.greeting
    assert "'favourite_colour'" in caplog.text and "sql_dialect is not used" in caplog.text


def test_the_seeds_database_telegram_phone_and_azure_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("SQL_DIALECT", "sqlite")
    monkeypatch.setenv("SQLITE_URL", f"sqlite:///{tmp_path / 'seed.db'}")
    monkeypatch.setenv("POSTGRES_URL", "postgres://forge:pw@db:5432/forge")
    assert load_settings().database_url_resolved == f"sqlite:///{tmp_path / 'seed.db'}"
    monkeypatch.setenv("SQL_DIALECT", "postgresql")
    assert load_settings().database_url_resolved == "postgresql+psycopg://forge:pw@db:5432/forge"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///forge.db")
    assert load_settings().database_url_resolved == "sqlite:///forge.db"  # Forge's own wins
    monkeypatch.setenv("SQL_DIALECT", "oracle")
    with pytest.raises(ConfigError, match="SQL_DIALECT"):
        load_settings()
    monkeypatch.delenv("SQL_DIALECT")

    monkeypatch.setenv("TELEGRAM_URL", "https://api.telegram.org/bot123456:ABC-def/sendMessage")
    monkeypatch.setenv("PHONE_NUMBER_FROM", "+1 (415) 555-0100")
    settings = load_settings()
    assert settings.telegram_bot_token == "123456:ABC-def" and settings.telegram_api_base == "https://api.telegram.org"
    assert settings.twilio_phone_number == "+14155550100"

    monkeypatch.setenv("USE_AZURE", "true")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-test-key")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
    settings = load_settings()
    assert resolve("llm", settings) == "openai"
    from openai import AsyncAzureOpenAI

    from voiceforge.providers.openai_ import make_client

    assert isinstance(make_client(settings, kind="llm"), AsyncAzureOpenAI)


def test_forge_config_shows_sources_masks_secrets_and_names_unknown_keys(monkeypatch, tmp_path, capsys):
    env = tmp_path / ".env"
    env.write_text("OPENAI_API_KEY=sk-secret-value-1234\nPHONE_NUMBER_FROM=+14155550100\nOPENAI_MODLE=gpt-5\n")
    monkeypatch.setitem(Settings.model_config, "env_file", str(env))
    monkeypatch.setenv("FORGE_ENDPOINTING_MS", "450")
    get_settings.cache_clear()
    assert main(["config"]) == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert "sk-…" in rows["OPENAI_API_KEY"] and "secret" not in out and rows["OPENAI_API_KEY"].endswith(".env")
    assert rows["TWILIO_PHONE_NUMBER"].endswith(".env (PHONE_NUMBER_FROM)")
    assert "450" in rows["FORGE_ENDPOINTING_MS"] and rows["FORGE_ENDPOINTING_MS"].endswith("environment")
    assert rows["FORGE_PERSONA"].endswith("default")
    assert "OPENAI_MODLE in .env is not a Forge setting" in err
