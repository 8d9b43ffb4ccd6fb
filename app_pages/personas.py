"""Personas & settings: the agents (new, duplicate, import, export, delete), their edits, the personalization."""

from __future__ import annotations

import streamlit as st

import forge_ui
from voiceforge.agent import knowledge
from voiceforge.agent.agents import (
    MAX_AGENT_BYTES,
    create_agent,
    delete_agent,
    describe_agents,
    duplicate_agent,
    export_agent,
    import_agent,
)
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

data_dir = engine.settings.forge_data_dir
if "agents_note" in st.session_state:
    st.success(st.session_state.pop("agents_note"))


def _open(agent_id: str, note: str) -> None:
    """Show ``agent_id`` in the picker after the rerun, with ``note``."""
    forge_ui.persona_names.clear()  # the pickers list it now, not when the cache expires
    st.session_state.personas_pick = agent_id
    st.session_state.agents_note = note
    st.rerun()


with st.expander("Agents: new, duplicate, import, export, delete"):
    st.caption("Shipped agents are files in prompts/; agents made here are files in the data folder's agents/ "
               "(commit them, or export one as a single file and import it elsewhere). The file name is the id.")
    st.dataframe(describe_agents(data_dir), hide_index=True, key="agents_table")
    new_tab, copy_tab, import_tab, delete_tab = st.tabs(["New", "Duplicate", "Import", "Delete"])
    with new_tab, st.form("agent_new"):
        cols = st.columns(2)
        new_id = cols[0].text_input("Id (the file name)", placeholder="pizza_palace", key="agent_new_id")
        new_name = cols[1].text_input("Name", placeholder="Pia", key="agent_new_name")
        new_greeting = st.text_input("What it says first", placeholder="Hi, Pia at Pizza Palace. What can I get you?",
                                     key="agent_new_greeting")
        new_prompt = st.text_area("System prompt", placeholder="You are Pia, who takes pizza orders.",
                                  key="agent_new_prompt")
        new_tools = st.multiselect("Built-in tools it may use", engine.registry.names(), default=["end_call"],
                                   key="agent_new_tools")
        made = st.form_submit_button("Create agent", type="primary")
    if made:
        try:
            create_agent(data_dir, new_id, {"name": new_name, "greeting": new_greeting, "system_prompt": new_prompt,
                                            "tools": new_tools})
            _open(new_id.strip(), f"Created {new_id.strip()}: add facts below, and tools on the Tools page.")
        except PersonaError as exc:
            st.error(str(exc))
    with copy_tab, st.form("agent_copy"):
        cols = st.columns(2)
        source = cols[0].selectbox("Copy", list_personas(data_dir=data_dir), key="agent_copy_source")
        copy_id = cols[1].text_input("New id", key="agent_copy_id")
        copied = st.form_submit_button("Duplicate")
    if copied:
        try:
            duplicate_agent(data_dir, source, copy_id)
            _open(copy_id.strip(), f"{copy_id.strip()} is a copy of {source}'s current version.")
        except PersonaError as exc:
            st.error(str(exc))
    with import_tab:
        upload = st.file_uploader("An agent file (.toml)", type=["toml"], key="agent_import_file",
                                  help=f"At most {MAX_AGENT_BYTES // 1024} KiB; its id key (or the id below) names it.")
        import_id = st.text_input("Id (default: the file's id)", key="agent_import_id")
        if st.button("Import", key="agent_import_go", disabled=upload is None):
            try:
                size = upload.size if upload is not None else 0
                if size > MAX_AGENT_BYTES:
                    raise PersonaError(f"an agent file is at most {MAX_AGENT_BYTES // 1024} KiB")
                path = import_agent(data_dir, upload.getvalue(), import_id.strip() or None)
                _open(path.stem, f"Imported {path.stem}.")
            except PersonaError as exc:
                st.error(str(exc))
    with delete_tab:
        own = [r["id"] for r in describe_agents(data_dir) if r["where"] == "app"]
        if not own:
            st.caption("No agent made in the app yet (shipped agents are edited in prompts/).")
        else:
            gone = st.selectbox("Agent made in the app", own, key="agent_delete_pick")
            sure = st.checkbox(f"Delete {gone} and its versions (its conversations stay)", key="agent_delete_sure")
            if st.button("Delete agent", key="agent_delete_go", disabled=not sure):
                delete_agent(data_dir, gone)
                forge_ui.persona_names.clear()
                st.session_state.pop("personas_pick", None)
                st.session_state.agents_note = f"Deleted {gone}."
                st.rerun()

names = forge_ui.persona_names()
ids = list_personas(data_dir=data_dir)
if st.session_state.get("personas_pick") not in ids:
    st.session_state.pop("personas_pick", None)
pid = st.selectbox("Persona", ids, key="personas_pick", format_func=lambda p: names.get(p, p))
try:
    persona = engine.persona(pid)
except PersonaError as exc:
    st.error(f"{pid} does not load: {exc}")
    st.stop()
st.markdown(f"**{persona.name}** — {persona.description}")
own_tools = ", ".join(f"{t.name} ({t.kind})" for t in persona.own_tools)
st.caption(f"Tools: {', '.join(persona.tools)}" + (f" · its own: {own_tools}" if own_tools else "")
           + (f" · MCP servers: {', '.join(m.name for m in persona.mcp)}" if persona.mcp else "")
           + f" · phone replies ≤ {persona.phone_max_sentences} sentences")
st.download_button("Export this agent (.toml)", export_agent(data_dir, pid), file_name=f"{pid}.toml",
                   mime="application/toml", key=f"agent_export_{pid}")
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
    cols = st.columns([1, 2])
    name_in = cols[0].text_input("Name", persona.name, key=f"pe_name_{pid}{fresh}")
    description_in = cols[1].text_input("Description", persona.description, key=f"pe_description_{pid}{fresh}")
    prompt = st.text_area("System prompt", persona.system_prompt, height=220,
                          key=f"pe_prompt_{pid}{fresh}")
    choosable = engine.registry.names() + [t.name for t in persona.own_tools]
    every = "*" in persona.tools
    tools_in = st.multiselect("Tools it may use (empty: every built-in tool)", choosable,
                              default=[] if every else [t for t in persona.tools if t in choosable],
                              key=f"pe_tools_{pid}{fresh}",
                              help="Its own tools (declared in its file or made on the Tools page) must be named "
                                   "here; its MCP servers' allowed tools always are.")
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
    cols = st.columns(3)
    detectors = ["(the setting)", "model", "silence"]
    detector = cols[0].selectbox("End-of-turn detector", detectors, index=detectors.index(persona.turn_detector or
                                 "(the setting)"), key=f"pe_detector_{pid}{fresh}")
    idle = cols[1].number_input("Reprompt after silence (s, 0: never)", 0.0, 600.0,
                                float(persona.idle_s if persona.idle_s is not None else engine.settings.forge_idle_s),
                                key=f"pe_idle_{pid}{fresh}")
    longest = cols[2].number_input("Longest conversation (s, 0: no limit)", 0.0, 86_400.0,
                                   float(persona.max_call_s if persona.max_call_s is not None
                                         else engine.settings.forge_max_call_s), key=f"pe_longest_{pid}{fresh}")
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
                        "facts": knowledge.from_lines(shown_facts, "")[0], "faq": knowledge.from_lines("", shown_faq)[1],
                        "name": persona.name, "description": persona.description,
                        "tools": [] if every else [t for t in persona.tools if t in choosable],
                        "turn_detector": persona.turn_detector or "(the setting)",
                        "idle_s": float(persona.idle_s if persona.idle_s is not None else engine.settings.forge_idle_s),
                        "max_call_s": float(persona.max_call_s if persona.max_call_s is not None
                                            else engine.settings.forge_max_call_s)}
        edited = {"system_prompt": prompt, "greeting": greeting, "endpointing_ms": silence, "vad_threshold": threshold,
                  "facts": facts, "faq": faq, "name": name_in, "description": description_in, "tools": tools_in,
                  "turn_detector": detector, "idle_s": float(idle), "max_call_s": float(longest)}
        values = {k: v for k, v in edited.items() if v != shown_values[k]}
        if "tools" in values:
            values["tools"] = values["tools"] or ["*"]
        if values.get("turn_detector") == "(the setting)":
            values["turn_detector"] = None  # removes the key: the setting decides
        if voices and voice != current:
            values["voice"] = {tts.provider_id: voice}
        version = save_persona_edits(data_dir, pid, values)
        if "name" in values:
            forge_ui.persona_names.clear()
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
