"""Settings from the environment and `.env`, with one cached getter.

Every variable is listed in `.env.sample`. ``auto`` providers mean OpenAI when a key (or an
Azure set) is configured and the embedded offline providers otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: `prompts/`, `db/` and `data/` live here."""


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """Forge's configuration. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # OpenAI, Azure OpenAI or any OpenAI-compatible server (Ollama, vLLM, llama.cpp).
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    use_azure: bool = False
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: str | None = None
    azure_openai_deployment: str | None = None
    azure_api_version: str = "2024-10-21"
    openai_stt_model: str = "gpt-4o-mini-transcribe"
    openai_llm_model: str = "gpt-4o-mini"
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"
    openai_realtime_model: str = "gpt-realtime"

    # Provider choice: auto = OpenAI when keyed, offline otherwise.
    stt_provider: Literal["auto", "openai", "whisper", "pocketsphinx"] = "auto"
    llm_provider: Literal["auto", "openai", "offline"] = "auto"
    tts_provider: Literal["auto", "openai", "piper"] = "auto"
    whisper_model: str | None = Field(
        default=None, description="Folder or model name that overrides the bundled Whisper base."
    )

    # Twilio.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_phone_number: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_PHONE_NUMBER", "PHONE_NUMBER_FROM")
    )
    public_base_url: str | None = None

    # Storage and messaging.
    database_url: str | None = None
    redis_url: str | None = None
    telegram_bot_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    enable_recordings: bool = False

    # Forge itself.
    forge_data_dir: Path = ROOT / "data"
    forge_cache_dir: Path = Path.home() / ".cache" / "voiceforge"
    forge_persona: str = "customer_service"
    forge_sidecar_url: str = "http://127.0.0.1:8765"
    forge_tool_delay_ms: int = Field(default=0, ge=0, le=60_000)
    forge_filler_after_ms: int = Field(default=600, ge=0, le=10_000)
    forge_mock_customers: int = Field(default=40, ge=1, le=100_000)

    @field_validator("openai_base_url", "public_base_url", "azure_openai_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("twilio_phone_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        from voiceforge.telephony.numbers import normalize_e164

        return normalize_e164(value)

    # --- derived -------------------------------------------------------------------------
    @property
    def openai_configured(self) -> bool:
        """True when OpenAI (or Azure OpenAI, or a compatible base URL) can be called."""
        if self.use_azure:
            return bool(self.azure_openai_endpoint and self.azure_openai_api_key)
        return bool(self.openai_api_key)

    @property
    def twilio_configured(self) -> bool:
        """True when the account SID, auth token and phone number are all set."""
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_phone_number)

    @property
    def database_url_resolved(self) -> str:
        """`DATABASE_URL`, or the SQLite file `<data dir>/forge.db`."""
        if self.database_url:
            url = self.database_url
            # Bare postgres URLs get the psycopg 3 driver, the one we install.
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{self.forge_data_dir / 'forge.db'}"

    def resolve_provider(self, kind: Literal["stt", "llm", "tts"]) -> str:
        """The concrete provider name for ``kind``, with ``auto`` resolved.

        Raises:
            ConfigError: an OpenAI provider was asked for without its key.
        """
        chosen = getattr(self, f"{kind}_provider")
        offline = {"stt": "whisper", "llm": "offline", "tts": "piper"}[kind]
        if chosen == "auto":
            return "openai" if self.openai_configured else offline
        if chosen == "openai" and not self.openai_configured:
            missing = (
                "AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY" if self.use_azure else "OPENAI_API_KEY"
            )
            raise ConfigError(f"{kind.upper()}_PROVIDER=openai needs {missing}")
        return chosen

    def require_twilio(self) -> None:
        """Raises ConfigError naming each Twilio variable that is missing."""
        missing = [
            name
            for name, value in (
                ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                ("TWILIO_PHONE_NUMBER", self.twilio_phone_number),
            )
            if not value
        ]
        if missing:
            raise ConfigError("Twilio is not configured: set " + ", ".join(missing))


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment, `.env` and ``overrides``.

    Raises:
        ConfigError: a value is invalid; the message names each offending variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "?"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, built once (tests call ``get_settings.cache_clear()``)."""
    return load_settings()
