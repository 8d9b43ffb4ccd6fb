"""Agents built without Python: declared HTTP, SQL and mock tools, MCP servers, and agents made in the app.

Every HTTP tool here calls a real server on loopback; the MCP servers are the official SDK's,
over stdio (a child process) and streamable HTTP; SQL tools run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.support.servers import serve
from voiceforge.agent.agents import (
    MAX_AGENT_BYTES,
    create_agent,
    delete_agent,
    describe_agents,
    duplicate_agent,
    export_agent,
    import_agent,
)
from voiceforge.agent.persona import PersonaError, list_personas, load_persona, save_persona_edits
from voiceforge.engine import Engine

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _bakery_backend() -> tuple[FastAPI, list[dict]]:
    app, seen = FastAPI(), []

    @app.get("/cakes/{flavour:path}")
    async def cake(flavour: str, request: Request):  # noqa: ANN202
        seen.append({"path": request.scope["raw_path"].decode(), "auth": request.headers.get("authorization")})
        if flavour == "slow":
            await asyncio.sleep(3)
        if flavour == "huge":
            return Response(b"x" * 2_000_000, media_type="text/plain")
        if flavour == "broken":
            return JSONResponse({"detail": "the oven is on fire"}, status_code=500)
        return {"data": {"flavour": flavour, "available": flavour != "lemon", "price": 30}}

    @app.post("/orders")
    async def order(request: Request):  # noqa: ANN202
        body = await request.json()
        seen.append({"path": "/orders", "body": body})
        return {"order": 17, **body}

    return app, seen


BAKERY = '''
id = "bakery"
name = "Bea"
greeting = "Hi, this is Bea from the bakery. What can I get you?"
system_prompt = "You are Bea. You take cake orders for a small bakery."
facts = ["We open at 7 am and close at 6 pm every day.", "A birthday cake costs 30 dollars."]
tools = ["check_cake", "order_cake", "end_call"]

[[tool]]
name = "check_cake"
description = "Check whether a cake flavour is available today"
examples = ["do you have chocolate cake", "is the lemon cake available today"]
kind = "http"
method = "GET"
url = "${BAKERY_API}/cakes/{flavour}"
headers = { Authorization = "Bearer ${BAKERY_KEY}" }
timeout_s = 1
result = { available = "data.available", flavour = "data.flavour" }
say = "{flavour} cake available: {available}."
[tool.parameters.flavour]
type = "string"
description = "the cake flavour, one word"

[[tool]]
name = "order_cake"
description = "Order a cake for a day"
examples = ["I'd like to order a chocolate cake for Saturday", "can I order a cake"]
kind = "http"
method = "POST"
url = "${BAKERY_API}/orders"
body = { flavour = "{flavour}", candles = "{candles}", note = "for {flavour} lovers" }
confirm = true
[tool.parameters.flavour]
type = "string"
enum = ["chocolate", "lemon", "carrot"]
[tool.parameters.candles]
type = "integer"
required = false
default = 0
'''


@pytest.fixture
def bakery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(prompts folder holding bakery.toml, data folder, what the backend saw)."""
    app, seen = _bakery_backend()
    with serve(app) as url:
        monkeypatch.setenv("BAKERY_API", url)
        monkeypatch.setenv("BAKERY_KEY", "k-123")
        prompts = tmp_path / "prompts"
        prompts.mkdir()
        (prompts / "bakery.toml").write_text(BAKERY)
        yield prompts, tmp_path / "data", seen


def _engine(data: Path) -> Engine:
    from voiceforge.config import load_settings

    engine = Engine(load_settings(forge_data_dir=data, database_url=f"sqlite:///{data / 'forge.db'}"))
    engine.ensure_mock_data()
    return engine


async def test_the_issue_s_bakery_file_loads_and_its_http_tools_run_against_a_real_server(bakery):
    prompts, data, seen = bakery
    persona = load_persona("bakery", data, folder=prompts)
    assert [(t.name, t.kind) for t in persona.own_tools] == [("check_cake", "http"), ("order_cake", "http")]
    # the agent's file moves into the data folder as an app-made agent would be, so the engine finds it
    (data / "agents").mkdir(parents=True)
    (data / "agents" / "bakery.toml").write_text(BAKERY)
    engine = _engine(data)
    pipeline = engine.pipeline("bakery", channel="api", persist=False)
    assert {"check_cake", "order_cake", "end_call"} <= {t.name for t in pipeline.tools}
    schema = next(t for t in pipeline.tools if t.name == "check_cake").openai_schema()["function"]
    assert schema["parameters"]["required"] == ["flavour"] and schema["description"].startswith("Check whether")

    # a flavour no example names is heard where the examples put one ("do you have ___ cake")
    turn = await pipeline.text_turn("Do you have carrot cake?")
    assert [(c["name"], c["arguments"]) for c in turn.tool_calls] == [("check_cake", {"flavour": "carrot"})]
    assert turn.reply == "carrot cake available: True.", turn.reply
    assert seen[-1] == {"path": "/cakes/carrot", "auth": "Bearer k-123"}  # the header's key came from the environment

    slash = await pipeline.run_tool("check_cake", {"flavour": "choc/late"})
    assert slash.ok and seen[-1]["path"] == "/cakes/choc%2Flate"  # a / in an argument is encoded too

    # a tool with side effects is confirmed first; the body keeps the integer and fills the template
    ask = await pipeline.text_turn("I'd like to order a lemon cake with 5 candles")
    assert ask.reply.startswith("Just to confirm") and not ask.tool_calls, ask.reply
    done = await pipeline.text_turn("yes please")
    assert done.tool_calls[0]["name"] == "order_cake" and done.tool_calls[0]["result"]["order"] == 17
    assert seen[-1]["body"] == {"flavour": "lemon", "candles": 5, "note": "for lemon lovers"}


async def test_http_tool_failures_become_errors_the_agent_speaks(bakery):
    prompts, data, seen = bakery
    (data / "agents").mkdir(parents=True)
    (data / "agents" / "bakery.toml").write_text(BAKERY)
    pipeline = _engine(data).pipeline("bakery", channel="api", persist=False)
    slow = await pipeline.run_tool("check_cake", {"flavour": "slow"})
    assert slow.error == "the check_cake service did not answer within 1 s" and slow.duration_ms < 2500
    huge = await pipeline.run_tool("check_cake", {"flavour": "huge"})
    assert huge.error == "the check_cake service answered with more than 262144 bytes"
    broken = await pipeline.run_tool("check_cake", {"flavour": "broken"})
    assert broken.error == "the check_cake service answered 500: the oven is on fire"
    spoken = await pipeline.text_turn("do you have broken cake")  # the caller hears the failure; nothing crashes
    assert spoken.tool_calls[0]["error"] == broken.error and spoken.error is None
    assert spoken.reply == "Sorry, the check_cake service answered 500: the oven is on fire.", spoken.reply


async def test_http_tools_never_reach_link_local_addresses_unless_allowed(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    create_agent(data, "meta", {"tools": ["steal"], "tool": [{
        "name": "steal", "description": "Read the cloud metadata", "kind": "http",
        "url": "http://169.254.169.254/latest/meta-data/", "timeout_s": 1}]})
    pipeline = _engine(data).pipeline("meta", channel="api", persist=False)
    refused = await pipeline.run_tool("steal", {})
    assert refused.error.startswith("169.254.169.254 is a link-local address") and refused.duration_ms < 500


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace("${BAKERY_KEY}", "${NOT_SET_ANYWHERE}"), "${NOT_SET_ANYWHERE} is not set"),
    (lambda t: t.replace('name = "order_cake"', 'name = "run_sql"'), "run_sql is a built-in tool's name"),
    (lambda t: t.replace('id = "bakery"', 'id = "cakes"'), "id 'cakes' is not the file's name"),
    (lambda t: t.replace('kind = "http"\nmethod = "POST"', 'kind = "ftp"'), "kind must be one of http, sql, mock"),
    (lambda t: t.replace("/cakes/{flavour}", "/cakes/{flavor}"), "{flavor} is no parameter of the tool"),
    (lambda t: t.replace('description = "Order a cake for a day"\n', ""), "needs a description"),
])
def test_a_broken_agent_file_is_a_clear_error_naming_what_is_wrong(bakery, change, message):
    prompts, data, _ = bakery
    (prompts / "bakery.toml").write_text(change(BAKERY))
    with pytest.raises(PersonaError) as caught:
        load_persona("bakery", data, folder=prompts)
    assert message in str(caught.value), str(caught.value)


async def test_sql_and_mock_tools(business_database, tmp_path: Path):
    from voiceforge.config import load_settings
    from voiceforge.store import mockdata

    data = tmp_path / "data"
    mockdata.generate(business_database, 12)
    engine = Engine(load_settings(forge_data_dir=data, database_url=f"sqlite:///{data / 'forge.db'}"),
                    db=None)
    engine.business_db = business_database
    create_agent(data, "club", {"tools": ["my_tier", "opening", "raw_tables"], "tool": [
        {"name": "my_tier", "description": "The caller's loyalty tier", "kind": "sql",
         "examples": ["what tier am I", "which loyalty level do I have"],
         "query": "SELECT name, tier FROM customers WHERE id = :customer_id",
         "say": "{name}, you are on the {tier} tier.",
         "parameters": {"customer_id": {"type": "integer", "description": "the customer's number"}}},
        {"name": "opening", "description": "Opening hours of a branch", "kind": "mock",
         "examples": ["when is the north branch open", "opening hours of the south branch"],
         "parameters": {"branch": {"type": "string", "enum": ["north", "south"]}},
         "results": [{"when": {"branch": "north"}, "result": {"hours": "9 to 5", "branch": "{branch}"}},
                     {"when": {"branch": "south"}, "result": {"hours": "10 to 6", "branch": "{branch}"}}],
         "say": "The {branch} branch is open {hours}."},
        {"name": "raw_tables", "description": "List the database's tables", "kind": "sql",
         "examples": ["list the tables"], "query": "SELECT * FROM conversations"},
    ]})
    pipeline = engine.pipeline("club", channel="api", persist=False)
    tier = await pipeline.text_turn("what tier am I? I'm customer 4")
    row = business_database.one("SELECT name, tier FROM customers WHERE id = 4") if hasattr(business_database, "one") else None
    assert tier.tool_calls[0]["name"] == "my_tier" and tier.tool_calls[0]["arguments"] == {"customer_id": 4}
    assert tier.reply.endswith("tier.") and tier.tool_calls[0]["result"]["name"] in tier.reply, (tier.reply, row)
    hours = await pipeline.text_turn("when is the south branch open")
    assert hours.reply == "The south branch is open 10 to 6.", hours.reply
    injected = await pipeline.run_tool("my_tier", {"customer_id": "4 OR 1=1"})
    assert injected.error == "customer_id must be a integer"  # typed before it reaches the driver
    confined = await pipeline.run_tool("raw_tables", {})
    assert confined.error and confined.error.startswith("raw_tables:")  # the confined reader sees only the mock tables


MCP_AGENT = '''
name = "Mia"
greeting = "Hi, Mia here."
system_prompt = "You answer questions about pizza prices."
tools = ["end_call"]

[[mcp]]
name = "menu"
{where}
allow = ["price_of"]
timeout_s = 20
[mcp.examples]
price_of = ["how much is a margherita", "what does a large pepperoni cost"]
'''


@pytest.mark.parametrize("transport", ["stdio", "streamable HTTP"])
async def test_mcp_servers_tools_are_listed_checked_and_called(tmp_path: Path, transport: str, monkeypatch):
    from tests.support import mcp_menu
    from voiceforge.tools import mcp_servers

    data = tmp_path / "data"
    (data / "agents").mkdir(parents=True)
    if transport == "stdio":
        where = f'command = ["{sys.executable}", "-m", "tests.support.mcp_menu"]\nenv = {{ PYTHONPATH = "{ROOT}" }}'
        context = None
        monkeypatch.setenv("FORGE_MCP_APP_COMMANDS", "true")  # this agent file is in the data folder
        from voiceforge.config import get_settings

        get_settings.cache_clear()
    else:
        context = serve(mcp_menu.server.streamable_http_app())
        base = context.__enter__()
        where = f'url = "{base}/mcp"'
    try:
        (data / "agents" / "mia.toml").write_text(MCP_AGENT.replace("{where}", where))
        mcp_servers.forget()
        pipeline = _engine(data).pipeline("mia", channel="api", persist=False)
        names = {t.name for t in pipeline.tools}
        assert "price_of" in names and "wipe_menu" not in names  # the allow-list
        tool = next(t for t in pipeline.tools if t.name == "price_of")
        assert tool.kind == "mcp" and tool.parameters["required"] == ["pizza"]
        turn = await pipeline.text_turn("How much is a large pepperoni?")
        call = turn.tool_calls[0]
        assert call["name"] == "price_of" and call["arguments"]["pizza"] == "pepperoni", turn.tool_calls
        assert call["result"]["price"] == 16.0  # large: two dollars more
        bad = await pipeline.run_tool("price_of", {"pizza": "margherita", "quantity": 0})
        assert bad.error == "price_of: 0 is less than the minimum of 1"  # checked against its schema, not sent
        missing = await pipeline.run_tool("price_of", {"pizza": "hawaiian"})
        assert "there is no hawaiian on the menu" in missing.error  # the server's error, spoken
        refused = await pipeline.run_tool("wipe_menu", {})
        assert refused.error == "there is no tool called 'wipe_menu'"
    finally:
        if context is not None:
            context.__exit__(None, None, None)
        mcp_servers.forget()


def test_agents_are_created_duplicated_exported_imported_and_deleted(tmp_path: Path):
    data = tmp_path / "data"
    path = create_agent(data, "deli", {"name": "Dee", "greeting": "Deli, Dee speaking.",
                                        "facts": ["We close at 4 pm."], "tools": ["end_call", "menu"],
                                        "tool": [{"name": "menu", "description": "Today's soup", "kind": "mock",
                                                  "result": {"soup": "tomato"}}]})
    assert path == data / "agents" / "deli.toml" and "deli" in list_personas(data_dir=data)
    deli = load_persona("deli", data)
    assert deli.made_in_app and deli.name == "Dee" and [t.name for t in deli.own_tools] == ["menu"]

    save_persona_edits(data, "deli", {"greeting": "Deli here, what can I get you?"})
    exported = export_agent(data, "deli")
    assert 'greeting = "Deli here, what can I get you?"' in exported and "[[tool]]" in exported
    copy = duplicate_agent(data, "customer_service", "cs_copy")
    assert copy.is_file() and load_persona("cs_copy", data).tools == load_persona("customer_service", data).tools

    imported = import_agent(data, exported.replace('id = "deli"', 'id = "deli2"'))
    assert load_persona("deli2", data).greeting == "Deli here, what can I get you?" and imported.is_file()
    before = sorted(p.name for p in (data / "agents").iterdir())
    for bad, why in [("x" * (MAX_AGENT_BYTES + 1), "at most"), ("name = ", "not an agent file"),
                     ('id = "deli3"\nname = "N"\ngreeting = "G"', "lacks system_prompt"),
                     (exported, "already an agent called 'deli'"),
                     ('id = "../../etc"\nname = "N"', "not a valid agent id")]:
        with pytest.raises(PersonaError, match=why):
            import_agent(data, bad)
    assert sorted(p.name for p in (data / "agents").iterdir()) == before  # nothing written

    with pytest.raises(PersonaError, match="shipped"):
        delete_agent(data, "customer_service")
    delete_agent(data, "deli2")
    assert "deli2" not in list_personas(data_dir=data) and not (data / "personas" / "deli2").exists()
    rows = {r["id"]: r for r in describe_agents(data)}
    assert rows["deli"]["where"] == "app" and rows["deli"]["own tools"] == "menu (mock)"
    assert rows["pizza_shop"]["where"] == "shipped" and "place_order (http)" in rows["pizza_shop"]["own tools"]


def test_an_agent_from_the_app_may_not_start_programs(tmp_path: Path):
    data = tmp_path / "data"
    agent = MCP_AGENT.replace("{where}", 'command = ["sh", "-c", "touch pwned"]')
    with pytest.raises(PersonaError, match="may not start programs"):
        import_agent(data, 'id = "mia"\n' + agent)
    assert not (data / "agents").exists() or not list((data / "agents").iterdir())  # nothing written
    create_agent(data, "mia", {"mcp": [{"name": "menu", "url": "http://127.0.0.1:9/mcp", "allow": ["price_of"]}]})
    with pytest.raises(PersonaError, match="may not start programs"):  # nor may an edit add one
        save_persona_edits(data, "mia", {"mcp": [{"name": "menu", "command": ["sh"], "allow": ["price_of"]}]})
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "shipped.toml").write_text(agent)  # a repository's file may
    assert [s.command for s in load_persona("shipped", data, folder=prompts).mcp] == [("sh", "-c", "touch pwned")]
    assert not (tmp_path / "pwned").exists() and not (prompts / "pwned").exists()  # loading runs nothing


def test_a_shared_tools_file_serves_every_agent_that_names_its_tools(tmp_path: Path):
    data = tmp_path / "data"
    shared = data / "agents" / "tools"
    shared.mkdir(parents=True)
    (shared / "weather.toml").write_text(textwrap.dedent('''
        [[tool]]
        name = "forecast"
        description = "Tomorrow's forecast"
        kind = "mock"
        result = { sky = "sunny" }
    '''))
    create_agent(data, "one", {"tools": ["forecast"]})
    create_agent(data, "two", {"tools": ["end_call"]})
    assert [t.name for t in load_persona("one", data).own_tools] == ["forecast"]
    assert load_persona("two", data).own_tools == []


async def test_the_shipped_pizza_agent_passes_its_starter_suite_against_a_real_sidecar(tmp_path, monkeypatch):
    """prompts/pizza_shop.toml, with no Python: its mock menu, its facts, and its HTTP order tool
    calling the sidecar's demo endpoint (a real `forge serve` on loopback, with its API key)."""
    from forge.evals import Runner
    from forge.processes import local_sidecar
    from voiceforge.config import get_settings
    from voiceforge.evals import load_suite

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    engine = _engine(tmp_path / "data")
    async with local_sidecar(settings=engine.settings) as (base, _token, _key):
        monkeypatch.setenv("FORGE_SIDECAR_URL", base)
        suite = load_suite(ROOT / "evals" / "pizza_shop.yaml")
        run = await Runner(engine).run(suite)
    from forge.evals import transcript_lines

    assert run.passed(), "\n".join(line for s in run.scenarios if not s.passed() for line in transcript_lines(s))


async def test_an_llm_gets_the_declared_tools_schemas_and_its_calls_run_them(oai, bakery):
    """Through the official openai SDK against a local server that speaks the Chat Completions wire."""
    from voiceforge.config import load_settings

    server, url = oai
    prompts, data, seen = bakery
    (data / "agents").mkdir(parents=True)
    (data / "agents" / "bakery.toml").write_text(BAKERY)
    engine = Engine(load_settings(forge_data_dir=data, database_url=f"sqlite:///{data / 'forge.db'}",
                                  openai_api_key="sk-local", openai_base_url=url, stt_provider="whisper",
                                  tts_provider="piper", forge_failover=False))
    server.chat_script += [{"tool_calls": [("check_cake", {"flavour": "pistachio"})]},
                           {"text": "Yes, pistachio is in today."}]
    turn = await engine.pipeline("bakery", channel="api", persist=False).text_turn("Any pistachio cake today?")
    assert turn.reply == "Yes, pistachio is in today." and seen[-1]["path"] == "/cakes/pistachio"
    first = server.requests[-2]["json"]
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(offered) == {"check_cake", "order_cake", "end_call"}
    assert offered["check_cake"]["parameters"]["properties"]["flavour"] == {
        "type": "string", "description": "the cake flavour, one word"}
    assert offered["order_cake"]["parameters"]["required"] == ["flavour"]
    assert "A birthday cake costs 30 dollars." in first["messages"][0]["content"]  # its facts, as context
    assert '"available": true' in server.requests[-1]["json"]["messages"][-1]["content"]
