"""Evals: run a scenario suite on a persona's versions in a style, see the matrix, open any transcript.

Runs forge/evals.py (the same code as `forge eval`) on Forge's background loop with a progress
bar; every run is kept in the data folder (``eval-runs/``), with the CLI's, and listed below.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pandas as pd
import streamlit as st

import forge_ui
from forge.evals import Runner, compare_versions, past_runs, save_run
from voiceforge.agent.persona import list_personas
from voiceforge.agent.versions import PersonaVersions
from voiceforge.config import ROOT
from voiceforge.evals import MAX_SUITE_BYTES, STYLES, SuiteError, load_suite

engine = forge_ui.engine()
data_dir = engine.settings.forge_data_dir
st.title("🧪 Evals")
st.caption("A suite is a YAML file of scenarios: what the caller says turn by turn and what must happen "
           "(the tool and its arguments, words in the reply, a latency budget). `forge eval` runs the same "
           "suites from the command line and CI; the format is in the README.")

uploaded = data_dir / "evals"
suites = {p.name: p for p in sorted((ROOT / "evals").glob("*.yaml"))}
suites |= {f"{p.name} (uploaded)": p for p in sorted(uploaded.glob("*.yaml"))}
with st.expander("Add a suite"):
    upload = st.file_uploader("A suite file (YAML)", type=["yaml", "yml"], key="ev_upload")
    if upload is not None and st.button("Keep this suite", key="ev_keep"):
        name = Path(upload.name).name
        data = upload.getvalue()
        target = uploaded / (Path(name).stem + ".yaml")
        if len(data) > MAX_SUITE_BYTES:
            st.error(f"{name} is larger than {MAX_SUITE_BYTES:,} bytes.")
        else:
            uploaded.mkdir(parents=True, exist_ok=True)
            temporary = target.with_suffix(".checking")
            temporary.write_bytes(data)
            try:
                load_suite(temporary)  # checked whole before it is kept
            except SuiteError as exc:
                st.error(str(exc).replace(str(temporary), name))
            else:
                temporary.replace(target)
                st.session_state.ev_note = f"Kept {target.name}."
                st.session_state.ev_suite = f"{target.name} (uploaded)"  # the new suite is the one picked
                st.rerun()
            finally:
                temporary.unlink(missing_ok=True)
if st.session_state.get("ev_note"):
    st.success(st.session_state.pop("ev_note"))

if not suites:
    st.info("No suites yet: add one above, or put *.yaml files in evals/.")
    st.stop()
cols = st.columns(4)
picked = cols[0].selectbox("Suite", list(suites), key="ev_suite")
try:
    suite = load_suite(suites[picked])
except SuiteError as exc:
    st.error(str(exc))
    st.stop()
personas = list_personas()
persona = cols[1].selectbox("Persona", personas, index=personas.index(suite.persona) if suite.persona in personas else 0,
                            key=f"ev_persona_{picked}")
current = engine.persona(persona).version
numbers = PersonaVersions(data_dir, persona).numbers() or [current]
versions = cols[2].multiselect("Versions", numbers, default=[current], key=f"ev_versions_{picked}_{persona}",
                               format_func=lambda n: f"{n} (current)" if n == current else str(n))
style = cols[3].selectbox("Style", list(STYLES), index=list(STYLES).index(suite.style), key=f"ev_style_{picked}")
st.caption(f"{len(suite.scenarios)} scenarios · " + " · ".join(s.name for s in suite.scenarios))

if st.button("Run the suite", type="primary", key="ev_run", disabled=not versions):
    state = {"done": 0, "version": versions[0]}
    total = len(suite.scenarios) * len(versions)

    async def run_all() -> list:
        runner = Runner(engine)
        out = []
        for number in versions:
            state["version"] = number
            out.append(await runner.run(suite, persona, style, version=None if number == current else number,
                                        progress=lambda _name: state.__setitem__("done", state["done"] + 1)))
        return out

    future = asyncio.run_coroutine_threadsafe(run_all(), forge_ui.background_loop())
    bar = st.progress(0.0, text="Starting…")
    started = time.monotonic()
    while not future.done():
        bar.progress(min(1.0, state["done"] / total),
                     text=f"Version {state['version']}: scenario {min(state['done'] + 1, total)} of {total} · "
                          f"{time.monotonic() - started:.0f} s")
        time.sleep(0.3)
    bar.empty()
    try:
        runs = future.result()
    except SuiteError as exc:
        st.error(str(exc))
    else:
        save_run(data_dir, runs)
        st.session_state.ev_shown = 0  # the newest run

history = past_runs(data_dir)
if not history:
    st.info("Press **Run the suite**. Runs are kept here (and `forge eval` runs too).")
    st.stop()
labels = [f"{r['started_at'].replace('T', ' ')[:19]} UTC · {Path(r['suite']).name} · {r['persona']} · {r['style']}"
          for r in history]
shown = st.selectbox("Run", range(len(history)), key="ev_shown", format_func=labels.__getitem__)
run = history[shown]
by_version = {f"version {r['version']}": r for r in run["runs"]}
st.subheader("Scenarios × versions")
matrix = pd.DataFrame({label: {s["name"]: ("✅ pass" if s["passed"] else f"❌ {s['failure']}") for s in r["scenarios"]}
                       for label, r in by_version.items()})
st.table(matrix)  # a table wraps the failing expectation instead of cutting it off
if len(by_version) > 1:
    st.subheader("Versions side by side")
    st.markdown("\n".join(compare_versions(run["runs"])))
else:
    passed = {label: sum(s["passed"] for s in r["scenarios"]) for label, r in by_version.items()}
    st.caption(" · ".join(f"{label}: {n} of {len(by_version[label]['scenarios'])} passed"
                          for label, n in passed.items()))

st.subheader("Transcripts")
for label, r in by_version.items():
    for s in r["scenarios"]:
        with st.expander(f"{'✅' if s['passed'] else '❌'} {s['name']} · {label}"):
            if s["failure"]:
                st.error(s["failure"])
            for number, turn in enumerate(s["turns"], start=1):
                with st.chat_message("user"):
                    st.markdown(turn["user"] if turn["heard"] in ("", turn["user"])
                                else f"{turn['user']}  \n_heard: {turn['heard']}_")
                with st.chat_message("assistant"):
                    st.markdown(turn["reply"] + ("  _(interrupted)_" if turn.get("interrupted") else ""))
                    for call in turn["tool_calls"]:  # captions: an expander may not hold another
                        st.caption(f"🔧 {call['name']}({call['arguments']})")
                    for check in turn["checks"]:
                        mark = {True: "✅", False: "❌", None: "⏭️"}[check["passed"]]
                        st.caption(f"{mark} {check['expectation']}" + (f": {check['detail']}" if check["detail"] else ""))
                    if turn.get("timings_ms"):
                        forge_ui.show_waterfall(turn["timings_ms"], key=f"ev-{shown}-{label}-{s['name']}-{number}")
            for check in s["conversation"]:
                mark = {True: "✅", False: "❌", None: "⏭️"}[check["passed"]]
                st.caption(f"{mark} conversation {check['expectation']}" + (f": {check['detail']}" if check["detail"] else ""))
