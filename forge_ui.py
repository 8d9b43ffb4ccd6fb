"""Shared Streamlit helpers for app.py and app_pages/: cached engine, async bridge, waterfall.

The core is async; Streamlit scripts are not. One background event loop (per process) runs
every coroutine, so provider clients bound to a loop keep working across reruns.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pandas as pd
import streamlit as st

from voiceforge.engine import Engine

UPLOAD_TYPES = ["wav", "mp3", "ogg", "opus", "webm", "m4a", "mp4", "flac"]
"""What the uploaders take (decoded by voiceforge/audio/decode.py)."""

STAGES = ["stt_final", "llm_first_token", "first_sentence", "tts_first_audio", "first_frame_sent", "turn_done"]
STAGE_LABELS = {"stt_final": "STT", "llm_first_token": "LLM first token", "first_sentence": "first sentence",
                "tts_first_audio": "TTS first audio", "first_frame_sent": "first audio sent", "turn_done": "turn done"}


@st.cache_resource
def background_loop() -> asyncio.AbstractEventLoop:
    """The process-wide asyncio loop (a daemon thread) that runs every coroutine of the app."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="forge-async").start()
    return loop


def run(coro) -> Any:  # noqa: ANN001
    """Run a coroutine on Forge's background loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop()).result()


@st.cache_resource
def engine() -> Engine:
    """The process-wide Engine (models load lazily on first use)."""
    eng = Engine()
    eng.ensure_mock_data()
    return eng


def waterfall(timings: dict[str, float]) -> pd.DataFrame:
    """Stage bars for a latency waterfall: stage, start ms, end ms (after speech end)."""
    rows, start = [], 0.0
    for stage in STAGES:
        if stage in timings:
            end = float(timings[stage])
            rows.append({"stage": STAGE_LABELS[stage], "start_ms": start, "end_ms": max(end, start + 1)})
            start = end
    return pd.DataFrame(rows)


def show_waterfall(timings: dict[str, float], key: str) -> None:
    """Draw the per-turn latency waterfall (Altair bars, one per stage)."""
    import altair as alt

    df = waterfall(timings)
    if df.empty:
        return
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y=alt.Y("stage:N", sort=list(df["stage"]), title=None),
            x=alt.X("start_ms:Q", title="ms after speech end"),
            x2="end_ms:Q",
            color=alt.Color("stage:N", legend=None),
            tooltip=["stage", "start_ms", "end_ms"],
        )
        .properties(height=40 * len(df))
    )
    st.altair_chart(chart, key=key, width="stretch")


def show_tool_calls(tool_calls: list[dict]) -> None:
    """Each tool call with its arguments and result or error."""
    for call in tool_calls:
        label = f"🔧 {call['name']}" + (" — failed" if call.get("error") else "")
        with st.expander(label, expanded=bool(call.get("error"))):
            st.json({"arguments": call.get("arguments"), "result": call.get("result"), "error": call.get("error")},
                    expanded=True)


def sidecar(method: str, path: str, **kwargs: Any) -> tuple[bool, Any]:
    """Call the sidecar API with its key: (ok, JSON body or an error message)."""
    import requests

    settings = engine().settings
    url = settings.forge_sidecar_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        response = requests.request(method, url, timeout=kwargs.pop("timeout", 15), headers=headers, **kwargs)
    except requests.RequestException:
        return False, f"the sidecar at {engine().settings.forge_sidecar_url} is not reachable (make run starts it)"
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if not response.ok:
        detail = body.get("detail") if isinstance(body, dict) else body
        return False, detail if isinstance(detail, str) else str(detail)
    return True, body


def twilio_missing() -> str | None:
    """What Twilio still needs (a sentence naming the variables), or None when configured."""
    from voiceforge.config import ConfigError

    settings = engine().settings
    try:
        settings.require_twilio()
    except ConfigError as exc:
        return str(exc)
    if not settings.public_base_url:
        return "Set PUBLIC_BASE_URL (a public https URL that reaches the sidecar) so Twilio can call back"
    return None


def call_widget(prefix: str) -> None:
    """An E.164 number field and a Call button placing the call through the sidecar's /api/call."""
    missing = twilio_missing()
    number = st.text_input("Phone number (E.164)", placeholder="+14155550100", key=f"{prefix}_number")
    clicked = st.button("📞 Call", key=f"{prefix}_call", disabled=missing is not None, type="primary")
    if missing:
        st.info(f"{missing}. Meanwhile, try the local call simulator on the "
                "Phone & SMS page.")
        st.page_link("app_pages/phone.py", label="Open the call simulator", icon="🧪")
        return
    if clicked:
        ok, body = sidecar("POST", "/api/call", json={"to": number, "persona": st.session_state.get("persona")})
        if ok:
            st.session_state[f"{prefix}_sid"] = body["call_sid"]
        else:
            st.error(f"The call was not placed: {body}")
    sid = st.session_state.get(f"{prefix}_sid")
    if sid:
        live_call_status(sid)


@st.fragment(run_every=2)
def live_call_status(call_sid: str) -> None:
    """The call's status and history, refreshed every 2 s."""
    from voiceforge.store.calls import get_call

    call = get_call(engine().db, call_sid)
    if call is None:
        st.caption(f"{call_sid}: waiting for the first status…")
        return
    st.metric("Call status", call["status"], help=call_sid)
    st.caption(" → ".join(h["status"] for h in call["history"]))


def show_turn(turn: Any, key: str, autoplay: bool = False) -> None:
    """One stored or live turn: user text, reply, tool calls, reply audio, waterfall."""
    with st.chat_message("user"):
        st.markdown(turn["user_text"] or "_(no speech recognized)_")
    with st.chat_message("assistant"):
        st.markdown(turn["assistant_text"] + ("  _(interrupted)_" if turn.get("interrupted") else ""))
        if turn.get("error"):
            st.warning(f"Error: {turn['error']}")
        show_tool_calls(turn.get("tool_calls", []))
        if turn.get("audio"):
            st.audio(turn["audio"], format="audio/wav", autoplay=autoplay)
        show_waterfall(turn.get("timings_ms") or {}, key=f"{key}-waterfall")
