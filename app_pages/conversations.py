"""Conversations: every stored conversation and call, filterable; one opens to its timeline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

import forge_ui
from voiceforge.store import conversations as store

engine = forge_ui.engine()
st.title("🗂️ Conversations")


@st.cache_data(ttl=3)
def conversations(url: str) -> pd.DataFrame:
    return pd.DataFrame(store.list_conversations(engine.db),
                        columns=["id", "created_at", "channel", "persona", "title", "turns", "cost_usd"])


df = conversations(engine.db.url)
col_a, col_b = st.columns(2)
channels = col_a.multiselect("Channel", sorted(df["channel"].unique()) if not df.empty else [], key="conv_channel")
search = col_b.text_input("Search titles", key="conv_search")
if channels:
    df = df[df["channel"].isin(channels)]
if search:
    df = df[df["title"].str.contains(search, case=False, na=False)]
st.dataframe(df, hide_index=True, key="conv_table",
             column_config={"cost_usd": st.column_config.NumberColumn("cost (USD)", format="$%.4f")})
if df.empty:
    st.caption("Nothing stored yet: talk on Voice Chat, or run the call simulator.")
    st.stop()

conv_id = st.selectbox("Open", df["id"].tolist(), key="conv_open",
                       format_func=lambda i: f"#{i} · {df.set_index('id').loc[i, 'title'] or '(untitled)'}")
conv = store.get_conversation(engine.db, int(conv_id))
turns = [{**t, "audio": Path(t["reply_audio_path"]).read_bytes()
          if t["reply_audio_path"] and Path(t["reply_audio_path"]).exists() else None,
          "user_audio": t["user_audio_path"]}
         for t in conv["turns"]]
spent = sum(t.get("cost_usd") or 0.0 for t in turns)
st.caption(f"{conv['channel']} · persona {conv['persona']} · {conv['created_at']:%Y-%m-%d %H:%M} · "
           f"{len(turns)} turns · {forge_ui.cost_line(spent, None)}")
summary = forge_ui.latency_summary(turns)
if summary:
    st.caption(summary)
scale = forge_ui.timeline_max(turns)
for i, turn in enumerate(turns):
    if turn["user_audio"] and Path(turn["user_audio"]).exists():
        st.audio(Path(turn["user_audio"]).read_bytes(), format="audio/wav")
    forge_ui.show_turn(turn, key=f"conv-{conv_id}-{i}", x_max=scale)
if not engine.settings.enable_recordings:
    st.caption("Set ENABLE_RECORDINGS=true to keep each turn's audio for replay.")
