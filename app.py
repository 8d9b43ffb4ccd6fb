"""Forge: the Streamlit entry point. st.navigation router plus the shared sidebar."""

from __future__ import annotations

import requests
import streamlit as st

import forge_ui
from forge_ui.login import require_login
from voiceforge.config import get_settings

st.set_page_config(page_title="Forge", page_icon="🔨", layout="wide")
require_login(get_settings())  # nothing below is drawn for a visitor who has not signed in

pages = [
    st.Page("app_pages/home.py", title="Home", icon="🏠", default=True, url_path="home"),
    st.Page("app_pages/voice_chat.py", title="Voice Chat", icon="🎙️", url_path="voice-chat"),
    st.Page("app_pages/live.py", title="Live", icon="🗣️", url_path="live"),
    st.Page("app_pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page("app_pages/evals.py", title="Evals", icon="🧪", url_path="evals"),
    st.Page("app_pages/tools.py", title="Tools", icon="🔧", url_path="tools"),
    st.Page("app_pages/phone.py", title="Phone & SMS", icon="📞", url_path="phone"),
    st.Page("app_pages/devices.py", title="Devices", icon="📟", url_path="devices"),
    st.Page("app_pages/conversations.py", title="Conversations", icon="🗂️", url_path="conversations"),
    st.Page("app_pages/personas.py", title="Personas & settings", icon="🎭", url_path="personas"),
]
nav = st.navigation(pages)

engine = forge_ui.engine()
with st.sidebar:
    names = forge_ui.persona_names()
    st.selectbox("Persona", list(names), key="persona", format_func=names.get,
                 index=list(names).index(engine.settings.forge_persona) if engine.settings.forge_persona in names else 0)
    status = engine.describe()
    st.caption("Providers")
    for kind in ("stt", "llm", "tts"):
        st.text(f"{kind.upper()}: {status[kind]}")
    if status["llm"].startswith("offline"):
        st.info("LLM: Forge's offline brain (deterministic, tool-aware). Set OPENAI_API_KEY for a real model.")
    st.caption("Database")
    st.text(status["database"])
    try:
        healthy = requests.get(engine.settings.forge_sidecar_url + "/health", timeout=1).ok
    except requests.RequestException:
        healthy = False
    st.text(f"Sidecar: {'up' if healthy else 'down'} ({engine.settings.forge_sidecar_url})")
    st.text(f"Twilio: {'configured' if engine.settings.twilio_configured else 'not configured'}")

nav.run()
