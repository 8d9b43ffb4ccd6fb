"""Tools: every registered tool with its schema, a generated form, fault injection, a text chat."""

from __future__ import annotations

import streamlit as st

import forge_ui

engine = forge_ui.engine()
registry = engine.registry
st.title("🔧 Tools")
names = registry.names()
name = st.selectbox("Tool", names, key="tools_pick")
tool = registry.get(name)
st.markdown(tool.description)

col_form, col_schema = st.columns([3, 2])
with col_schema:
    st.caption("JSON schema the LLM sees")
    st.json(tool.parameters, expanded=False)
    st.caption("Injected behaviour (for this app process)")
    delay = st.number_input("Extra delay (ms)", 0, 30_000, step=250, key=f"fault_delay_{name}")
    fail = st.text_input("Fail with message", key=f"fault_fail_{name}", placeholder="e.g. the CRM is down")
    registry.set_fault(name, delay_ms=int(delay), fail=fail.strip() or None)
    if delay or fail:
        st.caption(f"Slower than {engine.settings.forge_filler_after_ms} ms gets a filler sentence.")

with col_form:
    with st.form(key=f"tool_form_{name}"):
        args = {}
        required = set(tool.parameters["required"])
        for param, spec in tool.parameters["properties"].items():
            label = param + (" *" if param in required else "")
            key = f"tool_arg_{name}_{param}"
            kind = spec.get("type") or spec.get("anyOf", [{}])[0].get("type")
            if "enum" in spec:
                value = st.selectbox(label, spec["enum"], key=key, help=spec.get("description"))
            elif kind == "integer":
                value = st.number_input(label, value=None, step=1, key=key, help=spec.get("description"))
            elif kind == "number":
                value = st.number_input(label, value=None, key=key, help=spec.get("description"))
            elif kind == "boolean":
                value = st.checkbox(label, key=key, help=spec.get("description"))
            else:
                value = st.text_input(label, key=key, help=spec.get("description")) or None
            if value is not None:
                args[param] = int(value) if kind == "integer" else value
        run = st.form_submit_button("Run tool", type="primary")
    if run:
        tool_pipeline = engine.pipeline(st.session_state.get("persona"), channel="tools")
        result = forge_ui.run(tool_pipeline.run_tool(name, args))
        st.caption(f"{name}({args}) took {result.duration_ms:.0f} ms")
        if result.ok:
            st.success("Result")
            st.json(result.result)
        else:
            st.error(f"Error the agent would get: {result.error}")

st.divider()
st.subheader("Chat with the agent")
persona = st.session_state.get("persona") or engine.settings.forge_persona
if st.session_state.get("tools_chat_persona") != persona:
    st.session_state.tools_chat_pipeline = engine.pipeline(persona, channel="chat")
    st.session_state.tools_chat_persona = persona
    st.session_state.tools_chat_turns = []
prompt = st.chat_input("Ask something that needs a tool", key="tools_chat")
if prompt:
    with st.spinner("Working…"):
        r = forge_ui.run(st.session_state.tools_chat_pipeline.text_turn(prompt))
    st.session_state.tools_chat_turns.append({"user_text": r.user_text, "assistant_text": r.reply, "error": r.error,
                                              "tool_calls": r.tool_calls, "timings_ms": r.timings_ms})
for i, turn in enumerate(st.session_state.tools_chat_turns):
    forge_ui.show_turn(turn, key=f"tools-chat-{i}")
