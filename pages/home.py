"""Home: what Forge is, and where to start."""

import streamlit as st

st.title("🔨 Forge")
st.markdown(
    "A workbench for prototyping voice agents: talk to an agent and see each stage's latency, "
    "give it tools, call a phone with it, and compare ways of building it.\n\n"
    "Runs offline with no keys (Whisper, Piper, the offline brain, SQLite); "
    "OpenAI, Twilio and PostgreSQL come in by configuration."
)
st.page_link("pages/voice_chat.py", label="Start on Voice Chat", icon="🎙️")
