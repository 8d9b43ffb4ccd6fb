"""Home: what Forge is, status cards, and the call button."""

from __future__ import annotations

import streamlit as st

import forge_ui
from voiceforge.cost import format_usd
from voiceforge.store import conversations

engine = forge_ui.engine()
st.title("🔨 Forge")
st.markdown(
    "**A workbench for prototyping voice agents.** Talk to an agent and see how long each stage takes.  \n"
    "Give it tools, call a phone with it, text with it, and read back every conversation.  \n"
    "Runs offline with no keys; OpenAI, Twilio and PostgreSQL come in by configuration."
)
cols = st.columns(3)
with cols[0]:
    st.page_link("app_pages/live.py", label="**Talk to the agent** — live, hands-free", icon="🗣️")
with cols[1]:
    st.page_link("app_pages/voice_chat.py", label="Record, upload or type a turn", icon="🎙️")
with cols[2]:
    st.page_link("app_pages/compare.py", label="Compare batch, phone and speech-to-speech", icon="⚖️")


@st.cache_data(ttl=5)
def counts(url: str) -> dict[str, int]:
    return conversations.counts(engine.db, engine.business_db)


status = engine.describe()
cols = st.columns(4)
cols[0].metric("Speech to text", status["stt"].split(" ")[0])
cols[1].metric("LLM", "offline brain" if status["llm"].startswith("offline") else status["llm"].split(" ")[0])
cols[2].metric("Text to speech", status["tts"].split(" ")[0])
cols[3].metric("Database", engine.db.dialect if engine.business_db is engine.db
               else f"{engine.db.dialect} + {engine.business_db.dialect}",
               help=None if engine.business_db is engine.db
               else f"customers, orders and appointments in {engine.business_db.describe()}")
cols = st.columns(4)
for col, (name, value) in zip(cols, counts(engine.db.url).items(), strict=True):
    col.metric(name.capitalize(), value)

@st.cache_data(ttl=5)
def spend(url: str) -> dict:
    return conversations.spend(engine.db)


totals = spend(engine.db.url)
spent = engine.prices.spent(totals["turn_cost_usd"], totals["call_seconds"], totals["sms_sent"])
cols = st.columns(4)
cols[0].metric("Spent on providers", format_usd(spent.providers),
               help=f"STT, LLM and TTS over {totals['turns']} stored turns, at the prices in voiceforge/cost.py "
                    "(FORGE_PRICES overrides them); local providers cost $0")
cols[1].metric("Phone minutes", f"{sum(-(-int(s) // 60) for s in totals['call_seconds'])}",
               help=f"{len(totals['call_seconds'])} ended calls through Twilio, billed per started minute: "
                    f"{format_usd(spent.calls)} at Twilio's list price; {totals['simulated_calls']} simulated "
                    "calls never reached Twilio and cost $0")
cols[2].metric("SMS sent", totals["sms_sent"], help=f"{format_usd(spent.sms)} at Twilio's list price "
                                                      "(simulated texts cost $0)")
cols[3].metric("Total", format_usd(spent.total), help="The same definition as Conversations and Compare: "
                                                       "what a provider bills for what actually ran")

st.subheader("Call a phone")
forge_ui.call_widget("home")

st.subheader("More")
st.page_link("app_pages/tools.py", label="Try the tools", icon="🔧")
st.page_link("app_pages/phone.py", label="Phone & SMS, and the call simulator", icon="📞")
