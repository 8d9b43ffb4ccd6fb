"""Compare: the three prototype styles on the same utterances — latency, accuracy and cost.

Runs voiceforge/compare.py (the same code as `forge compare`) on Forge's background loop and
shows its progress while it runs; the results stay on the page until the next run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

import forge_ui
from forge.compare import DEFAULT_SET, STYLES, compare, default_utterances_async, load_utterances, table
from voiceforge.audio.codecs import AudioFormatError
from voiceforge.cost import format_usd

engine = forge_ui.engine()
persona = st.session_state.get("persona") or engine.settings.forge_persona

st.title("⚖️ Compare prototypes")
st.caption("The same utterances through batch STT → LLM → TTS, streaming over the phone path, and "
           "speech-to-speech. Voice-to-voice is measured from the last voiced frame of the user's speech to "
           "the first agent audio, as everywhere in Forge. Costs use the price table in voiceforge/cost.py "
           "(FORGE_PRICES overrides it); local providers cost $0.")

source = st.radio("Utterances", ["default", "mine"], horizontal=True, key="cmp_source",
                  format_func={"default": f"Default set ({len(DEFAULT_SET)} sentences spoken by Piper)",
                               "mine": "My recordings"}.get)
uploads, references = [], ""
if source == "default":
    st.caption(" · ".join(f"“{s}”" for s in DEFAULT_SET))
else:
    uploads = st.file_uploader("Recordings (WAV, MP3, OGG, WebM, M4A, FLAC)", type=forge_ui.UPLOAD_TYPES,
                               accept_multiple_files=True, key="cmp_uploads")
    references = st.text_area("What each recording says, one per line as `file name | text` (for accuracy)",
                              key="cmp_refs", placeholder="order.wav | Where is my order?")
styles = st.multiselect("Styles", list(STYLES), default=list(STYLES), format_func=STYLES.get, key="cmp_styles")
run_clicked = st.button("Run the comparison", type="primary", disabled=not styles or (source == "mine" and not uploads))


def utterances_from_uploads() -> list:
    folder = Path(tempfile.mkdtemp(prefix="forge-compare-"))
    for upload in uploads:
        (folder / Path(upload.name).name).write_bytes(upload.getvalue())
    lines = [line for line in references.splitlines() if "|" in line]
    (folder / "references.tsv").write_text("\n".join(lines), encoding="utf-8")
    return load_utterances(folder, engine.settings.forge_max_turn_s)


if run_clicked:
    state = {"style": "", "done": 0, "total": 0}

    def on_progress(style: str, done: int, total: int) -> None:
        state.update(style=style, done=done, total=total)

    try:
        if source == "default":
            with st.spinner("Speaking the default set with Piper…"):
                utterances = forge_ui.run(default_utterances_async())
        else:
            utterances = utterances_from_uploads()
    except (AudioFormatError, FileNotFoundError) as exc:
        st.error(f"Those recordings could not be used: {exc}")
        st.stop()
    future = asyncio.run_coroutine_threadsafe(
        compare(engine, utterances, persona, styles, on_progress), forge_ui.background_loop())
    bar = st.progress(0.0, text="Starting…")
    started = time.monotonic()
    while not future.done():
        index = styles.index(state["style"]) if state["style"] in styles else 0
        within = state["done"] / state["total"] if state["total"] else 0.0
        bar.progress(min(1.0, (index + within) / len(styles)),
                     text=f"{STYLES.get(state['style'], 'Starting')}: {state['done']}/{state['total'] or len(utterances)} "
                          f"utterances · {time.monotonic() - started:.0f} s")
        time.sleep(0.3)
    bar.empty()
    runs = future.result()
    st.session_state.cmp_results = {"rows": table(runs), "turns": {r.style: r.turns for r in runs}}

results = st.session_state.get("cmp_results")
if not results:
    st.info("Press **Run the comparison**. The phone and speech-to-speech styles start their own local "
            "servers for the run, so the first results take a minute.")
    st.stop()

rows = results["rows"]
for row in rows:
    if row["error"]:
        st.error(f"{row['label']}: {row['error']}")
failed = sum(r["failed"] for r in rows)
if failed:
    st.warning(f"{failed} turn{'s' if failed != 1 else ''} failed: left out of the latency percentiles. "
               "The error of each is under **Every utterance**.")
summary = pd.DataFrame([{
    "style": r["label"], "turns": r["turns"], "failed": r["failed"], "voice-to-voice p50 (ms)": r["v2v_p50_ms"],
    "p95 (ms)": r["v2v_p95_ms"], "WER": r["wer"], "cost / turn": format_usd(r["cost_per_turn_usd"]),
    "cost / minute": format_usd(r["cost_per_minute_usd"]),
    "cost / conversation": format_usd(r["cost_per_conversation_usd"]),
} for r in rows])
st.subheader("Results")
st.dataframe(summary, hide_index=True, key="cmp_summary",
             column_config={"style": st.column_config.TextColumn("style", width=230),  # px: the longest name whole
                            "failed": st.column_config.NumberColumn(
                                "failed", help="turns that ended in an error: left out of the latency percentiles")})
st.caption("Cost is what a provider would bill for this run (local providers $0); the phone style's call is "
           "simulated on loopback, so no Twilio minutes are in it: a real call adds Twilio's per-minute price.")

ok = [r for r in rows if r["v2v_p50_ms"] is not None]
if ok:
    latency = pd.DataFrame([{"style": r["label"], "percentile": p, "ms": r[f"v2v_{p}_ms"]}
                            for r in ok for p in ("p50", "p95")])
    left, right = st.columns(2)
    with left:
        st.caption("Voice-to-voice latency")
        chart = alt.Chart(latency).mark_bar().encode(
            x=alt.X("ms:Q", title="ms after the end of speech"), y=alt.Y("style:N", title=None),
            color=alt.Color("percentile:N", scale=alt.Scale(domain=["p50", "p95"], range=["#4c78a8", "#9ecae9"])),
            yOffset="percentile:N", tooltip=["style", "percentile", "ms"])
        labels = chart.mark_text(align="left", dx=3).encode(text=alt.Text("ms:Q", format=".0f"), color=alt.value("#333"))
        st.altair_chart(chart + labels, key="cmp_latency", width="stretch")
    with right:
        st.caption("Where the time goes (median ms per stage)")
        stages = pd.DataFrame([{"style": r["label"], "stage": stage, "ms": ms}
                               for r in ok for stage, ms in r["stages_ms"].items()])
        if not stages.empty:
            st.altair_chart(alt.Chart(stages).mark_bar().encode(
                x=alt.X("ms:Q", stack="zero", title="ms"), y=alt.Y("style:N", title=None),
                color=alt.Color("stage:N", scale=alt.Scale(domain=["endpointing", "stt", "llm", "tts"],
                                                          range=["#bab0ac", "#4c78a8", "#f58518", "#54a24b"])),
                tooltip=["style", "stage", "ms"]), key="cmp_stages", width="stretch")

st.subheader("Pros and cons, with this run's numbers")
st.table(pd.DataFrame([{
    "style": r["label"],
    "real-time": f"{r['v2v_p50_ms']:.0f} ms p50 to first audio" if r["v2v_p50_ms"] is not None else "—",
    "accuracy": f"WER {r['wer']:.2f}" if r["wer"] is not None else "—",
    "scalability": (f"{r['turns'] / r['wall_s'] * 60:.0f} turns per minute of this machine, one at a time"
                    if r["wall_s"] and r["turns"] else "—"),
    "cost": f"{format_usd(r['cost_per_minute_usd'])} per minute",
    "pros": r["pros"], "cons": r["cons"],
} for r in rows]).set_index("style"))  # a table wraps its text: nothing cut off

with st.expander("Every utterance", expanded=bool(failed)):
    detail = pd.DataFrame([{"style": STYLES[style], "utterance": t["utterance"], "error": t.get("error"),
                            "voice-to-voice (ms)": t["v2v_ms"], "heard": t["heard"], "reply": t["reply"],
                            "reference": t["reference"]}
                           for style, turns in results["turns"].items() for t in turns])
    st.dataframe(detail, hide_index=True, key="cmp_detail")
