"""Voice Chat: record, upload or type; hear the reply; see the transcript, tools, cost and waterfall.

The conversation survives a reload: its id is kept in the page's URL (``?conversation=N``) and
the stored turns are read back. Switching persona with turns on screen asks first, since a new
persona starts a new conversation.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import forge_ui
from voiceforge.audio.codecs import AudioFormatError
from voiceforge.store import conversations as store

engine = forge_ui.engine()
persona = st.session_state.get("persona") or engine.settings.forge_persona


def start(persona_id: str, conversation_id: int | None = None) -> None:
    """A new conversation (or the stored one ``conversation_id``) for ``persona_id``."""
    turns = []
    if conversation_id is not None:
        pipeline = engine.resume(conversation_id, persona_id, channel="voice")
        for t in store.turns_of(engine.db, conversation_id):
            audio = Path(t["reply_audio_path"]) if t["reply_audio_path"] else None
            turns.append({**t, "audio": audio.read_bytes() if audio and audio.exists() else None})
    else:
        pipeline = engine.pipeline(persona_id, channel="voice")
    st.session_state.chat_pipeline, st.session_state.chat_persona = pipeline, pipeline.persona.id
    st.session_state.chat_turns = turns


def keep_persona() -> None:
    st.session_state.persona = st.session_state.chat_persona


if "chat_pipeline" not in st.session_state:
    stored = st.query_params.get("conversation")
    try:
        start(persona, int(stored) if stored and stored.isdigit() else None)
    except LookupError:  # deleted meanwhile: a new one
        st.query_params.pop("conversation", None)
        start(persona)
elif st.session_state.chat_persona != persona:
    if st.session_state.chat_turns:
        names = forge_ui.persona_names()
        st.warning(f"Switching to {names.get(persona, persona)} starts a new conversation; this one stays stored "
                   "under Conversations.")
        cols = st.columns(2)
        if cols[0].button("Switch and start over", key="chat_switch", type="primary"):
            st.query_params.pop("conversation", None)
            start(persona)
            st.rerun()
        cols[1].button(f"Keep {names.get(st.session_state.chat_persona, st.session_state.chat_persona)}",
                       key="chat_keep", on_click=keep_persona)
        st.stop()
    start(persona)
pipeline = st.session_state.chat_pipeline

st.title("🎙️ Voice Chat")
head = st.columns([4, 1])
head[0].caption(f"Persona: {pipeline.persona.name} — {pipeline.persona.description}")
if head[1].button("New conversation", key="chat_new"):
    st.query_params.pop("conversation", None)
    start(pipeline.persona.id)
    st.rerun()

col_rec, col_up = st.columns(2)
with col_rec:
    recorded = st.audio_input("Record", key="voice_record")
with col_up:
    uploaded = st.file_uploader("or upload audio (WAV, MP3, OGG, WebM, M4A, FLAC)", type=forge_ui.UPLOAD_TYPES,
                                key="voice_upload")
typed = st.chat_input("or type a message", key="voice_text")


def clip_id(clip) -> str | None:  # noqa: ANN001
    return f"{getattr(clip, 'file_id', '')}-{clip.name}-{clip.size}" if clip is not None else None


# Whichever of the recorder and the uploader changed since the last turn is the new clip (an upload
# after a recording is answered, not shadowed by the recording still in its widget).
seen = st.session_state.setdefault("chat_seen", {})
fresh = [(name, clip) for name, clip in (("record", recorded), ("upload", uploaded))
         if clip is not None and clip_id(clip) != seen.get(name)]
result = None
try:
    if typed:
        with st.spinner("Thinking…"):
            result = forge_ui.run(pipeline.text_turn(typed, speak=True))
    elif fresh:
        name, clip = fresh[-1]
        for other, other_clip in fresh:
            seen[other] = clip_id(other_clip)
        with st.spinner("Transcribing and answering…"):
            result = forge_ui.run(pipeline.wav_turn(clip.getvalue(), speak=True))
except AudioFormatError as exc:
    st.error(f"That audio could not be read: {exc}")
if result is not None:
    st.session_state.chat_turns.append({
        "user_text": result.user_text, "assistant_text": result.reply, "error": result.error,
        "tool_calls": result.tool_calls, "timings_ms": result.timings_ms, "audio": result.reply_wav(),
        "cost": result.cost, "usage": result.usage.to_json(), "failover": result.failover,
    })
    if pipeline.conversation_id:
        st.query_params["conversation"] = str(pipeline.conversation_id)

turns = st.session_state.chat_turns
if not turns:
    st.info("Say something like “How many customers are there?” or “Where is my order? I'm customer 2.”")
summary = forge_ui.latency_summary(turns)
if summary:
    spent = sum((t.get("cost") or {}).get("total", t.get("cost_usd") or 0.0) for t in turns)
    st.caption(f"This conversation: {summary} (the reply plays once it is whole: see “turn done”) · "
               + forge_ui.cost_line(spent, None))
scale = forge_ui.timeline_max(turns)
for i, turn in enumerate(turns):
    forge_ui.show_turn(turn, key=f"chat-{i}", autoplay=i == len(turns) - 1 and result is not None, x_max=scale)
