"""The groups of Forge's settings, each a set of fields with their checks and what derives from them.

:class:`voiceforge.config.settings.Settings` joins them; every variable is in ``.env.sample``.
A field marked ``json_schema_extra=SECRET_FIELD`` is a secret: ``forge config`` masks it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent.parent
"""The repository root: `prompts/`, `db/` and `data/` live here."""
SECRET_FIELD = {"secret": True}
"""The marker of a secret setting (``Field(json_schema_extra=SECRET_FIELD)``)."""


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


def http_url(value: str | None) -> str | None:
    """An http(s) URL without its trailing slash; None for empty.

    Raises:
        ValueError: it does not start with http:// or https://.
    """
    if value in (None, ""):
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class ProviderSettings(BaseSettings):
    """OpenAI, Azure OpenAI or any OpenAI-compatible server (Ollama, vLLM, llama.cpp), Realtime, and the provider choice."""

    openai_api_key: str | None = Field(default=None, json_schema_extra=SECRET_FIELD)
    openai_base_url: str | None = Field(
        default=None, description="An OpenAI-compatible server (Ollama, vLLM, llama.cpp) for every stage; "
                                  "no key needed: it alone selects the openai providers.")
    openai_stt_base_url: str | None = Field(default=None, description="An OpenAI-compatible server for STT only.")
    openai_llm_base_url: str | None = Field(default=None, description="An OpenAI-compatible server for the LLM only.")
    openai_tts_base_url: str | None = Field(default=None, description="An OpenAI-compatible server for TTS only.")
    use_azure: bool = False
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: str | None = Field(default=None, json_schema_extra=SECRET_FIELD)
    azure_openai_deployment: str | None = None
    azure_api_version: str = "2024-10-21"
    openai_stt_model: str = "gpt-4o-mini-transcribe"
    openai_llm_model: str = "gpt-4o-mini"
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"
    openai_realtime_model: str = "gpt-realtime"
    realtime_voice: str = "marin"
    realtime_vad_threshold: float = Field(default=0.5, ge=0.3, le=0.95)
    realtime_silence_ms: int = Field(default=500, ge=100, le=5000)
    realtime_prefix_padding_ms: int = Field(default=300, ge=0, le=2000)
    forge_realtime_url: str = Field(
        default="ws://127.0.0.1:8766/v1",
        description="Forge's offline Realtime-compatible server (forge realtime-server), used when OpenAI is not configured.",
    )
    forge_prices: str | None = Field(
        default=None,
        description='Prices overriding voiceforge/cost.py\'s table, JSON: {"openai-llm:gpt-4o-mini": '
                    '{"per_1m_input_tokens": 0.15, "per_1m_output_tokens": 0.6}, "twilio:voice": {"per_minute": 0.014}}',
    )
    forge_realtime_phone: bool = Field(default=False, description="Run phone calls over a Realtime session.")

    # Provider choice: auto = OpenAI when keyed, offline otherwise (names: providers/registry.py,
    # which checks them when it resolves them).
    stt_provider: str = "auto"
    llm_provider: str = "auto"
    tts_provider: str = "auto"
    whisper_model: str | None = Field(
        default=None, description="Folder or model name that overrides the bundled Whisper base."
    )
    forge_whisper_window_s: float = Field(
        default=10.0, ge=10.0, le=30.0,
        description="Whisper's input window for utterances that fit (s): 30 is Whisper's own, 10 encodes "
                    "about 7 times faster with the same accuracy on our sets (bench/stt_window.py).")

    @field_validator("openai_base_url", "openai_stt_base_url", "openai_llm_base_url", "openai_tts_base_url",
                     "azure_openai_endpoint")
    @classmethod
    def _provider_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @property
    def openai_configured(self) -> bool:
        """True when OpenAI with a key, or Azure OpenAI, is configured.

        A keyless OpenAI-compatible base URL counts per stage (:meth:`openai_ready`); Realtime
        and the cost of cloud calls need this.
        """
        if self.use_azure:
            return bool(self.azure_openai_endpoint and self.azure_openai_api_key)
        return bool(self.openai_api_key)

    def openai_base_url_for(self, kind: str | None) -> str | None:
        """The base URL of stage ``kind`` ("stt", "llm", "tts"): its own, else ``OPENAI_BASE_URL``."""
        own = getattr(self, f"openai_{kind}_base_url", None) if kind else None
        return own or self.openai_base_url

    def openai_ready(self, kind: str) -> bool:
        """Stage ``kind`` can call an OpenAI-compatible API: Azure, a key, or a base URL (keyless local server)."""
        return self.openai_configured or bool(self.openai_base_url_for(kind))


class TelephonySettings(BaseSettings):
    """Twilio: the account, the number, the public URL it calls back, the REST timeouts."""

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = Field(default=None, json_schema_extra=SECRET_FIELD)
    twilio_phone_number: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_PHONE_NUMBER", "PHONE_NUMBER_FROM")
    )
    public_base_url: str | None = None
    twilio_api_base: str | None = Field(
        default=None, description="Twilio REST base URL instead of https://api.twilio.com (a local mock)."
    )
    twilio_connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    twilio_read_timeout_s: float = Field(default=8.0, gt=0, le=120)

    @field_validator("public_base_url", "twilio_api_base")
    @classmethod
    def _telephony_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("twilio_phone_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        from voiceforge.telephony.numbers import normalize_e164

        return normalize_e164(value)

    @property
    def twilio_configured(self) -> bool:
        """True when the account SID, auth token and phone number are all set."""
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_phone_number)

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


class ForgeSettings(BaseSettings):
    """Forge itself: its data and cache folders, the default persona, where the sidecar is."""

    forge_data_dir: Path = ROOT / "data"
    forge_cache_dir: Path = Path.home() / ".cache" / "voiceforge"
    forge_persona: str = "customer_service"
    forge_sidecar_url: str = "http://127.0.0.1:8765"
    forge_tool_delay_ms: int = Field(default=0, ge=0, le=60_000)
    forge_filler_after_ms: int = Field(default=600, ge=0, le=10_000)
    forge_mock_customers: int = Field(default=40, ge=1, le=100_000)
    forge_now: dt.datetime | None = Field(
        default=None,
        description="Fix the clock that tools and relative dates read (ISO 8601; naive means UTC), for demos "
                    "and evals; unset: the real clock. forge eval sets it for the servers an eval starts.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OpenTelemetry: send a span per turn (a child per stage) over OTLP/HTTP to this "
                                  "base URL (<url>/v1/traces); unset: no traces. No transcript or phone number is in them.")
    forge_instance: str = Field(
        default="", max_length=128,
        description="This sidecar's name on the calls it serves (default: the host name); sidecars sharing a "
                    "database need different names, since a restart closes the calls its namesake left open.",
    )
    forge_heartbeat_s: float = Field(
        default=5.0, ge=0.1, le=60,
        description="With REDIS_URL: how often each sidecar publishes its heartbeat and live conversations, s.")
    forge_instance_ttl_s: float = Field(
        default=15.0, ge=0.5, le=600,
        description="With REDIS_URL: a sidecar whose heartbeat is this old is gone, and another closes its calls "
                    "as failed, s (at least twice FORGE_HEARTBEAT_S).")

    @property
    def instance(self) -> str:
        """This sidecar's name on the calls it serves (``FORGE_INSTANCE``, else the host name)."""
        import socket

        return self.forge_instance or socket.gethostname()[:128]


class StorageSettings(ForgeSettings):
    """Storage and messaging: Forge's database, the mock business tables, Redis, Telegram, recordings."""

    database_url: str | None = None
    sql_dialect: str | None = Field(
        default=None, description="The seeds' way to pick a database: sqlite or postgresql (with SQLITE_URL / "
                                  "POSTGRES_URL; DATABASE_URL wins over both), or duckdb for the mock business "
                                  "tables (DUCKDB_URL, default <data dir>/business.duckdb).")
    business_database_url: str | None = Field(
        default=None, description="Where the mock business tables (customers, orders, appointments) live, when not "
                                  "in Forge's own database: a SQLite, PostgreSQL or duckdb:///path URL.")
    duckdb_url: str | None = Field(default=None, description="The seeds' DuckDB URL or file (with SQL_DIALECT=duckdb).")
    sqlite_url: str | None = Field(default=None, description="The seeds' SQLite URL (used with SQL_DIALECT=sqlite).")
    postgres_url: str | None = Field(default=None, description="The seeds' PostgreSQL URL (SQL_DIALECT=postgresql).")
    redis_url: str | None = None
    telegram_bot_token: str | None = Field(default=None, json_schema_extra=SECRET_FIELD)
    telegram_chat_id: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_url: str | None = Field(
        default=None, json_schema_extra=SECRET_FIELD, description="The seeds' https://api.telegram.org/bot<token>/sendMessage; its token and base "
                                  "are used when TELEGRAM_BOT_TOKEN is not set.")
    enable_recordings: bool = Field(
        default=False, description="Keep the caller's audio of each turn and whole-call recordings under "
                                   "<data dir>/recordings (the caller's voice: off unless asked for).")
    forge_keep_replies: bool = Field(
        default=True, description="Keep the agent's synthesized replies under <data dir>/recordings, so "
                                  "Conversations can replay what the caller heard.")
    forge_reply_retention_days: int = Field(
        default=30, ge=0, le=36500, description="Kept replies (and recordings) older than this are deleted when "
                                                "the sidecar starts, days (0: kept for ever).")

    @field_validator("sql_dialect")
    @classmethod
    def _dialect(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        value = value.strip().lower()
        if value not in ("sqlite", "postgres", "postgresql", "duckdb"):
            raise ValueError("must be sqlite, postgresql or duckdb")
        return value

    @field_validator("database_url")
    @classmethod
    def _not_duckdb(cls, value: str | None) -> str | None:
        if value and value.startswith("duckdb"):
            raise ValueError("DuckDB holds the mock business tables only: set BUSINESS_DATABASE_URL (or "
                             "SQL_DIALECT=duckdb) and leave DATABASE_URL to SQLite or PostgreSQL")
        return value

    @model_validator(mode="after")
    def _seed_telegram_url(self) -> StorageSettings:
        """TELEGRAM_URL (the seeds' form) gives the bot token and API base when they are not set."""
        if self.telegram_url and not self.telegram_bot_token:
            match = re.match(r"^(https?://[^/]+)/bot([^/]+)(/|$)", self.telegram_url)
            if match is None:
                raise ValueError("TELEGRAM_URL must look like https://api.telegram.org/bot<token>/sendMessage")
            self.telegram_api_base, self.telegram_bot_token = match.group(1), match.group(2)
        return self

    @property
    def database_url_resolved(self) -> str:
        """`DATABASE_URL`; else the seeds' SQL_DIALECT with SQLITE_URL / POSTGRES_URL; else `<data dir>/forge.db`."""
        dialect = (self.sql_dialect or "").lower()
        seed = (self.postgres_url if dialect in ("postgres", "postgresql") else
                self.sqlite_url if dialect == "sqlite" else self.postgres_url or self.sqlite_url)
        if self.database_url or seed:
            url = self.database_url or seed or ""
            # Bare postgres URLs get the psycopg 3 driver, the one we install.
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{self.forge_data_dir / 'forge.db'}"

    @property
    def business_database_url_resolved(self) -> str | None:
        """Where the mock business tables live when not in Forge's own database, else None.

        `BUSINESS_DATABASE_URL`; else, with the seeds' `SQL_DIALECT=duckdb`, `DUCKDB_URL` (a URL
        or a file path) or `<data dir>/business.duckdb`.
        """
        if self.business_database_url:
            return self.business_database_url
        if (self.sql_dialect or "").lower() != "duckdb":
            return None
        url = self.duckdb_url or str(self.forge_data_dir / "business.duckdb")
        return url if url.startswith("duckdb:") else f"duckdb:///{url}"


class PerimeterSettings(ForgeSettings):
    """The sidecar's perimeter (it faces the internet): the API key, origins, rate and size limits."""

    forge_api_key: str | None = Field(
        default=None, json_schema_extra=SECRET_FIELD, description="Bearer key for every non-Twilio route; generated into the data folder if unset."
    )
    forge_app_password: str | None = Field(
        default=None, json_schema_extra=SECRET_FIELD,
        description="The Streamlit app's password when no OIDC login is configured in .streamlit/secrets.toml; "
                    "with neither, the app serves only loopback.",
    )
    forge_drain_s: float | None = Field(
        default=None, ge=0, le=86_400,
        description="On SIGTERM the sidecar drains: /ready answers 503, new calls are refused, and live ones may "
                    "finish for this long before they hear the wrap-up, s (unset: FORGE_MAX_CALL_S).")
    forge_drain_redirect_url: str | None = Field(
        default=None, description="While draining or overloaded, new Twilio calls are redirected here (TwiML "
                                  "<Redirect>, e.g. another instance's /twilio/voice) instead of told to call back.")
    forge_refuse_with_503: bool = Field(
        default=False,
        description="While draining or overloaded, answer a new call's Twilio webhook with HTTP 503 and store "
                    "nothing, so a load balancer in front retries it on another sidecar (deploy/nginx/forge.conf: "
                    "proxy_next_upstream http_503 non_idempotent); Twilio alone would use the number's fallback URL. "
                    "Off: TwiML that says so and hangs up, or FORGE_DRAIN_REDIRECT_URL.")
    forge_max_load: float = Field(
        default=0.7, ge=0, le=1,
        description="New calls and sessions are refused past this load (0-1: the larger of this process's CPU "
                    "share of the machine and the STT queue's fill, FORGE_STT_QUEUE_FULL); 0 turns it off.")
    forge_stt_queue_full: int = Field(
        default=4, ge=1, le=1000, description="Utterances waiting for speech-to-text that count as full load.")
    forge_allowed_origins: str = Field(
        default="http://127.0.0.1:8501,http://localhost:8501",
        description="Comma-separated browser origins allowed to open the sidecar's websockets.",
    )
    forge_rate_calls_per_min: int = Field(default=5, ge=1, le=10_000)
    forge_rate_sms_per_min: int = Field(default=20, ge=1, le=10_000)
    forge_rate_sms_in_per_sender_per_min: int = Field(
        default=10, ge=1, le=10_000,
        description="Inbound texts one number gets answered per minute; more are stored, not answered.",
    )
    forge_max_turn_s: float = Field(default=60.0, gt=0, le=600)
    forge_max_upload_mb: float = Field(default=20.0, gt=0, le=500)
    forge_sms_allowlist: str = Field(
        default="", description="Comma-separated E.164 numbers an agent may text besides the caller's own."
    )
    forge_max_connections: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="Open connections (HTTP and websockets) one sidecar holds; a new one past it is refused with 503.",
    )
    forge_max_unauthenticated_per_address: int = Field(
        default=32, ge=1, le=100_000,
        description="Connections and requests from one address not yet authenticated; past it, 429.",
    )
    forge_header_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="A request's line and headers must arrive within this; else 408 and closed."
    )
    forge_body_idle_s: float = Field(
        default=10.0, gt=0, le=300, description="The longest pause inside a request body; else 408."
    )
    forge_body_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="A whole request body must arrive within this; else 408."
    )
    forge_first_message_s: float = Field(
        default=10.0, gt=0, le=300,
        description="An accepted websocket must send its first message within this; else closed with 1008.",
    )
    forge_trusted_proxies: str = Field(
        default="",
        description="Comma-separated proxy addresses or networks whose X-Forwarded-For is believed (none by default).",
    )

    @property
    def allowed_origins(self) -> list[str]:
        """Browser origins allowed on the sidecar's websockets (``FORGE_ALLOWED_ORIGINS``)."""
        return [o.strip().rstrip("/") for o in self.forge_allowed_origins.split(",") if o.strip()]

    @property
    def trusted_proxies(self) -> list[str]:
        """Proxy addresses or CIDR networks whose forwarded-for headers are believed (``FORGE_TRUSTED_PROXIES``)."""
        return [p.strip() for p in self.forge_trusted_proxies.split(",") if p.strip()]

    @property
    def sms_allowlist(self) -> set[str]:
        """E.164 numbers an agent may text besides the caller's own (``FORGE_SMS_ALLOWLIST``).

        Raises:
            ConfigError: an entry is not an E.164 number.
        """
        from voiceforge.telephony.numbers import normalize_e164

        out = set()
        for raw in self.forge_sms_allowlist.split(","):
            if raw.strip():
                try:
                    out.add(normalize_e164(raw))
                except ValueError as exc:
                    raise ConfigError(f"FORGE_SMS_ALLOWLIST: {exc}") from None
        return out

    @property
    def api_key_path(self) -> Path:
        """Where a generated API key is kept: ``<data dir>/api_key`` (mode 0600)."""
        return self.forge_data_dir / "api_key"

    @property
    def api_key(self) -> str | None:
        """``FORGE_API_KEY``, else the generated key in the data folder, else None."""
        if self.forge_api_key:
            return self.forge_api_key
        try:
            return self.api_key_path.read_text().strip() or None
        except OSError:
            return None

    def ensure_api_key(self) -> tuple[str, Path | None]:
        """The sidecar's API key, generated into the data folder on first use.

        Returns:
            (key, path of the generated key file, or None when FORGE_API_KEY set it).
        """
        if self.forge_api_key:
            return self.forge_api_key, None
        existing = self.api_key
        if existing:
            return existing, self.api_key_path
        self.forge_data_dir.mkdir(parents=True, exist_ok=True)
        key = "fk_" + secrets.token_urlsafe(32)
        path = self.api_key_path
        tmp = path.with_name(f".api_key.{os.getpid()}.tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(key + "\n")
        try:
            path.hardlink_to(tmp)  # atomic, and never replaces a key another process generated first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return self.api_key or key, path


class ConversationSettings(BaseSettings):
    """The live conversation loop: endpointing, speculation, budgets, failover, the phone reply caps."""

    forge_endpointing_ms: int = Field(
        default=500, ge=100, le=5000, description="Silence that ends an utterance with FORGE_TURN_DETECTOR=silence, ms.")
    forge_turn_detector: Literal["model", "silence"] = Field(
        default="model",
        description="model: the end of turn is decided at the first pause by Smart Turn v3.2 (the sound) and the "
                    "speculative transcript (the words); silence: a fixed silence (FORGE_ENDPOINTING_MS).")
    forge_vad: Literal["silero", "webrtc"] = Field(
        default="webrtc",
        description="What tells speech from silence under endpointing: Silero VAD (a neural model; a quiet tail, "
                    "steady background or a cough is not speech) or webrtcvad (an energy-and-pitch classifier).")
    forge_turn_max_wait_ms: int = Field(
        default=2000, ge=300, le=10_000,
        description="With the model detector: the longest silence an unfinished turn is waited for, ms.")
    forge_speculative_stt_ms: int = Field(
        default=200, ge=0, le=5000,
        description="Silence after which the utterance so far is transcribed ahead of the endpoint (0: off); "
                    "kept when the speaker stays quiet until the endpoint, dropped when they go on.")
    forge_llm_first_token_ms: int = Field(default=4000, ge=200, le=60_000)
    forge_failover: bool = Field(
        default=True, description="A cloud STT/LLM/TTS that fails (retryable error or no answer in time) falls back "
                                  "to the embedded provider until a health probe of it succeeds.")
    forge_failover_after_s: float = Field(
        default=5.0, gt=0, le=120, description="How long a cloud stage may take before it fails over, s.")
    forge_phone_reply_max_chars: int = Field(
        default=300, ge=40, le=10_000,
        description="Hard cap on a phone reply's characters, applied after the LLM at a sentence boundary "
                    "(the seed's 300-character rule).")
    forge_phone_reply_max_s: float = Field(
        default=20.0, ge=2, le=600, description="Hard cap on a phone reply's spoken seconds (sentence boundary).")
    forge_idle_s: float = Field(
        default=8.0, ge=0, le=600,
        description="The caller silent this long after the agent finished speaking hears the persona's reprompt "
                    "(0: never), s.")
    forge_idle_reprompts: int = Field(
        default=2, ge=0, le=20, description="Reprompts before a silent caller hears the goodbye and the call ends.")
    forge_max_call_s: float = Field(
        default=900.0, ge=0, le=86_400,
        description="A conversation this long hears the persona's wrap-up and is ended (0: no limit), s.")
    forge_min_interruption_ms: int = Field(
        default=300, ge=0, le=3000,
        description="Caller speech over the agent must last this long before it pauses the agent; shorter "
                    "sounds (a cough, a click) never do, ms.")
    forge_false_interruption_ms: int = Field(
        default=1500, ge=200, le=10_000,
        description="The agent paused for a possible interruption resumes its reply when no words (or only a "
                    "backchannel such as 'uh-huh') came within this long after the caller's sound ended, ms.")


class SqlSettings(BaseSettings):
    """run_sql over the mock business tables: its time, row and size budgets, its reader login."""

    forge_sql_timeout_ms: int = Field(default=2000, ge=50, le=60_000)
    forge_sql_max_rows: int = Field(default=50, ge=1, le=10_000)
    forge_sql_max_bytes: int = Field(default=64_000, ge=1_000, le=10_000_000)
    forge_sql_reader_url: str | None = Field(
        default=None, description="A read-only PostgreSQL login for run_sql instead of Forge's own reader role."
    )
    forge_http_tool_max_bytes: int = Field(
        default=262_144, ge=1_000, le=10_000_000,
        description="The largest answer an agent's declared HTTP tool reads, bytes (larger: a tool error).")
    forge_http_tools_allow_link_local: bool = Field(
        default=False, description="Let declared HTTP tools reach link-local addresses (169.254.0.0/16, fe80::/10), "
                                   "where cloud metadata services answer.")
    forge_mcp_app_commands: bool = Field(
        default=False, description="Let agents made, imported or edited in the app start MCP servers as programs "
                                   "([[mcp]] command); otherwise only the agent files in prompts/ may.")
    forge_mcp_timeout_s: float = Field(
        default=10.0, gt=0, le=120,
        description="How long an MCP server may take to start, list its tools or answer a call, s (an [[mcp]] "
                    "table's timeout_s wins).")
