"""Devices: push-to-talk devices, the children they belong to, their memory, and a simulated press."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

import forge_ui
from voiceforge.agent.persona import list_personas
from voiceforge.audio.codecs import AudioFormatError
from voiceforge.audio.decode import decode_audio
from voiceforge.store import children as child_store
from voiceforge.store import devices as store
from voiceforge.store.devices import SIMULATOR_DEVICE

engine = forge_ui.engine()
db = engine.db
st.title("📟 Devices")
st.caption("ESP32-S3 push-to-talk devices (firmware/ in the repository; the wire is firmware/PROTOCOL.md).")

children = child_store.list_children(db)
child_names = {c["child_id"]: f"{c['name']} (#{c['child_id']})" for c in children}
tab_devices, tab_children, tab_press = st.tabs(["Devices", "Children", "Simulate a press"])


def _health(device: dict) -> str:
    if device["device_id"] == SIMULATOR_DEVICE:
        return "simulator (Simulate a press)"
    if device["revoked"]:
        return "revoked"
    if not device["last_seen_at"]:
        return "never seen"
    seen = dt.datetime.fromisoformat(device["last_seen_at"])
    seen = seen if seen.tzinfo else seen.replace(tzinfo=dt.UTC)
    minutes = (dt.datetime.now(dt.UTC) - seen).total_seconds() / 60
    return "online" if minutes < 10 else f"seen {minutes / 60:.1f} h ago" if minutes > 90 else f"seen {minutes:.0f} min ago"


with tab_devices:
    devices = store.list_devices(db)
    if devices:
        st.dataframe(pd.DataFrame([{"device": d["device_id"], "name": d["name"], "persona": d["persona"],
                                    "child": child_names.get(d["child_id"], ""), "health": _health(d),
                                    "firmware": d["firmware"], "battery": d["status"].get("battery"),
                                    "token": d["token_hint"]} for d in devices]),
                     hide_index=True, key="devices_table")
    else:
        st.caption("No devices yet.")
    with st.form("register_device"):
        st.subheader("Register a device")
        name = st.text_input("Name", key="dev_name", placeholder="Arjun's bedroom")
        persona = st.selectbox("Persona", list_personas(), key="dev_persona",
                               index=list_personas().index("hanuman_storyteller"))
        child = st.selectbox("Child", [None, *child_names], key="dev_child",
                             format_func=lambda c: "none" if c is None else child_names[c])
        registered = st.form_submit_button("Register", type="primary")
    if registered:
        if not name.strip():
            st.error("Give the device a name.")
        else:
            device, token = store.register_device(db, name.strip(), persona, child)
            st.session_state.new_device = (device["device_id"], token)
            st.rerun()
    if st.session_state.get("new_device"):
        new_id, token = st.session_state.pop("new_device")  # shown once, then gone from the session too
        st.success(f"Registered {new_id}. Its token, shown only now: put it on the device "
                   "(`set token …` on its serial console).")
        st.code(token, language=None)
    live = [d for d in devices if not d["revoked"]]
    if live:
        st.subheader("Settings")
        pick = st.selectbox("Device", [d["device_id"] for d in live], key="dev_pick")
        device = next(d for d in live if d["device_id"] == pick)
        settings = device["settings"]
        with st.form(f"settings_{pick}"):
            voice = st.text_input("Voice (empty: the persona's)", settings.get("voice") or "", key=f"dev_voice_{pick}")
            volume = st.slider("Volume", 0, 100, int(settings["volume"]), key=f"dev_volume_{pick}")
            language = st.text_input("Language", settings["language"], key=f"dev_language_{pick}")
            vad = st.slider("VAD threshold", 0.3, 0.95, float(settings["vad_threshold"]), key=f"dev_vad_{pick}")
            pre = st.number_input("Pre-roll (ms)", 0, 1000, int(settings["pre_roll_ms"]), key=f"dev_pre_{pick}")
            post = st.number_input("Post-roll (ms)", 300, 2000, int(settings["post_roll_ms"]), key=f"dev_post_{pick}")
            new_child = st.selectbox("Child", [None, *child_names], key=f"dev_child_{pick}",
                                     index=[None, *child_names].index(device["child_id"]),
                                     format_func=lambda c: "none" if c is None else child_names[c])
            saved = st.form_submit_button("Save settings")
        if saved:
            changes = {"voice": voice.strip() or None, "volume": volume, "language": language.strip() or "en",
                       "vad_threshold": round(vad, 2), "pre_roll_ms": int(pre), "post_roll_ms": int(post)}
            if new_child != device["child_id"]:
                changes["child_id"] = new_child
            try:
                updated = store.update_settings(db, pick, **changes)
                st.success(f"Saved; the device picks up settings version {updated['settings_version']} at its next "
                           "heartbeat.")
            except store.DeviceError as exc:
                st.error(str(exc))
        if st.button(f"Revoke {pick}", key=f"dev_revoke_{pick}"):
            store.revoke_device(db, pick)
            st.session_state.device_note = f"{pick} is revoked: its next request is refused."
            st.rerun()
    if devices:
        with st.expander("Delete a device"):
            doomed = st.selectbox("Device", [d["device_id"] for d in devices], key="dev_delete_pick",
                                  format_func=lambda d: f"{d} ({next(x['name'] for x in devices if x['device_id'] == d)})")
            st.caption("The device and its token go for good; its conversations stay with its child.")
            if st.button("Delete the device", key="dev_delete", type="primary"):
                store.delete_device(db, doomed)
                st.session_state.device_note = f"{doomed} is deleted."
                st.rerun()
    if st.session_state.get("device_note"):
        st.warning(st.session_state.pop("device_note"))

with tab_children:
    with st.form("new_child"):
        st.subheader("Add a child")
        c_name = st.text_input("Name", key="child_name")
        c_dob = st.date_input("Date of birth", value=None, key="child_dob", min_value=dt.date(2005, 1, 1))
        c_parents = st.text_input("Parents", key="child_parents")
        c_language = st.text_input("Preferred language", "en", key="child_language")
        c_tz = st.text_input("Timezone", "UTC", key="child_tz")
        c_consent = st.checkbox("A parent consents to Forge keeping this child's progress and conversations",
                                key="child_consent")
        added = st.form_submit_button("Add", type="primary")
    if added and c_name.strip():
        made = child_store.create_child(db, c_name.strip(), c_dob, c_parents, c_language or "en", c_tz or "UTC", c_consent)
        st.session_state.child_added = f"Added {made['name']} (#{made['child_id']})."
        st.rerun()  # every selector on the page gets the new child
    if st.session_state.get("child_added"):
        st.success(st.session_state.pop("child_added"))
    if not children:
        st.caption("No children yet.")
    else:
        cid = st.selectbox("Child", list(child_names), key="child_pick", format_func=child_names.get)
        profile = child_store.get_child(db, cid)
        cols = st.columns(3)
        cols[0].metric("Age", "?" if not profile["dob"] else
                       (dt.date.today() - dt.date.fromisoformat(profile["dob"])).days // 365)
        cols[1].metric("Language", profile["preferred_language"])
        cols[2].metric("Consent", "given" if profile["consent"] else "not given")
        consent = st.toggle("Consent to storage", profile["consent"], key=f"child_consent_{cid}")
        if consent != profile["consent"]:
            child_store.update_child(db, cid, consent=consent)
            st.rerun()
        interests = child_store.interests(db, cid)
        verses = child_store.verse_progress(db, cid)
        stories = child_store.story_progress(db, cid)
        left, right = st.columns(2)
        with left:
            st.caption("Interests")
            st.dataframe(pd.DataFrame(interests, columns=["tag", "weight"]), hide_index=True, key=f"interests_{cid}")
            st.caption("Stories heard")
            st.dataframe(pd.DataFrame(stories, columns=["topic", "status", "times_heard", "last_heard"]),
                         hide_index=True, key=f"stories_{cid}")
        with right:
            st.caption("Hanuman Chalisa: mastery per step (0–5)")
            if verses:
                st.bar_chart(pd.DataFrame(verses).set_index("verse_index")["mastery"], height=200)
            else:
                st.caption("No verses practised yet.")
        st.caption("Interactions")
        st.dataframe(pd.DataFrame(child_store.interactions(db, cid),
                                  columns=["started_at", "duration_s", "topic", "device_id"]),
                     hide_index=True, key=f"interactions_{cid}")
        # Open while its confirmation is ticked: a rerun that moves the elements above would close it.
        with st.expander("Delete everything about this child",
                         expanded=bool(st.session_state.get(f"child_delete_sure_{cid}"))):
            st.write("Removes the profile, progress, interests, interactions, conversations and recordings. "
                     "It cannot be undone.")
            sure = st.checkbox(f"Yes, delete {profile['name']}'s data", key=f"child_delete_sure_{cid}")
            if st.button("Delete", key=f"child_delete_{cid}", disabled=not sure, type="primary"):
                removed = child_store.forget_child(db, cid, engine.settings.forge_data_dir / "recordings")
                st.session_state.child_added = (
                    f"Deleted {profile['name']}: {removed['conversations']} conversation(s), "
                    f"{removed['recording_folders']} recording folder(s), and every row about the child.")
                st.rerun()  # the child leaves every list and selector on the page

with tab_press:
    st.markdown("Runs the device simulator against a sidecar started for it: it presses, streams the clip "
                "in real time over the device protocol, releases and plays the reply.")
    s_persona = st.selectbox("Persona", list_personas(), key="press_persona",
                             index=list_personas().index("hanuman_storyteller"))
    s_child = st.selectbox("As the device of", [None, *child_names], key="press_child",
                           format_func=lambda c: "no child" if c is None else child_names[c])
    clip = st.audio_input("Record", key="press_record") or st.file_uploader("or upload audio", type=forge_ui.UPLOAD_TYPES,
                                                                              key="press_upload")
    if st.button("Press", key="press_run", type="primary", disabled=clip is None):
        from forge.inprocess import run_local_device_press

        try:
            utterance = decode_audio(clip.getvalue())
        except AudioFormatError as exc:
            st.error(f"That audio could not be read: {exc}")
        else:
            def describe(event: dict) -> str | None:
                return {
                    "sidecar": "⚙️ Sidecar started, models loaded",
                    "pressed": f"🔘 Pressed: streaming {event.get('seconds', 0):.1f} s of audio in real time…",
                    "released": "⏏️ Released: waiting for the reply…",
                    "answered": f"🔊 First reply audio {event.get('latency_ms', 0):,.0f} ms after the release",
                    "done": "✅ The reply played to its end",
                }.get(event["event"])

            result = forge_ui.run_with_status(
                lambda progress: run_local_device_press([utterance], s_persona, s_child, progress),
                "Pressing… (starting a local sidecar and loading its models)", describe,
                "Press completed", "The simulated press failed")
            if result is not None:
                st.session_state.press_result = result
                st.rerun()  # the Devices tab lists the simulator device the press registered
    result = st.session_state.get("press_result")
    if result:
        from voiceforge.audio.codecs import wrap_wav

        for turn, audio in zip(result["turns"], result["_audio"], strict=True):
            forge_ui.show_turn({"user_text": turn["transcript"], "assistant_text": turn["reply"],
                                "tool_calls": [{"name": n, "arguments": {}, "result": None} for n in turn["tool_calls"]],
                                "audio": wrap_wav(audio, result["rate"]) if audio else None},
                               key=f"press-{turn['turn']}")
            st.caption(f"First reply audio {turn['latency_ms']:,.0f} ms after release")
