"""Streamlit AppTest: each page renders; a typed Voice Chat turn answers and is stored."""

from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.app


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORGE_SIDECAR_URL", "http://127.0.0.1:9")  # nothing listens: shows "down"
    import streamlit as st

    st.cache_resource.clear()  # the engine is cached per process; each test has its own data dir
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=120)
    return at


def test_home_renders_with_provider_status(app):
    app.run()
    assert not app.exception
    assert app.title[0].value == "🔨 Forge"
    sidebar = " ".join(t.value for t in app.sidebar.text)
    assert "STT: whisper" in sidebar and "LLM: offline" in sidebar and "Sidecar: down" in sidebar


def test_voice_chat_typed_turn_answers_and_is_stored(app):
    app.run()
    app.switch_page("pages/voice_chat.py")
    app.run()
    assert not app.exception
    app.chat_input(key="voice_text").set_value("How many customers are there?").run()
    assert not app.exception
    texts = [m.value for m in app.markdown]
    assert "How many customers are there?" in texts and "The answer is 40." in texts
    from voiceforge.config import load_settings
    from voiceforge.store.db import get_database
    from voiceforge.store.models import ToolCallRecord, Turn

    db = get_database(load_settings().database_url_resolved)
    with db.sessions() as s:
        assert s.scalar(select(func.count(Turn.id))) == 1
        assert s.scalars(select(ToolCallRecord.name)).all() == ["run_sql"]
