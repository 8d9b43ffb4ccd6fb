"""Voice Chat: record, upload or type; hear the reply; see the transcript, tools and waterfall."""

from __future__ import annotations

import streamlit as st

import forge_ui
from voiceforge.audio.codecs import AudioFormatError

engine = forge_ui.engine()
persona = st.session_state.get("persona") or engine.settings.forge_persona
if st.session_state.get("chat_persona") != persona:
    st.session_state.chat_pipeline = engine.pipeline(persona, channel="voice")
    st.session_state.chat_persona = persona
    st.session_state.chat_turns = []
pipeline = st.session_state.chat_pipeline

st.title("🎙️ Voice Chat")
st.caption(f"Persona: {pipeline.persona.name} — {pipeline.persona.description}")

col_rec, col_up = st.columns(2)
with col_rec:
    recorded = st.audio_input("Record", key="voice_record")
with col_up:
    uploaded = st.file_uploader("or upload audio (WAV, MP3, OGG, WebM, M4A, FLAC)", type=forge_ui.UPLOAD_TYPES,
                                key="voice_upload")
typed = st.chat_input("or type a message", key="voice_text")

clip = recorded or uploaded
clip_id = f"{getattr(clip, 'file_id', '')}-{clip.name}-{clip.size}" if clip is not None else None
result = None
try:
    if typed:
        with st.spinner("Thinking…"):
            result = forge_ui.run(pipeline.text_turn(typed, speak=True))
    elif clip is not None and clip_id != st.session_state.get("last_clip"):
        st.session_state.last_clip = clip_id
        with st.spinner("Transcribing and answering…"):
            result = forge_ui.run(pipeline.wav_turn(clip.getvalue(), speak=True))
except AudioFormatError as exc:
    st.error(f"That audio could not be read: {exc}")
if result is not None:
    st.session_state.chat_turns.append({
        "user_text": result.user_text, "assistant_text": result.reply, "error": result.error,
        "tool_calls": result.tool_calls, "timings_ms": result.timings_ms, "audio": result.reply_wav(),
        "cost": result.cost, "usage": result.usage.to_json(),
    })

turns = st.session_state.chat_turns
if not turns:
    st.info("Say something like “How many customers are there?” or “Where is my order? I'm customer 2.”")
summary = forge_ui.latency_summary(turns)
if summary:
    st.caption(f"This session: {summary} (the reply plays once it is whole: see “turn done”)")
scale = forge_ui.timeline_max(turns)
for i, turn in enumerate(turns):
    forge_ui.show_turn(turn, key=f"chat-{i}", autoplay=i == len(turns) - 1, x_max=scale)
