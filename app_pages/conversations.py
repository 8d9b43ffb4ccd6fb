"""Conversations: a call log of every stored conversation and call; click a row to open its timeline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

import forge_ui
from voiceforge.agent.persona import PersonaError
from voiceforge.store import conversations as store

engine = forge_ui.engine()
st.title("🗂️ Conversations")
with st.expander("Live now, on every sidecar", expanded=False):
    forge_ui.live_everywhere("conv")

COLUMNS = ["id", "started", "channel", "persona", "title", "turns", "duration_s", "median_latency_ms", "errors",
           "interruptions", "cost_usd"]


@st.cache_data(ttl=3)
def call_log(url: str) -> pd.DataFrame:
    return pd.DataFrame(store.call_log(engine.db, prices=engine.prices), columns=COLUMNS)


df = call_log(engine.db.url)
stored = len(df)
col_a, col_b = st.columns(2)
channels = col_a.multiselect("Channel", sorted(df["channel"].unique()) if not df.empty else [], key="conv_channel")
search = col_b.text_input("Search what was said first", key="conv_search")
if channels:
    df = df[df["channel"].isin(channels)]
if search:
    df = df[df["title"].str.contains(search, case=False, na=False)]
if df.empty:
    if stored:
        st.caption(f"No conversation matches the filter ({stored} stored): clear the channel or the search.")
    else:
        st.caption("Nothing stored yet: talk on Live or Voice Chat, or run the call simulator.")
    st.stop()
event = st.dataframe(
    df, hide_index=True, key="conv_table", on_select="rerun", selection_mode="single-row",
    column_config={
        "id": st.column_config.NumberColumn("#", width="small"),
        "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
        "title": st.column_config.TextColumn("first thing said", width="large"),
        "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
        "median_latency_ms": st.column_config.NumberColumn("latency p50 (ms)", format="%.0f",
                                                           help="voice-to-voice, from the end of speech"),
        "cost_usd": st.column_config.NumberColumn("cost (USD)", format="$%.4f"),
    })
st.download_button("Export this log (CSV)", df.to_csv(index=False).encode(), "forge-conversations.csv",
                   "text/csv", key="conv_export_log")
picked = event.selection.rows if event is not None else []
conv_id = int(df.iloc[picked[0]]["id"]) if picked else int(df.iloc[0]["id"])
if not picked:
    st.caption("Click a row to open it; showing the newest.")

conv = store.get_conversation(engine.db, conv_id)
if conv is None:
    st.warning("That conversation was deleted.")
    st.stop()
turns = [{**t, "audio": Path(t["reply_audio_path"]).read_bytes()
          if t["reply_audio_path"] and Path(t["reply_audio_path"]).exists() else None,
          "user_audio": t["user_audio_path"]}
         for t in conv["turns"]]
st.subheader(f"#{conv_id} · {conv['title'] or '(untitled)'}")
billed_seconds, billed_texts = store.billed_usage(engine.db, [conv_id])
spent = engine.prices.spent(sum(t.get("cost_usd") or 0.0 for t in turns), billed_seconds.get(conv_id, []),
                            billed_texts.get(conv_id, 0))
version = f" (version {conv['persona_version']})" if conv.get("persona_version") else ""
st.caption(f"{conv['channel']} · persona {conv['persona']}{version} · {conv['created_at']:%Y-%m-%d %H:%M} · "
           f"{len(turns)} turn{'' if len(turns) == 1 else 's'} · {forge_ui.spent_line(spent)}")
try:  # what the conversation left open, rebuilt from its stored turns as a resumed call would
    state_line = forge_ui.dialogue_state_line(engine.resume(conv_id, channel=conv["channel"]).dialogue_state())
except (LookupError, PersonaError):
    state_line = None  # its persona is gone: nothing to read the state with
if state_line:
    st.caption(state_line)
export = {k: v for k, v in conv.items() if k != "turns"} | {"turns": conv["turns"]}
st.download_button("Export this conversation (JSON)", json.dumps(export, default=str, indent=2).encode(),
                   f"forge-conversation-{conv_id}.json", "application/json", key="conv_export_one")
calls = [p for p in store.recordings_of(engine.settings.forge_data_dir, conv_id) if p.name.startswith("call-")]
if calls:
    st.markdown("**Recordings of the whole conversation**")
    for path in calls:
        st.caption(path.stem.removeprefix("call-"))
        st.audio(path.read_bytes(), format="audio/wav")
with st.popover("🗑️ Delete this conversation"):
    st.caption("Its turns, tool calls and recordings are deleted; calls and SMS stay in their lists.")
    if st.button("Delete for good", key=f"conv_delete_{conv_id}", type="primary"):
        store.delete_conversation(engine.db, conv_id, engine.settings.forge_data_dir)
        call_log.clear()
        st.rerun()
summary = forge_ui.latency_summary(turns)
if summary:
    st.caption(summary)
scale = forge_ui.timeline_max(turns)
for i, turn in enumerate(turns):
    if turn["user_audio"] and Path(turn["user_audio"]).exists():
        st.audio(Path(turn["user_audio"]).read_bytes(), format="audio/wav")
    forge_ui.show_turn(turn, key=f"conv-{conv_id}-{i}", x_max=scale)
if not engine.settings.enable_recordings:
    st.caption("The agent's replies are kept for replay (FORGE_KEEP_REPLIES, for FORGE_REPLY_RETENTION_DAYS); "
               "set ENABLE_RECORDINGS=true to keep the caller's audio too.")
