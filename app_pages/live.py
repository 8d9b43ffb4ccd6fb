"""Live: a hands-free conversation over WebRTC (streamlit-webrtc), with barge-in.

The microphone streams to the one conversation loop (server/transports/webrtc.py) running in
this process; the agent's audio streams back while it is synthesised. Speak over the agent to
interrupt it. The panel below refreshes twice a second: state, microphone level, the live
transcript, tool calls and each turn's latency (from the last voiced frame of your speech).
"""

from __future__ import annotations

import statistics

import streamlit as st
from streamlit_webrtc import WebRtcMode, create_audio_sink_track, create_audio_source_track, webrtc_streamer

import forge_ui
from forge_ui.live import OUTPUT_RATE, LivePageController
from voiceforge.scoring import percentile

engine = forge_ui.engine()
persona = st.session_state.get("persona") or engine.settings.forge_persona
holder: dict = st.session_state.setdefault("live_holder", {"session": None})

st.title("🗣️ Live conversation")
st.caption("Press **Start**, allow the microphone, and talk. Speak over the agent to interrupt it. "
           "Use headphones or your browser's echo cancellation so the agent does not hear itself.")

BACKENDS = {"cascade": "Cascade: STT → LLM → TTS", "realtime": "Speech-to-speech (Realtime)"}
OPENAI_REALTIME_VOICES = ["marin", "cedar", "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"]
backend = st.radio("Backend", list(BACKENDS), format_func=BACKENDS.get, horizontal=True, key="live_backend",
                   help="Realtime uses OpenAI when a key is set, else Forge's offline Realtime-compatible server "
                        f"({engine.settings.forge_realtime_url}; `make run` starts it).")
with st.expander("Voice and turn-taking", expanded=False):
    detector = st.radio("End of turn", ["model", "silence"], horizontal=True, key="live_turn_detector",
                        index=0 if engine.settings.forge_turn_detector == "model" else 1,
                        format_func={"model": "Model: Smart Turn and your words decide at the first pause",
                                     "silence": "Silence: a fixed pause ends your turn"}.get,
                        help="The model waits through a pause mid-sentence (\"my number is …\") up to "
                             f"{engine.settings.forge_turn_max_wait_ms} ms; silence answers after the pause below.")
    cols = st.columns(3)
    realtime_cloud = backend == "realtime" and engine.settings.openai_configured
    voices = OPENAI_REALTIME_VOICES if realtime_cloud else list(engine.tts.capabilities.voices)
    voice = cols[0].selectbox("Voice", voices or ["(provider default)"], key=f"live_voice_{realtime_cloud}",
                              help="The persona's voice is used when it names none of these")
    threshold = cols[1].slider("VAD sensitivity", 0.3, 0.95, 0.5, 0.05, key="live_vad",
                               help="How sure the voice-activity detector must be that a frame is speech. "
                                    "Higher ignores more background noise.")
    silence_ms = cols[2].slider("Silence that ends your turn (ms)", 200, 2000,
                                int(engine.settings.forge_endpointing_ms), 50, key="live_silence",
                                disabled=detector == "model",
                                help="Endpointing: how long a pause must last before the agent answers.")


def on_microphone(frame):  # noqa: ANN001, ANN201 - aiortc's thread, no Streamlit context
    session = holder["session"]
    if session is not None and not session.closed:
        session.transport.on_microphone_frame(frame)


def next_agent_frame(pts, time_base):  # noqa: ANN001, ANN201
    session = holder["session"]
    if session is None or session.closed:
        import av
        import numpy as np

        silence = av.AudioFrame.from_ndarray(np.zeros((1, OUTPUT_RATE // 50), dtype=np.int16),
                                             format="s16", layout="mono")
        silence.sample_rate = OUTPUT_RATE
        return silence
    return session.transport.next_agent_frame(pts, time_base)


if backend == "cascade":
    # Load the speech models before a peer exists: loading holds the GIL for seconds, and
    # aiortc's thread, starved while streaming, would send in bursts that leave Chromium's jitter
    # buffer ~1 s deep for the rest of the call (and a barge-in as late).
    with st.spinner("Loading the speech models…"):
        engine.warm_up()
sink = create_audio_sink_track(callback=on_microphone, key="live-microphone")
source = create_audio_source_track(callback=next_agent_frame, key="live-agent", sample_rate=OUTPUT_RATE)
ctx = webrtc_streamer(
    key="live",
    mode=WebRtcMode.SENDRECV,
    source_audio_track=source,
    sink_audio_track=sink,
    media_stream_constraints={"audio": {"echoCancellation": True, "noiseSuppression": True,
                                        "autoGainControl": True}, "video": False},
    rtc_configuration={"iceServers": []},  # loopback and LAN need no STUN; nothing leaves the machine
    audio_html_attrs={"autoPlay": True, "controls": False},
)

session: LivePageController | None = holder["session"]
if ctx.state.playing and (session is None or session.closed):
    session = LivePageController(engine, forge_ui.background_loop(), persona, voice=voice if voice in voices else None,
                          vad_threshold=threshold, silence_ms=silence_ms, backend=backend)
    with st.spinner("Loading the speech models…"):
        session.start()
    holder["session"] = session
elif not ctx.state.playing and session is not None and not session.closed:
    session.stop()
if session is not None and not session.closed:
    session.configure(vad_threshold=threshold, silence_ms=silence_ms, turn_detector=detector)
    with st.popover("Keypad", help="Keys reach the agent as a phone caller's keypad does (DTMF)"):
        for row in ("123", "456", "789", "*0#"):
            for column, key in zip(st.columns(3), row, strict=True):
                if column.button(key, key=f"live_key_{key}", width="stretch"):
                    session.press(key)

STATE_BADGES = {"connecting": "⏳ connecting", "listening": "👂 listening", "thinking": "💭 thinking",
                "speaking": "🔊 speaking", "ended": "⏹️ ended"}


@st.fragment(run_every=0.7)
def live_panel() -> None:
    """State, level meter, transcript and latency; refreshed every 0.7 s (the waterfall of the latest turn
    only: rendering charts holds the GIL that aiortc's media thread needs to send audio on time)."""
    session: LivePageController | None = holder["session"]
    if session is None:
        st.info(f"Persona: {engine.persona(persona).name}. Press Start to begin.")
        return
    entries = session.transcript()
    turns = [e for e in entries if e["role"] == "agent" and e.get("done")]
    v2v = [v for e in turns if (v := forge_ui.first_audio_ms(e["timings_ms"])) is not None]
    cols = st.columns(4)
    cols[0].markdown(f"State: **{STATE_BADGES.get(session.state, session.state)}**")
    level = session.transport.level_db
    cols[1].progress(min(1.0, max(0.0, (level + 60) / 60)), text=f"Mic {level:.0f} dBFS")
    if v2v:
        cols[2].metric("Voice-to-voice p50", f"{statistics.median(v2v):.0f} ms",
                       help="From the last voiced frame of your speech to the first agent audio sent")
        cols[3].metric("p95", f"{percentile(v2v, 95):.0f} ms", help=f"{len(v2v)} turns")
    if session.error:
        st.error(f"The conversation stopped: {session.error}")
    if session.transport.hung_up:
        st.success("The agent ended the conversation. Press Stop, then Start for a new one.")
    latest = max((e["generation"] for e in turns), default=None)
    for entry in entries:
        with st.chat_message("user" if entry["role"] == "user" else "assistant"):
            if entry["role"] == "user":
                st.markdown(f"_{entry['text']}_" if entry["partial"] else entry["text"])
                continue
            text = entry["text"] or "…"
            if entry.get("interrupted"):
                text += "  _(interrupted)_"
            st.markdown(text)
            if entry.get("error"):
                st.warning(f"Error: {entry['error']}")
            forge_ui.show_tool_calls(entry["tool_calls"])
            forge_ui.show_cost(entry)
            timings = entry.get("timings_ms") or {}
            if timings and entry["generation"] == latest:
                forge_ui.show_waterfall(timings, key=f"live-{entry['generation']}", x_max=forge_ui.timeline_max(turns))
            elif (first := forge_ui.first_audio_ms(timings)) is not None:
                st.caption(f"⏱️ first agent audio {first:,.0f} ms after the end of speech")
    if session.backend == "cascade" and (line := forge_ui.dialogue_state_line(session.pipeline.dialogue_state())):
        st.caption(line)
    spent = sum((e.get("cost") or {}).get("total", 0.0) for e in turns)
    st.caption(f"This conversation: {len(turns)} turns · " + forge_ui.cost_line(spent, None))
    if session.backend == "realtime":
        st.caption("Speech-to-speech: the Realtime service finds the turns with its own VAD.")
    if session.conversation_id:
        st.caption(f"Stored as conversation {session.conversation_id} (see Conversations).")


live_panel()

# Off by default: its refresh would rerun beside the live panel's during a conversation.
if st.toggle("Show the calls and sessions live on every sidecar", key="live_everywhere_on",
             help="Phone calls, browser sockets and devices held by the sidecars (with REDIS_URL, every instance)"):
    forge_ui.live_everywhere("live")
