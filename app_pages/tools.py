"""Tools: every tool an agent can reach (built-in, declared as data, from MCP), its schema, a generated
form, fault injection, the agent's declared tools as an editable file, and a text chat."""

from __future__ import annotations

import tomllib

import streamlit as st

import forge_ui
from voiceforge.agent.agents import to_toml
from voiceforge.agent.persona import PersonaError, current_version, list_personas, save_persona_edits
from voiceforge.tools import mcp_servers

engine = forge_ui.engine()
st.title("🔧 Tools")
names_of = forge_ui.persona_names()
agents = list_personas(data_dir=engine.settings.forge_data_dir)
default = st.session_state.get("persona") or engine.settings.forge_persona
agent = st.selectbox("Agent", agents, index=agents.index(default) if default in agents else 0, key="tools_agent",
                     format_func=lambda p: names_of.get(p, p),
                     help="Built-in tools serve every agent; an agent's own tools (declared in its file or "
                          "below, or from its MCP servers) serve only it.")
try:
    agent_pipeline = engine.pipeline(agent, channel="tools", persist=False)
except PersonaError as exc:
    st.error(f"{agent} does not load: {exc}")
    st.stop()
if "tools_note" in st.session_state:
    st.success(st.session_state.pop("tools_note"))
registry = agent_pipeline.registry
offered = {t.name for t in agent_pipeline.tools}
names = registry.names()
name = st.selectbox("Tool", names, key=f"tools_pick_{agent}",
                    format_func=lambda n: f"{n} · {registry.get(n).kind}" + ("" if n in offered else " · not offered"))
tool = registry.get(name)
st.markdown(tool.description)
if name not in offered:
    st.caption(f"{agent} is not offered this tool (add it to its tools on the Personas page); it runs here all the same.")

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
        result = forge_ui.run(agent_pipeline.run_tool(name, args))
        st.caption(f"{name}({args}) took {result.duration_ms:.0f} ms")
        if result.ok:
            st.success("Result")
            st.json(result.result)
        else:
            st.error(f"Error the agent would get: {result.error}")

persona_now = agent_pipeline.persona
with st.expander(f"{persona_now.name}'s own tools: declare, edit, MCP servers"):
    st.caption("Each [[tool]] table is one tool: kind = \"http\" (a webhook), \"sql\" (a SELECT over the mock "
               "customers, orders and appointments) or \"mock\" (canned results). Saving makes a new version of "
               "the agent (Personas page → Version history) and offers every tool declared here to it.")
    templates = {
        "http": {"name": "check_stock", "description": "Check whether an item is in stock", "kind": "http",
                 "examples": ["do you have the blue jacket", "is the red scarf in stock"], "method": "GET",
                 "url": "https://example.com/stock/{item}", "timeout_s": 3,
                 "parameters": {"item": {"type": "string", "description": "the item", "examples": ["blue jacket"]}}},
        "sql": {"name": "my_tier", "description": "The caller's loyalty tier", "kind": "sql",
                "examples": ["what tier am I", "which loyalty level do I have"],
                "query": "SELECT name, tier FROM customers WHERE id = :customer_id",
                "say": "{name}, you are on the {tier} tier.",
                "parameters": {"customer_id": {"type": "integer", "description": "the customer's number"}}},
        "mock": {"name": "opening_hours", "description": "Opening hours of a branch", "kind": "mock",
                 "examples": ["when is the north branch open"],
                 "parameters": {"branch": {"type": "string", "enum": ["north", "south"]}},
                 "results": [{"when": {"branch": "north"}, "result": {"hours": "9 to 5"}}],
                 "result": {"hours": "10 to 6"}, "say": "It is open {hours}."},
    }
    latest = current_version(agent, engine.settings.forge_data_dir)
    tables = list(latest.definition.get("tool", []))
    adding = st.selectbox("Start a new tool from", ["(nothing)", *templates], key=f"tools_template_{agent}")
    shown = tables + ([templates[adding]] if adding in templates else [])
    text = st.text_area("Declared tools (TOML)", to_toml({"tool": shown}) if shown else "", height=320,
                        key=f"tools_toml_{agent}_{adding}_{latest.number}")
    if st.button("Save tools", key=f"tools_save_{agent}", type="primary"):
        try:
            declared = tomllib.loads(text).get("tool", []) if text.strip() else []
            if not isinstance(declared, list):
                raise PersonaError("tools are [[tool]] tables")
            allowed = list(persona_now.tools)
            for table in declared:
                if "*" not in allowed and isinstance(table, dict) and table.get("name") not in allowed:
                    allowed.append(str(table.get("name")))
            version = save_persona_edits(engine.settings.forge_data_dir, agent, {"tool": declared or None,
                                                                                 "tools": allowed})
            st.session_state.tools_note = f"Saved as version {version.number} of {agent}."
            st.rerun()
        except tomllib.TOMLDecodeError as exc:
            st.error(f"Not TOML: {exc}")
        except PersonaError as exc:
            st.error(str(exc))
    if persona_now.mcp:
        st.markdown("**MCP servers** (listed once per process)")
        st.dataframe(mcp_servers.status(persona_now.mcp), hide_index=True, key=f"tools_mcp_{agent}")
        if st.button("List their tools again", key=f"tools_mcp_again_{agent}"):
            mcp_servers.forget(persona_now.mcp)
            st.rerun()
    else:
        st.caption("No MCP servers: add [[mcp]] tables to the agent's file (command or url, and allow).")

st.divider()
st.subheader("Chat with the agent")
persona = f"{agent}:{persona_now.version}"  # a new chat when the agent or its version changes
if st.session_state.get("tools_chat_persona") != persona:
    st.session_state.tools_chat_pipeline = engine.pipeline(agent, channel="chat")
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
