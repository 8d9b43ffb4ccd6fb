"""Phone & SMS: place calls, recent calls and transcripts, the call simulator, SMS."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import forge_ui
from voiceforge.audio.codecs import AudioFormatError, ulaw_to_pcm16, wrap_wav
from voiceforge.audio.decode import decode_audio
from voiceforge.store import calls as call_store

engine = forge_ui.engine()
st.title("📞 Phone & SMS")

tab_call, tab_sim, tab_sms = st.tabs(["Calls", "Call simulator", "SMS"])

with tab_call:
    forge_ui.call_widget("phone")
    st.subheader("Recent calls")
    calls = call_store.list_calls(engine.db)
    if not calls:
        st.caption("No calls yet.")
    else:
        table = pd.DataFrame([{k: c[k] for k in ("call_sid", "direction", "status", "persona", "created_at")}
                              for c in calls])
        table["created_at"] = pd.to_datetime(table["created_at"], utc=True, format="ISO8601")
        st.dataframe(table, hide_index=True, key="calls_table", column_config={
            "created_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss")})
        if st.session_state.get("calls_open_next") in table["call_sid"].values:
            st.session_state.calls_open = st.session_state.pop("calls_open_next")  # a call just simulated
        started = dict(zip(table["call_sid"], table["created_at"], strict=True))
        sid = st.selectbox("Open a call", list(table["call_sid"]), key="calls_open",
                           format_func=lambda s: f"{s} · {started[s]:%Y-%m-%d %H:%M:%S}")
        call = call_store.get_call(engine.db, sid)
        st.caption("Status history: " + " → ".join(h["status"] for h in call["history"]))
        for i, turn in enumerate(call["turns"]):
            forge_ui.show_turn(turn, key=f"call-{sid}-{i}")

with tab_sim:
    st.markdown("Plays Twilio's side of a call against a sidecar on a free loopback port: each clip is "
                "one caller turn, sent as real-time μ-law frames; the agent answers over the media stream.")
    clips = st.file_uploader("Caller clips (WAV, MP3, OGG, WebM, M4A, FLAC), in order", type=forge_ui.UPLOAD_TYPES, accept_multiple_files=True,
                             key="sim_upload")
    recorded = st.audio_input("or record one", key="sim_record")
    barge = st.number_input("Barge in after (ms into each reply; 0 = wait for the agent)", 0, 10_000, 0,
                            step=100, key="sim_barge")
    if st.button("Run simulated call", key="sim_run", type="primary"):
        from forge.inprocess import run_local

        try:
            utterances = [decode_audio(c.getvalue()) for c in (clips or [])]
            if recorded is not None:
                utterances.append(decode_audio(recorded.getvalue()))
        except AudioFormatError as exc:
            st.error(f"A clip could not be read: {exc}")
            utterances = []
        if utterances:
            def describe(event: dict) -> str | None:
                if event["event"] == "greeting":
                    return f"📞 Answered; the greeting played ({event['seconds']:.1f} s long)"
                if event["event"] == "speaking":
                    return f"🗣️ Caller turn {event['turn']} of {event['of']}…"
                if event["event"] == "answered":
                    return (f"🤖 Turn {event['turn']} answered: first agent audio "
                            f"{event['latency_ms']:,.0f} ms after the caller's last voiced frame")
                return None

            result = forge_ui.run_with_status(
                lambda progress: run_local(utterances, st.session_state.get("persona"), int(barge) or None, progress),
                "Calling… (starting a local sidecar and loading its models)", describe,
                "Call completed", "The simulated call failed")
            if result is not None:
                st.session_state.sim_result = result
                st.session_state.calls_open_next = result["call_sid"]  # the Calls tab opens the new call
                st.rerun()  # the Calls tab lists the new call
        elif not clips and recorded is None:
            st.warning("Add at least one clip.")
    result = st.session_state.get("sim_result")
    if result:
        st.caption(f"Call {result['call_sid']} ({result['status']}): greeting {result['greeting_ms'] / 1000:.1f} s "
                   f"long, {result['clears']} barge-in(s)")
        for i, (turn, ulaw) in enumerate(zip(result["turns"], result["_audio"], strict=True)):
            forge_ui.show_turn({"user_text": turn["transcript"], "assistant_text": turn["reply"],
                                "interrupted": turn["interrupted"], "tool_calls": turn["tool_calls"],
                                "timings_ms": turn["timings_ms"],
                                "audio": wrap_wav(ulaw_to_pcm16(ulaw), 8000) if ulaw else None},
                               key=f"sim-{i}")
            if turn["latency_ms"] is not None:
                st.caption(f"First agent audio {turn['latency_ms']:,.0f} ms after the caller's last voiced frame")

with tab_sms:
    st.markdown("**Text the agent** (offline: answered here exactly as the SMS webhook answers a real text)")
    with st.form("sms_sim_form"):
        cols = st.columns([1, 3])
        sim_from = cols[0].text_input("From", "+15550000001", key="sms_sim_from",
                                      help="A mock customer's number (+1555000000N) is verified as that customer; "
                                           "a text from any other number gets no run_sql unless the persona sets "
                                           "sql_for_unknown_texters")
        sim_body = cols[1].text_input("Message", key="sms_sim_body", max_chars=1600,
                                      placeholder="Do I have any appointments? I'm customer 3.")
        texted = st.form_submit_button("Send to the agent")
    if texted and sim_body.strip():
        from voiceforge.telephony.sms import answer_sms

        with st.spinner("The agent is answering…"):
            reply = forge_ui.run(answer_sms(engine, sim_from, engine.settings.twilio_phone_number or "+15005550001",
                                            sim_body, persona_id=st.session_state.get("persona")))
        st.success(f"Reply: {reply}")
    st.divider()
    st.markdown("**Send a real SMS** (through Twilio)")
    missing = forge_ui.twilio_missing()
    with st.form("sms_form"):
        to = st.text_input("To (E.164)", placeholder="+14155550100", key="sms_to")
        body = st.text_area("Message", key="sms_body", max_chars=1600)
        send = st.form_submit_button("Send SMS", disabled=missing is not None)
    if missing:
        st.info(f"{missing}.")
    if send:
        ok, answer = forge_ui.sidecar("POST", "/api/sms", json={"to": to, "body": body})
        st.success(f"Sent: {answer['message_sid']}") if ok else st.error(f"Not sent: {answer}")
    st.subheader("Threads")
    messages = call_store.list_sms(engine.db)
    if not messages:
        st.caption("No messages yet.")
    threads: dict[str, list[dict]] = {}
    for m in reversed(messages):
        other = m["from"] if m["direction"] == "inbound" else m["to"]
        threads.setdefault(other, []).append(m)
    for number, thread in threads.items():
        with st.expander(f"{number} ({len(thread)})"):
            for m in thread:
                with st.chat_message("user" if m["direction"] == "inbound" else "assistant"):
                    st.markdown(m["body"])
                    st.caption(f"{m['status']} · {forge_ui.when(m['created_at'])}")
