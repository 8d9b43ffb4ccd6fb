"""Shared Streamlit helpers for app.py and pages/: cached engine, async bridge, waterfall.

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

STAGES = ["stt_final", "llm_first_token", "first_sentence", "tts_first_audio", "turn_done"]
STAGE_LABELS = {"stt_final": "STT", "llm_first_token": "LLM first token", "first_sentence": "first sentence",
                "tts_first_audio": "TTS first audio", "turn_done": "turn done"}


@st.cache_resource
def _loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="forge-async").start()
    return loop


def run(coro) -> Any:  # noqa: ANN001
    """Run a coroutine on Forge's background loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _loop()).result()


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


def show_tool_calls(tool_calls: list[dict], key: str) -> None:
    """Each tool call with its arguments and result or error."""
    for call in tool_calls:
        label = f"🔧 {call['name']}" + (" — failed" if call.get("error") else "")
        with st.expander(label, expanded=bool(call.get("error"))):
            st.json({"arguments": call.get("arguments"), "result": call.get("result"), "error": call.get("error")},
                    expanded=True)
