"""Streamlit AppTest: each page renders, and its main interaction works."""

from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from voiceforge.config import load_settings
from voiceforge.store.db import get_database
from voiceforge.store.models import ToolCallRecord, Turn

pytestmark = pytest.mark.app
APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORGE_SIDECAR_URL", "http://127.0.0.1:9")  # nothing listens: shows "down"
    import streamlit as st

    st.cache_resource.clear()  # the engine is cached per process; each test has its own data dir
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def goto(at, page: str):
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def db():
    return get_database(load_settings().database_url_resolved)


def test_home_renders_status_and_explains_missing_twilio(app):
    assert app.title[0].value == "🔨 Forge"
    sidebar = " ".join(t.value for t in app.sidebar.text)
    assert "STT: whisper" in sidebar and "LLM: offline" in sidebar and "Sidecar: down" in sidebar
    assert "Twilio: not configured" in sidebar
    assert {m.label for m in app.metric} >= {"Speech to text", "LLM", "Customers"}
    assert app.button(key="home_call").disabled
    assert "TWILIO_ACCOUNT_SID" in app.info[0].value


def test_voice_chat_typed_turn_answers_and_is_stored(app):
    goto(app, "app_pages/voice_chat.py")
    app.chat_input(key="voice_text").set_value("How many customers are there?").run()
    assert not app.exception
    texts = [m.value for m in app.markdown]
    assert "How many customers are there?" in texts and "The answer is 40." in texts
    with db().read_session() as s:
        assert s.scalar(select(func.count(Turn.id))) == 1
        assert s.scalars(select(ToolCallRecord.name)).all() == ["run_sql"]


def test_tools_form_runs_a_tool(app):
    goto(app, "app_pages/tools.py")
    app.selectbox(key="tools_pick_customer_service").set_value("lookup_customer").run()
    # Form widgets only send their values with the submit, so set and click in one run.
    app.number_input(key="tool_arg_lookup_customer_customer_id").set_value(3)
    app.button(key="FormSubmitter:tool_form_lookup_customer-Run tool").click().run()
    assert not app.exception
    assert app.success[0].value == "Result"
    assert any('"customer_id": 3' in j.value and '"tier"' in j.value for j in app.json)


def test_tools_injected_failure_reaches_the_agent(app):
    goto(app, "app_pages/tools.py")
    app.selectbox(key="tools_pick_customer_service").set_value("run_sql").run()
    app.text_input(key="fault_fail_run_sql").set_value("the reporting database is down").run()
    app.chat_input(key="tools_chat").set_value("How many orders are shipped?").run()
    assert not app.exception
    texts = [m.value for m in app.markdown]
    assert "Sorry, the reporting database is down." in texts


def test_phone_page_lists_calls_and_sms(app):
    from voiceforge.store import calls

    calls.record_call(db(), "CA" + "5" * 32, "outbound", "+15005550006", "+14155550100", "customer_service")
    calls.add_status(db(), "CA" + "5" * 32, "completed", 3)
    calls.record_sms(db(), "inbound", "+14155550100", "+15005550006", "Hello there", "SM1", "received")
    goto(app, "app_pages/phone.py")
    assert app.selectbox(key="calls_open").value == "CA" + "5" * 32
    assert any("queued → completed" in c.value for c in app.caption)
    assert any(e.label.startswith("+14155550100") for e in app.expander)
    assert str(app.dataframe[0].value["created_at"].dtype).startswith("datetime64")  # not a raw ISO string
    assert any(c.value.startswith("received · 20") and c.value.endswith(" UTC") for c in app.caption)
    app.selectbox(key="calls_open").set_value("CA" + "5" * 32).run()  # an older call is open...
    calls.record_call(db(), "CA" + "6" * 32, "inbound", "+14155550100", "+15005550006", "customer_service")
    app.session_state["calls_open_next"] = "CA" + "6" * 32  # ...when a simulated call ends (what its button sets)
    app.run()
    assert app.selectbox(key="calls_open").value == "CA" + "6" * 32


def test_offline_sms_simulator_texts_the_agent_and_keeps_the_thread(app):
    goto(app, "app_pages/phone.py")
    app.text_input(key="sms_sim_from").set_value("+15550000023")  # a mock customer: run_sql is theirs
    app.text_input(key="sms_sim_body").set_value("How many customers are there?")
    app.button(key="FormSubmitter:sms_sim_form-Send to the agent").click().run()
    assert not app.exception, app.exception
    assert app.success[0].value == "Reply: The answer is 40."
    app.run()
    thread = next(e for e in app.expander if e.label.startswith("+15550000023"))
    assert thread.label.endswith("(2)")  # the text and the agent's reply, stored on the sender's thread


def test_conversations_page_opens_a_timeline(app):
    goto(app, "app_pages/voice_chat.py")
    app.chat_input(key="voice_text").set_value("Show the appointments for customer 2").run()
    goto(app, "app_pages/conversations.py")
    log = app.dataframe[0].value
    assert list(log["title"]) == ["Show the appointments for customer 2"] and log["turns"][0] == 1
    assert log["errors"][0] == 0 and log["interruptions"][0] == 0
    assert app.subheader[0].value == "#1 · Show the appointments for customer 2"  # the newest opens
    texts = [m.value for m in app.markdown]
    assert "Show the appointments for customer 2" in texts


def test_conversations_page_shows_what_a_conversation_left_open(app):
    goto(app, "app_pages/voice_chat.py")
    app.chat_input(key="voice_text").set_value("I'd like a repair visit on Monday").run()
    goto(app, "app_pages/conversations.py")
    captions = [c.value for c in app.caption]
    assert ("🧩 Dialogue state: waiting for **who is calling (a name or customer number)** · "
            "request “I'd like a repair visit on Monday”") in captions, captions


def test_conversations_page_after_a_filtered_delete_says_what_is_still_stored(app):
    goto(app, "app_pages/voice_chat.py")
    app.chat_input(key="voice_text").set_value("Where is my order?").run()
    from voiceforge.store import conversations as store

    other = store.create_conversation(db(), "cli", "customer_service", "How many customers are there?")
    goto(app, "app_pages/conversations.py")
    assert len(app.dataframe[0].value) == 2
    app.text_input(key="conv_search").set_value("order").run()
    assert list(app.dataframe[0].value["title"]) == ["Where is my order?"]
    app.button(key=f"conv_delete_{1}").click().run()
    assert not app.exception, app.exception
    assert [c["id"] for c in store.list_conversations(db())] == [other]
    captions = " ".join(c.value for c in app.caption)
    assert "Nothing stored yet" not in captions and "No conversation matches the filter (1 stored)" in captions


def test_voice_chat_survives_a_reload_and_asks_before_a_persona_switch(app):
    goto(app, "app_pages/voice_chat.py")
    app.chat_input(key="voice_text").set_value("How many customers are there?").run()
    assert app.query_params["conversation"] == "1"
    reloaded = AppTest.from_file(APP, default_timeout=120)  # a new browser session on the same URL
    reloaded.query_params["conversation"] = "1"
    reloaded.run()
    reloaded.switch_page("app_pages/voice_chat.py").run()
    assert not reloaded.exception, reloaded.exception
    assert "The answer is 40." in [m.value for m in reloaded.markdown]
    reloaded.sidebar.selectbox(key="persona").set_value("friendly_guide").run()
    assert "starts a new conversation" in reloaded.warning[0].value
    reloaded.button(key="chat_keep").click().run()
    assert reloaded.sidebar.selectbox(key="persona").value == "customer_service"
    assert "The answer is 40." in [m.value for m in reloaded.markdown]


def test_personalization_edit_applies_on_the_next_turn(app):
    goto(app, "app_pages/personas.py")
    app.text_input(key="pers_assistant_name").set_value("Priya")
    app.button(key="FormSubmitter:personalization-Save").click().run()
    assert "applies from the next turn" in app.success[0].value
    goto(app, "app_pages/voice_chat.py")
    app.chat_input(key="voice_text").set_value("Hello").run()
    assert "Hi, I'm Priya. How can I help you today?" in [m.value for m in app.markdown]


def test_devices_page_registers_configures_and_forgets(app):
    from voiceforge.store import children
    from voiceforge.store import devices as store

    goto(app, "app_pages/devices.py")
    app.text_input(key="child_name").set_value("Arjun")
    app.checkbox(key="child_consent").check()
    app.button(key="FormSubmitter:new_child-Add").click().run()
    assert not app.exception and any("Added Arjun" in s.value for s in app.success)
    (child,) = children.list_children(db())
    app.text_input(key="dev_name").set_value("bedroom")
    app.selectbox(key="dev_child").set_value(child["child_id"])
    app.button(key="FormSubmitter:register_device-Register").click().run()
    assert not app.exception
    token = app.code[0].value
    (device,) = store.list_devices(db())
    assert store.authenticate(db(), token)["device_id"] == device["device_id"]  # the token shown works
    assert token not in str(store.list_devices(db()))  # and is not kept
    app.slider(key=f"dev_volume_{device['device_id']}").set_value(40)
    app.button(key=f"FormSubmitter:settings_{device['device_id']}-Save settings").click().run()
    assert store.get_device(db(), device["device_id"])["settings"]["volume"] == 40
    children.record_verse(db(), child["child_id"], 2)
    app.run()
    assert app.button(key=f"child_delete_{child['child_id']}").disabled  # not without the confirmation
    app.checkbox(key=f"child_delete_sure_{child['child_id']}").check().run()
    app.button(key=f"child_delete_{child['child_id']}").click().run()
    assert not app.exception and children.list_children(db()) == []
    assert store.get_device(db(), device["device_id"])["child_id"] is None
    assert "No children yet." in [c.value for c in app.caption]  # gone from the page, not only the database
    assert any("Deleted Arjun" in s.value for s in app.success)
    assert "Arjun" not in str(app.dataframe[0].value["child"].tolist())
    app.selectbox(key="dev_delete_pick").set_value(device["device_id"])
    app.button(key="dev_delete").click().run()
    assert not app.exception and store.list_devices(db()) == []
    assert "No devices yet." in [c.value for c in app.caption]


def test_compare_page_runs_the_default_set_and_shows_its_table_and_charts(app):
    goto(app, "app_pages/compare.py")
    app.multiselect(key="cmp_styles").set_value(["batch"]).run()
    app.button[0].click().run()  # "Run the comparison": the default set, spoken by Piper, through batch
    assert not app.exception, app.exception
    summary = app.dataframe[0].value  # results, then pros and cons, then every utterance
    assert list(summary["style"]) == ["Batch: STT → LLM → TTS"] and summary["turns"][0] == 4
    assert summary["failed"][0] == 0
    assert 0 < summary["voice-to-voice p50 (ms)"][0] <= summary["p95 (ms)"][0]
    assert summary["WER"][0] <= 0.25 and summary["cost / turn"][0] == "$0 (local)"
    assert len(app.get("vega_lite_chart")) == 2  # latency and stages
    qualitative = app.table[0].value  # a table, so its text wraps instead of being cut off
    assert qualitative.index[0] == "Batch: STT → LLM → TTS"
    assert qualitative["real-time"].iloc[0].endswith("ms p50 to first audio")
    assert "turns per minute" in qualitative["scalability"].iloc[0]


def test_a_persona_edited_on_the_settings_page_drives_the_next_conversation(app):
    from voiceforge.conversation import ConversationLoop
    from voiceforge.engine import Engine
    from voiceforge.transport import Transport

    goto(app, "app_pages/personas.py")
    app.selectbox(key="personas_pick").set_value("friendly_guide").run()
    app.text_input(key="pe_greeting_friendly_guide").set_value("Hello from the settings page.")
    app.slider(key="pe_silence_friendly_guide").set_value(720)
    app.slider(key="pe_vad_friendly_guide").set_value(0.8)
    app.button(key="FormSubmitter:persona_edit_friendly_guide-Save persona").click().run()
    assert not app.exception, app.exception
    assert app.success[0].value.startswith("Saved as version 2 (edited endpointing_ms, greeting, vad_threshold")

    class Silent(Transport):
        async def send_audio(self, pcm16, sample_rate): ...
        async def clear(self): ...
        async def mark(self, name): ...
        async def hang_up(self): ...

    engine = Engine(load_settings())
    persona = engine.persona("friendly_guide")
    assert persona.greeting == "Hello from the settings page." and persona.vad_threshold == 0.8
    # The silence applies to the silence endpoint (the model detector keeps it for a switch).
    assert ConversationLoop(engine.pipeline("friendly_guide"), Silent(), greet=False).silence_ms == 720
    loop = ConversationLoop(engine.pipeline("friendly_guide"), Silent(), greet=False, turn_detector="silence")
    assert loop.listener.endpointing_ms == 720 and loop.listener.vad_aggressiveness == 3  # 0.8 → the strictest webrtcvad
    app.button(key="FormSubmitter:persona_edit_friendly_guide-Back to the shipped persona").click().run()
    assert engine.persona("friendly_guide").greeting != "Hello from the settings page."


def test_back_to_the_shipped_persona_shows_the_shipped_values(app):
    from voiceforge.agent.persona import load_persona

    data_dir = load_settings().forge_data_dir
    shipped = load_persona("friendly_guide", data_dir).greeting
    goto(app, "app_pages/personas.py")
    app.selectbox(key="personas_pick").set_value("friendly_guide").run()
    app.text_input(key="pe_greeting_friendly_guide").set_value("An edited greeting.")
    app.button(key="FormSubmitter:persona_edit_friendly_guide-Save persona").click().run()
    assert app.text_input(key="pe_greeting_friendly_guide").value == "An edited greeting."
    app.button(key="FormSubmitter:persona_edit_friendly_guide-Back to the shipped persona").click().run()
    assert not app.exception, app.exception
    (shown,) = [t for t in app.text_input if t.label == "Greeting"]
    assert shown.value == shipped  # not the edited value
    assert "Back to the shipped persona (version 3)." in [s.value for s in app.success]
    app.button(key="FormSubmitter:persona_edit_friendly_guide-Save persona").click().run()
    assert load_persona("friendly_guide", data_dir).greeting == shipped  # Save does not re-apply the edit
    from voiceforge.agent.versions import PersonaVersions

    history = PersonaVersions(data_dir, "friendly_guide").all()
    assert [(v.number, v.source) for v in history] == [(1, "file"), (2, "app"), (3, "reset")]  # nothing unchanged saved
    assert '-  "greeting": "Hi, I\'m Sunny!' in history[1].diff and '+  "greeting": "An edited greeting."' in history[1].diff
    app.selectbox(key="pv_pick_friendly_guide").set_value(2).run()
    app.button(key="pv_rollback_friendly_guide").click().run()
    assert not app.exception, app.exception
    assert load_persona("friendly_guide", data_dir).greeting == "An edited greeting."
    assert PersonaVersions(data_dir, "friendly_guide").latest().note == "rollback to version 2"
    assert "Version 2 is current again, as version 4." in [s.value for s in app.success]


def test_evals_page_runs_a_suite_on_two_versions_and_keeps_the_run(app):
    from voiceforge.agent.persona import save_persona_edits

    data_dir = load_settings().forge_data_dir
    save_persona_edits(data_dir, "calm_concierge", {"greeting": "A second version."})
    goto(app, "app_pages/evals.py")
    app.selectbox(key="ev_suite").set_value("calm_concierge.yaml").run()
    app.multiselect(key="ev_versions_calm_concierge.yaml_calm_concierge").set_value([1, 2]).run()
    app.button(key="ev_run").click().run()
    assert not app.exception, app.exception
    matrix = app.table[0].value
    assert list(matrix.columns) == ["version 1", "version 2"]
    assert set(matrix.index) == {"introduces itself", "looks a customer up by number", "counts the customers",
                                 "refuses what it cannot do"}
    assert (matrix == "✅ pass").all().all()
    side = " ".join(m.value for m in app.markdown)
    assert "| passed | 4 of 4 | 4 of 4 |" in side and "Replies that changed: 0" in side  # a greeting edit changes none
    assert len(list((data_dir / "eval-runs").glob("*.json"))) == 1  # kept
    goto(app, "app_pages/evals.py")  # a fresh visit lists it
    (shown,) = app.selectbox(key="ev_shown").options
    assert "calm_concierge.yaml · calm_concierge · text" in shown


def test_an_agent_made_on_the_personas_page_gets_a_declared_tool_on_the_tools_page(app):
    from voiceforge.agent.persona import load_persona

    data_dir = load_settings().forge_data_dir
    goto(app, "app_pages/personas.py")
    app.text_input(key="agent_new_id").set_value("deli")
    app.text_input(key="agent_new_name").set_value("Dee")
    app.text_input(key="agent_new_greeting").set_value("Deli counter, Dee speaking.")
    app.button(key="FormSubmitter:agent_new-Create agent").click().run()
    assert not app.exception, app.exception
    assert app.selectbox(key="personas_pick").value == "deli" and (data_dir / "agents" / "deli.toml").is_file()
    assert app.success[0].value.startswith("Created deli")

    goto(app, "app_pages/tools.py")
    app.selectbox(key="tools_agent").set_value("deli").run()
    app.selectbox(key="tools_template_deli").set_value("mock").run()
    (editor,) = [t for t in app.text_area if t.label == "Declared tools (TOML)"]
    assert 'name = "opening_hours"' in editor.value
    editor.set_value(editor.value.replace("10 to 6", "8 to 8"))
    app.button(key="tools_save_deli").click().run()
    assert not app.exception, app.exception
    assert app.success[0].value == "Saved as version 2 of deli."
    deli = load_persona("deli", data_dir)
    assert [t.name for t in deli.own_tools] == ["opening_hours"] and "opening_hours" in deli.tools
    app.selectbox(key="tools_pick_deli").set_value("opening_hours").run()
    app.text_input(key="fault_fail_opening_hours").set_value("the rota is missing").run()
    app.chat_input(key="tools_chat").set_value("when is the south branch open").run()
    assert "Sorry, the rota is missing." in [m.value for m in app.markdown]
    app.text_input(key="fault_fail_opening_hours").set_value("").run()
    app.chat_input(key="tools_chat").set_value("when is the south branch open").run()
    assert "It is open 8 to 8." in [m.value for m in app.markdown]

    (editor,) = [t for t in app.text_area if t.label == "Declared tools (TOML)"]
    editor.set_value(editor.value.replace('name = "opening_hours"', 'name = "run_sql"'))
    app.button(key="tools_save_deli").click().run()
    assert "run_sql is a built-in tool's name" in app.error[0].value
    assert load_persona("deli", data_dir).version == 2  # nothing saved


def test_agents_are_duplicated_imported_and_deleted_on_the_personas_page(app):
    data_dir = load_settings().forge_data_dir
    goto(app, "app_pages/personas.py")
    app.selectbox(key="agent_copy_source").set_value("pizza_shop")
    app.text_input(key="agent_copy_id").set_value("pizza_two")
    app.button(key="FormSubmitter:agent_copy-Duplicate").click().run()
    assert not app.exception, app.exception
    assert app.selectbox(key="personas_pick").value == "pizza_two"
    assert any("place_order (http)" in c.value for c in app.caption)
    assert app.get("download_button")  # the export
    agents = app.dataframe[0].value
    assert set(agents[agents["where"] == "app"]["id"]) == {"pizza_two"}
    app.selectbox(key="agent_delete_pick").set_value("pizza_two")
    app.checkbox(key="agent_delete_sure").check().run()
    app.button(key="agent_delete_go").click().run()
    assert not app.exception and not (data_dir / "agents" / "pizza_two.toml").exists()
    assert "Deleted pizza_two." in [s.value for s in app.success]


async def test_conversations_page_lists_a_live_call_and_hangs_it_up(tmp_path, monkeypatch):
    """A phone call held by a real sidecar shows under "Live now", and its Hang up button ends it there."""
    import asyncio

    import streamlit as st

    from server.main import create_app
    from tests.support.servers import free_port, serve
    from tests.support.twilio_caller import TwilioCaller
    from voiceforge.config import get_settings

    port, token = free_port(), "live-now-token"
    env = {"FORGE_DATA_DIR": str(tmp_path), "FORGE_SIDECAR_URL": f"http://127.0.0.1:{port}",
           "FORGE_API_KEY": "live-now-key", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "TWILIO_AUTH_TOKEN": token}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    with serve(create_app(load_settings()), port=port) as base:
        caller = TwilioCaller(base, token)
        await caller.dial()
        assert await caller.heard_after(0, 30) > 0.5
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        goto(at, "app_pages/conversations.py")
        live = at.dataframe[0].value
        assert list(live["call SID"]) == [caller.call_sid] and list(live["kind"]) == ["phone"], live
        at.button(key="conv_live_hangup").click().run()
        assert not at.exception and "Ended on" in at.success[0].value
        for _ in range(50):
            if caller.closed_by_server:
                break
            await asyncio.sleep(0.1)
        assert caller.closed_by_server
    get_settings.cache_clear()
