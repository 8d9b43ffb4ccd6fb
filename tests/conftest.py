"""Shared fixtures. The developer's `.env` and keys never reach the tests."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from voiceforge.config import Settings, get_settings

_KEEP = {"FORGE_CACHE_DIR", "FORGE_TEST_POSTGRES_URL", "FORGE_MAX_LOAD"}
# Load-aware admission off: many servers share one test process, whose CPU is no one sidecar's
# load (tests/integration/test_drain_and_load.py turns it on for its own sidecar). Set for the
# whole session, so servers that module-scoped fixtures build see it too.
os.environ["FORGE_MAX_LOAD"] = "0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Drop every Forge/OpenAI/Twilio variable and `.env`; point data at a temp folder."""
    names = {name.upper() for name in Settings.model_fields} | {"PHONE_NUMBER_FROM"}
    for name in list(os.environ):
        if name.upper() in names and name.upper() not in _KEEP:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path_factory.getbasetemp() / "forge-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@functools.lru_cache(maxsize=256)
def _piper(text: str) -> tuple[bytes, int]:
    from piper.config import SynthesisConfig

    from voiceforge.providers.local import PiperTTS, load_piper

    voice = load_piper()  # synchronous, so async tests can call it too
    # Piper samples noise inside the model; zero noise makes test speech the same every run.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    return b"".join(c.audio_int16_bytes for c in voice.synthesize(text, config)), PiperTTS.sample_rate


@pytest.fixture(scope="session")
def speak():
    """speak(text) -> (PCM16, sample rate): real speech from Piper, cached per text."""
    return _piper


from voiceforge.scoring import wer, words  # noqa: E402,F401 - the tests' WER is the product's


def sqlite_url(folder: Path) -> str:
    """A SQLite URL in ``folder``."""
    return f"sqlite:///{folder / 'forge.db'}"


_worker_databases: dict[str, str] = {}


def postgres_url() -> str | None:
    """FORGE_TEST_POSTGRES_URL (CI sets it after starting PostgreSQL), or None.

    Under pytest-xdist each worker gets its own database beside that one (``forge_test_gw0``, …),
    created on first use: the tests reset the public schema, which must not pull tables out
    from under the other worker.
    """
    url = os.environ.get("FORGE_TEST_POSTGRES_URL") or None
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if url is None or not worker:
        return url
    if worker not in _worker_databases:
        from sqlalchemy import create_engine, make_url, text

        base = make_url(url).set(drivername="postgresql+psycopg")
        name = f"{base.database}_{worker}"
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        _worker_databases[worker] = make_url(url).set(database=name).render_as_string(hide_password=False)
    return _worker_databases[worker]


def _database(dialect: str, folder: Path):
    from voiceforge.store.db import Database

    if dialect == "duckdb":
        db = Database(f"duckdb:///{folder / 'business.duckdb'}")
    elif dialect == "sqlite":
        db = Database(sqlite_url(folder))
    else:
        url = postgres_url()
        if not url:
            pytest.skip("PostgreSQL not available: set FORGE_TEST_POSTGRES_URL (CI does)")
        db = Database(url)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    db.migrate()
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path):
    """A migrated, empty Database on SQLite and on PostgreSQL (when FORGE_TEST_POSTGRES_URL is set)."""
    db = _database(request.param, tmp_path)
    yield db
    db.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "duckdb"])
def business_database(request: pytest.FixtureRequest, tmp_path: Path):
    """An empty Database that can hold the mock business tables: SQLite, PostgreSQL, DuckDB."""
    db = _database(request.param, tmp_path)
    yield db
    db.engine.dispose()
