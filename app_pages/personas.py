"""Personas & settings: the personas, and the editable personalization."""

from __future__ import annotations

import streamlit as st

import forge_ui
from voiceforge.agent import knowledge
from voiceforge.agent.persona import (
    PersonaError,
    list_personas,
    load_personalization,
    reset_persona,
    rollback_persona,
    save_persona_edits,
    save_personalization,
)
from voiceforge.agent.versions import PersonaVersions

engine = forge_ui.engine()
st.title("🎭 Personas & settings")

names = forge_ui.persona_names()
pid = st.selectbox("Persona", list_personas(), key="personas_pick", format_func=lambda p: names.get(p, p))
persona = engine.persona(pid)
st.markdown(f"**{persona.name}** — {persona.description}")
st.caption(f"Tools: {', '.join(persona.tools)} · phone replies ≤ {persona.phone_max_sentences} sentences")

data_dir = engine.settings.forge_data_dir
tts = engine.tts
voices = list(tts.capabilities.voices)
# After "Back to the shipped persona" the form's widgets get new keys: the browser keeps a widget's
# value by its key, so the old ones would show the edited values again (and Save re-apply them).
resets = st.session_state.get(f"persona_resets_{pid}", 0)
fresh = f"_{resets}" if resets else ""
with st.form(f"persona_edit_{pid}"):
    st.markdown(f"**Edit this persona** (version {persona.version}; each save is a new version in the data "
                "folder, and the file in prompts/ stays as shipped)")
    st.caption("Offline (no LLM configured), the brain uses the greeting, the voice, the turn-taking settings, "
               "the facts and FAQ (it answers a question closest in meaning to one of them) and the persona's "
               "tools. The system prompt's instructions are followed only by an LLM (OpenAI, Azure or an "
               "OpenAI-compatible server), which gets the facts and FAQ too. LLM in use: "
               + engine.describe().get("llm", "?") + ".")
    prompt = st.text_area("System prompt", persona.system_prompt, height=220,
                          key=f"pe_prompt_{pid}{fresh}")
    shown_facts, shown_faq = knowledge.to_lines(persona.knowledge)
    cols = st.columns(2)
    facts_text = cols[0].text_area("Facts, one a line", shown_facts, height=160, key=f"pe_facts_{pid}{fresh}",
                                   placeholder="We are open from 9 am to 6 pm, Monday to Saturday.")
    faq_text = cols[1].text_area("FAQ, one a line: question | answer", shown_faq, height=160,
                                 key=f"pe_faq_{pid}{fresh}",
                                 placeholder="Do you deliver? | Yes, within five miles of the shop.")
    greeting = st.text_input("Greeting", persona.greeting, key=f"pe_greeting_{pid}{fresh}")
    cols = st.columns(3)
    current = persona.voice.get(tts.provider_id) or tts.voice
    voice = cols[0].selectbox(f"Voice ({tts.name})", voices or [current or "default"],
                              index=voices.index(current) if current in voices else 0, key=f"pe_voice_{pid}{fresh}")
    silence = cols[1].slider("Silence that ends a turn (ms)", 100, 2000,
                             int(persona.endpointing_ms or engine.settings.forge_endpointing_ms), 20,
                             key=f"pe_silence_{pid}{fresh}",
                             help="Used by the silence end-of-turn detector (FORGE_TURN_DETECTOR=silence, or the "
                                  "Live page's switch); the model detector waits for unfinished turns instead.")
    threshold = cols[2].slider("VAD sensitivity", 0.3, 0.95, float(persona.vad_threshold or 0.5), 0.05,
                               key=f"pe_vad_{pid}{fresh}")
    cols = st.columns(2)
    save = cols[0].form_submit_button("Save persona", type="primary")
    reset = cols[1].form_submit_button("Back to the shipped persona")
if save:
    try:
        facts, faq = knowledge.from_lines(facts_text, faq_text)
        # Only what was changed on the form: an untouched field keeps the version's own value
        # (its prompt template, say, rather than the text filled from the personalization).
        shown_values = {"system_prompt": persona.system_prompt, "greeting": persona.greeting,
                        "endpointing_ms": int(persona.endpointing_ms or engine.settings.forge_endpointing_ms),
                        "vad_threshold": float(persona.vad_threshold or 0.5),
                        "facts": knowledge.from_lines(shown_facts, "")[0], "faq": knowledge.from_lines("", shown_faq)[1]}
        edited = {"system_prompt": prompt, "greeting": greeting, "endpointing_ms": silence, "vad_threshold": threshold,
                  "facts": facts, "faq": faq}
        values = {k: v for k, v in edited.items() if v != shown_values[k]}
        if voices and voice != current:
            values["voice"] = {tts.provider_id: voice}
        version = save_persona_edits(data_dir, pid, values)
        st.success(f"Saved as version {version.number} ({version.note}); it applies from the next conversation "
                   "(the prompt from the next turn).")
    except (PersonaError, knowledge.KnowledgeError) as exc:
        st.error(str(exc))
if reset:
    version = reset_persona(data_dir, pid)
    st.session_state[f"persona_resets_{pid}"] = resets + 1  # the form shows the shipped values again
    st.session_state.persona_note = f"Back to the shipped persona (version {version.number})."
    st.rerun()
if st.session_state.get("persona_note"):
    st.success(st.session_state.pop("persona_note"))

with st.expander("Version history"):
    history = PersonaVersions(data_dir, pid).all()[::-1]
    st.dataframe([{"version": v.number, "saved (UTC)": v.created_at.replace("T", " ")[:19], "source": v.source,
                   "what changed": v.note} for v in history], hide_index=True, key=f"pv_table_{pid}")
    numbers = [v.number for v in history]
    shown = st.selectbox("Show the changes of version", numbers, key=f"pv_pick_{pid}")
    chosen = next(v for v in history if v.number == shown)
    st.code(chosen.diff or "(the first version: nothing before it)", language="diff")
    if shown != persona.version and st.button(f"Make version {shown} current", key=f"pv_rollback_{pid}"):
        version = rollback_persona(data_dir, pid, shown)
        st.session_state[f"persona_resets_{pid}"] = resets + 1
        st.session_state.persona_note = f"Version {shown} is current again, as version {version.number}."
        st.rerun()

st.subheader("Personalization (customer-service persona)")
values = load_personalization(data_dir)
with st.form("personalization"):
    edited = {
        "assistant_name": st.text_input("Assistant name", values["assistant_name"], key="pers_assistant_name"),
        "user_name": st.text_input("User name", values["user_name"], key="pers_user_name"),
        "missing_data": st.text_input("Missing data to ask for", values["missing_data"], key="pers_missing_data"),
        "system_message_suffix": st.text_area("System prompt suffix", values["system_message_suffix"],
                                              key="pers_suffix"),
    }
    saved = st.form_submit_button("Save", type="primary")
if saved:
    try:
        path = save_personalization(data_dir, edited)
        st.success(f"Saved to {path}; it applies from the next turn.")
    except PersonaError as exc:
        st.error(str(exc))

st.subheader("Speech-to-speech (Realtime)")
s = engine.settings
cols = st.columns(4)
cols[0].metric("Voice", s.realtime_voice)
cols[1].metric("VAD threshold", f"{s.realtime_vad_threshold:.2f}")
cols[2].metric("Silence to end a turn", f"{s.realtime_silence_ms} ms")
cols[3].metric("Prefix padding", f"{s.realtime_prefix_padding_ms} ms")
st.caption(("OpenAI's Realtime API (" + s.openai_realtime_model + ")") if s.openai_configured
           else f"Forge's offline Realtime server at {s.forge_realtime_url} (forge realtime-server)")
st.caption("Phone calls run over Realtime " + ("for every call (FORGE_REALTIME_PHONE)." if s.forge_realtime_phone
           else "when a persona sets realtime = true or a call asks for it."))

st.subheader("OpenAI-compatible servers")


@st.cache_data(ttl=30, show_spinner=False)
def server_models(kind: str, base_url: str) -> tuple[list[str], str | None]:
    from voiceforge.providers import ProviderError
    from voiceforge.providers.openai_ import list_models

    try:
        return list_models(engine.settings, kind), None
    except ProviderError as exc:
        return [], str(exc)


rows = []
for kind in ("stt", "llm", "tts"):
    base_url = engine.settings.openai_base_url_for(kind)
    model = getattr(engine.settings, f"openai_{kind}_model")
    rows.append((kind, base_url, model))
    if base_url:
        models, error = server_models(kind, base_url)
        listed = ", ".join(models[:30]) if models else f"(none listed: {error})"
        st.markdown(f"**{kind.upper()}** → `{base_url}` · model `{model}`"
                    + ("" if not models or model in models else " ⚠️ not among the server's models"))
        st.caption(f"Models on that server: {listed}")
if not any(base for _, base, _ in rows):
    st.caption("None configured. Set OPENAI_BASE_URL (or OPENAI_STT_BASE_URL, OPENAI_LLM_BASE_URL, "
               "OPENAI_TTS_BASE_URL) to a server such as Ollama's http://127.0.0.1:11434/v1; no key is needed.")

st.subheader("Settings in use")
s = engine.settings
st.json({"providers": engine.describe(), "openai_base_url": s.openai_base_url, "use_azure": s.use_azure,
         "twilio_configured": s.twilio_configured, "public_base_url": s.public_base_url,
         "redis_url": bool(s.redis_url), "enable_recordings": s.enable_recordings,
         "tool_delay_ms": s.forge_tool_delay_ms, "filler_after_ms": s.forge_filler_after_ms})
st.caption("Settings come from the environment and .env (see .env.sample); change them there and restart.")
