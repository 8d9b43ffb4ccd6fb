"""Shared Streamlit helpers for app.py and app_pages/: cached engine, async bridge, waterfall.

The core is async; Streamlit scripts are not. One background event loop (per process) runs
every coroutine, so provider clients bound to a loop keep working across reruns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pandas as pd
import streamlit as st

from voiceforge.engine import Engine
from voiceforge.records import STAGE_MARKS, first_audio_ms, stage_spans  # noqa: F401 - first_audio_ms is the pages'

UPLOAD_TYPES = ["wav", "mp3", "ogg", "opus", "webm", "m4a", "mp4", "flac"]
"""What the uploaders take (decoded by voiceforge/audio/decode.py)."""

STAGE_COLORS = {"endpointing": "#bab0ac", "STT": "#4c78a8", "LLM first token": "#f58518", "tool": "#e45756",
                "first sentence": "#ffbf79", "TTS first audio": "#54a24b", "Realtime first audio": "#72b7b2",
                "first audio sent": "#b279a2", "playback confirmed": "#d6a5c9", "turn done": "#9d755d"}
"""One colour per stage, the same on every page."""

@st.cache_resource
def background_loop() -> asyncio.AbstractEventLoop:
    """The process-wide asyncio loop (a daemon thread) that runs every coroutine of the app."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="forge-async").start()
    return loop


def run(coro) -> Any:  # noqa: ANN001
    """Run a coroutine on Forge's background loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop()).result()


def when(stamp: str | None) -> str:
    """An ISO 8601 timestamp as people read it, "2026-12-07 13:30:05 UTC" ("" for None)."""
    if not stamp:
        return ""
    moment = pd.Timestamp(stamp)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def run_with_status(start: Callable[[Callable[[dict], None]], Coroutine[Any, Any, Any]], label: str,
                    describe: Callable[[dict], str | None], done: str, failed: str) -> Any | None:
    """Run ``start(progress)`` on the background loop, writing each progress event in an ``st.status`` box.

    Args:
        start: makes the coroutine, given the progress callback it should call with event dicts.
        label: the box's label while it runs.
        describe: one line of Markdown for an event (None: not shown).
        done / failed: the box's label when it ends; ``failed`` gets ": <the error>" appended.

    Returns:
        The coroutine's result, or None when it raised (the error is shown in the box).
    """
    events: list[dict] = []
    future = asyncio.run_coroutine_threadsafe(start(events.append), background_loop())
    with st.status(label, expanded=True) as box:
        shown = 0
        while not future.done() or shown < len(events):
            for event in events[shown:]:
                line = describe(event)
                if line:
                    box.write(line)
            shown = len(events)
            time.sleep(0.2)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - shown, the page goes on
            box.update(label=f"{failed}: {exc}", state="error")
            return None
        box.update(label=done, state="complete", expanded=False)
        return result


@st.cache_resource
def engine() -> Engine:
    """The process-wide Engine (models load lazily on first use)."""
    eng = Engine()
    eng.ensure_mock_data()
    return eng


@st.cache_data(ttl=30)
def persona_names() -> dict[str, str]:
    """Persona id → "Name — description" for pickers (a broken persona file shows its id)."""
    from voiceforge.agent.persona import PersonaError, list_personas

    out = {}
    for pid in list_personas():
        try:
            persona = engine().persona(pid)
            out[pid] = f"{persona.name} ({pid.replace('_', ' ')})"
        except PersonaError:
            out[pid] = pid
    return out


def waterfall(timings: dict[str, float]) -> pd.DataFrame:
    """Stage bars of one turn: stage (its label), kind (its colour), start ms, end ms, and its length.

    Each stage runs from the latest earlier mark to its own; the tool stage from ``tool_start``
    to ``tool_end``; the end of turn (the silence waited for, and how it was decided: see
    :func:`end_of_turn_label`) is drawn before zero.
    """
    rows = [{"stage": end_of_turn_label(timings) if label == "endpointing" else label, "kind": label,
             "start_ms": start, "end_ms": end} for label, start, end in stage_spans(timings)]
    df = pd.DataFrame(rows, columns=["stage", "kind", "start_ms", "end_ms"])
    df["length_ms"] = (df["end_ms"] - df["start_ms"]).round(0)
    return df


def end_of_turn_label(timings: dict[str, float]) -> str:
    """How the turn's end was decided, as the waterfall names it.

    "end of turn (model, p=0.93)", "end of turn (silence; model said unfinished)" or
    "endpointing (silence)".
    """
    if timings.get("end_of_turn_model") == 1:
        p = timings.get("end_of_turn_p")
        return "end of turn (model" + (f", p={p:.2f})" if p is not None else ")")
    if timings.get("end_of_turn_model") == 0:
        return "end of turn (silence; model said unfinished)"
    return "endpointing (silence)"


def show_waterfall(timings: dict[str, float], key: str, x_max: float | None = None) -> None:
    """Draw one turn's latency waterfall: labelled bars per stage, stable colours, a shared scale.

    Args:
        timings: stage → ms after the end of the user's speech (a turn's ``timings_ms``).
        key: the chart's widget key.
        x_max: the right edge of the scale (ms), shared by every turn on a page; default this turn's.
    """
    import altair as alt

    df = waterfall(timings)
    if df.empty:
        return
    first = first_audio_ms(timings)
    if first is not None:
        st.caption(f"⏱️ first agent audio **{first:,.0f} ms** after the end of speech")
    right = max(x_max or 0.0, float(df["end_ms"].max())) * 1.12 + 50
    left = float(min(0.0, df["start_ms"].min()))
    x = alt.X("start_ms:Q", title="ms after the end of speech", scale=alt.Scale(domain=[left, right]))
    df["bar_end_ms"] = df["end_ms"].clip(lower=df["start_ms"] + right / 250)  # a 0 ms stage still shows
    base = alt.Chart(df).encode(y=alt.Y("stage:N", sort=list(df["stage"]), title=None,
                                        axis=alt.Axis(labelOverlap=False, labelLimit=180)))
    bars = base.mark_bar().encode(
        x=x, x2="bar_end_ms:Q",
        color=alt.Color("kind:N", legend=None, scale=alt.Scale(domain=list(STAGE_COLORS),
                                                                range=list(STAGE_COLORS.values()))),
        tooltip=["stage", alt.Tooltip("start_ms:Q", format=".0f"), alt.Tooltip("end_ms:Q", format=".0f"),
                 alt.Tooltip("length_ms:Q", format=".0f")])
    labels = base.mark_text(align="left", dx=4, fontSize=11).encode(
        x="end_ms:Q", text=alt.Text("length_ms:Q", format=",.0f"))
    st.altair_chart((bars + labels).properties(height=28 * len(df) + 30), key=key, width="stretch")


def latency_summary(turns: list[dict[str, Any]]) -> str | None:
    """"p50 1,234 ms · p95 2,345 ms over N turns" of voice-to-voice, or None when no turn was spoken."""
    from voiceforge.scoring import percentile

    values = [v for t in turns if (v := first_audio_ms(t.get("timings_ms") or {})) is not None]
    if not values:
        return None
    return (f"voice-to-voice p50 {percentile(values, 50):,.0f} ms · p95 {percentile(values, 95):,.0f} ms "
            f"over {len(values)} turn{'s' if len(values) != 1 else ''}")


def timeline_max(turns: list[dict[str, Any]]) -> float:
    """The latest mark over ``turns`` (ms), for a scale shared by their waterfalls."""
    return max((float(v) for t in turns for k, v in (t.get("timings_ms") or {}).items()
                if k in dict(STAGE_MARKS)), default=0.0)


def cost_line(cost_usd: float | None, usage: dict[str, Any] | None, unpriced: list[str] | None = None) -> str:
    """One line for a turn's price and what it consumed: "$0.0004 · 812 tokens in, 40 out · 3.1 s of STT"."""
    from voiceforge.cost import format_usd

    usage = usage or {}
    parts = [format_usd(cost_usd or 0.0) if not unpriced else f"{format_usd(cost_usd or 0.0)} + no price for "
             + ", ".join(unpriced)]
    if usage.get("llm_input_tokens") or usage.get("llm_output_tokens"):
        parts.append(f"{usage.get('llm_input_tokens', 0):,} tokens in, {usage.get('llm_output_tokens', 0):,} out")
    if usage.get("realtime_input_tokens") or usage.get("realtime_output_tokens"):
        parts.append(f"Realtime {usage.get('realtime_input_tokens', 0):,} tokens in, "
                     f"{usage.get('realtime_output_tokens', 0):,} out")
    if usage.get("stt_audio_s"):
        parts.append(f"{usage['stt_audio_s']:.1f} s transcribed")
    if usage.get("tts_characters"):
        parts.append(f"{usage['tts_characters']:,} characters spoken")
    return " · ".join(parts)


def dialogue_state_line(state: dict[str, str]) -> str | None:
    """A pipeline's ``dialogue_state()`` for people: "🧩 waiting for … · request “…” · caller …" (None when empty)."""
    parts = []
    if state.get("waiting_for"):
        parts.append(f"waiting for **{state['waiting_for']}**")
    if state.get("request"):
        parts.append(f"request “{state['request']}”")
    if state.get("customer"):
        parts.append(f"caller {state['customer']}")
    return "🧩 Dialogue state: " + " · ".join(parts) if parts else None


def spent_line(spent: Any) -> str:
    """A :class:`voiceforge.cost.Spent` for people: "$0.0140 (providers $0 (local), phone $0.0140)"."""
    from voiceforge.cost import format_usd

    parts = [f"providers {format_usd(spent.providers)}"]
    if spent.calls:
        parts.append(f"phone {format_usd(spent.calls)}")
    if spent.sms:
        parts.append(f"SMS {format_usd(spent.sms)}")
    return format_usd(spent.total) + (f" ({', '.join(parts)})" if len(parts) > 1 else "")


def show_cost(turn: dict[str, Any]) -> None:
    """The turn's cost line (a live turn's ``cost`` dict or a stored turn's ``cost_usd``)."""
    cost = turn.get("cost") or {}
    total = cost.get("total") if cost else turn.get("cost_usd")
    if total is None and not turn.get("usage"):
        return
    st.caption("💲 " + cost_line(total, turn.get("usage"), cost.get("unpriced")))


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
    if call.get("end_reason"):
        st.caption(f"Closed by Forge: {call['end_reason']}")


@st.fragment(run_every=3)
def live_everywhere(prefix: str) -> None:
    """The conversations live right now on every sidecar (with REDIS_URL, every instance; else
    this one), refreshed every 3 s, with a button that ends the one picked wherever it is held."""
    ok, status = sidecar("GET", "/ws/status", timeout=5)
    if not ok:
        st.caption(f"Live conversations unknown: {status}")
        return
    live = status.get("everywhere", [])
    instances = status.get("instances", [])
    st.caption(f"{len(live)} live on {len(instances)} sidecar(s): "
               + ", ".join(f"{i['instance']} ({i.get('active', 0)}{', draining' if i.get('draining') else ''})"
                           for i in instances))
    if not live:
        return
    table = pd.DataFrame([{"instance": c["instance"], "kind": c["kind"], "persona": c["persona"],
                           "call SID": c.get("call_sid") or "", "open (s)": c["open_s"], "turns": c["turns_stored"],
                           "conversation": c.get("conversation_id")} for c in live])
    st.dataframe(table, hide_index=True, key=f"{prefix}_live_table")
    labels = {c["id"]: f"{c.get('call_sid') or c['id']} · {c['kind']} on {c['instance']}" for c in live}
    picked = st.selectbox("Conversation", list(labels), format_func=labels.get, key=f"{prefix}_live_pick")
    if st.button("Hang up", key=f"{prefix}_live_hangup", help="Ends it on the sidecar that holds it; what was "
                                                           "said so far stays stored"):
        conn = next(c for c in live if c["id"] == picked)
        path = f"/api/calls/{conn['call_sid']}/hangup" if conn.get("call_sid") else f"/ws/disconnect/{conn['id']}"
        done, body = sidecar("POST", path)
        if done:
            st.success(f"Ended on {body.get('instance') or 'Twilio'}")
        else:
            st.error(f"Not ended: {body}")


def show_turn(turn: Any, key: str, autoplay: bool = False, x_max: float | None = None) -> None:
    """One stored or live turn: user text, reply, tool calls, reply audio, cost, waterfall (``x_max``:
    the shared scale's right edge, ms)."""
    with st.chat_message("user"):
        st.markdown(turn["user_text"] or "_(no speech recognized)_")
    with st.chat_message("assistant"):
        if turn.get("answered", True):
            st.markdown(turn["assistant_text"] + ("  _(interrupted)_" if turn.get("interrupted") else ""))
        else:
            st.markdown("_(no reply: the call ended before one was played)_")
        if turn.get("error"):
            st.warning(f"Error: {turn['error']}")
        show_tool_calls(turn.get("tool_calls", []))
        if turn.get("audio"):
            st.audio(turn["audio"], format="audio/wav", autoplay=autoplay)
        for note in turn.get("failover") or (turn.get("providers") or {}).get("failover") or []:
            st.caption(f"↪️ {note['stage'].upper()} served by {note['served_by']} instead of {note['configured']}: "
                       f"{note['reason']}")
        show_cost(turn)
        show_waterfall(turn.get("timings_ms") or {}, key=f"{key}-waterfall", x_max=x_max)
