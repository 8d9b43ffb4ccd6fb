"""Home: what Forge is, status cards, and the call button."""

from __future__ import annotations

import streamlit as st

import forge_ui
from voiceforge.store import conversations

engine = forge_ui.engine()
st.title("🔨 Forge")
st.markdown(
    "**A workbench for prototyping voice agents.** Talk to an agent and see how long each stage takes.  \n"
    "Give it tools, call a phone with it, text with it, and read back every conversation.  \n"
    "Runs offline with no keys; OpenAI, Twilio and PostgreSQL come in by configuration."
)


@st.cache_data(ttl=5)
def counts(url: str) -> dict[str, int]:
    return conversations.counts(engine.db)


status = engine.describe()
cols = st.columns(4)
cols[0].metric("Speech to text", status["stt"].split(" ")[0])
cols[1].metric("LLM", "offline brain" if status["llm"].startswith("offline") else status["llm"].split(" ")[0])
cols[2].metric("Text to speech", status["tts"].split(" ")[0])
cols[3].metric("Database", engine.db.dialect)
cols = st.columns(4)
for col, (name, value) in zip(cols, counts(engine.db.url).items(), strict=True):
    col.metric(name.capitalize(), value)

st.subheader("Call a phone")
forge_ui.call_widget("home")

st.subheader("Start here")
st.page_link("app_pages/voice_chat.py", label="Talk to the agent", icon="🎙️")
st.page_link("app_pages/tools.py", label="Try the tools", icon="🔧")
st.page_link("app_pages/phone.py", label="Phone & SMS, and the call simulator", icon="📞")
