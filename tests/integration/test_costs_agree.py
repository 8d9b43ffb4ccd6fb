"""One definition of what was spent, on every page: a call Twilio carried costs its minutes, a
simulated one costs nothing, and Home's total is the sum of what Conversations lists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from server.main import create_app
from tests.support.servers import free_port, serve
from tests.support.twilio_caller import TwilioCaller
from voiceforge.config import load_settings
from voiceforge.cost import PriceTable, format_usd
from voiceforge.store import conversations
from voiceforge.store.db import get_database

pytestmark = pytest.mark.integration
TOKEN, KEY = "costs-token", "costs-key"
ACCOUNT = "AC" + "1" * 32
APP = str(Path(__file__).resolve().parents[2] / "app.py")


async def one_turn_call(base: str, speak, account_sid: str) -> str:  # noqa: ANN001
    """A short call from ``account_sid``: the greeting, one question, the answer, hang up; its call SID."""
    import numpy as np
    import soxr

    caller = TwilioCaller(base, TOKEN, persona="customer_service", account_sid=account_sid)
    await caller.dial()
    await caller.send_audio(b"\x00\x00" * 8000 * 3)
    pcm, rate = speak("How many customers are there?")
    await caller.send_audio(soxr.resample(np.frombuffer(pcm, "<i2"), rate, 8000).astype("<i2").tobytes())
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as api:
        deadline = time.monotonic() + 40
        while not ((call := (await api.get(f"/api/calls/{caller.call_sid}")).json()).get("turns")
                   and all(t["answered"] for t in call["turns"])):
            assert time.monotonic() < deadline, call
            await caller.send_audio(b"\x00\x00" * 1600)
    await caller.hang_up()
    return caller.call_sid


def test_a_carried_call_costs_its_minutes_a_simulated_one_nothing_and_pages_agree(tmp_path, monkeypatch, speak):
    port = free_port()
    settings = load_settings(public_base_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN, forge_api_key=KEY,
                             forge_data_dir=tmp_path, twilio_account_sid=ACCOUNT)
    with serve(create_app(settings), port) as base:
        deadline = time.monotonic() + 120
        while httpx.get(base + "/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        carried = asyncio.run(one_turn_call(base, speak, ACCOUNT))
        simulated = asyncio.run(one_turn_call(base, speak, "AC" + "0" * 32))
    db = get_database(settings.database_url_resolved)
    prices = PriceTable(settings.forge_prices)
    spend = conversations.spend(db)
    assert len(spend["call_seconds"]) == 1 and spend["simulated_calls"] == 1
    log = {row["id"]: row for row in conversations.call_log(db, prices=prices)}
    assert len(log) == 2
    from voiceforge.store import calls

    by_sid = {sid: calls.get_call(db, sid)["conversation_id"] for sid in (carried, simulated)}
    cost = {sid: log[conv]["cost_usd"] for sid, conv in by_sid.items()}
    assert cost[carried] == pytest.approx(prices.call(1))  # one started minute; the local providers cost 0
    assert cost[simulated] == 0.0
    total = prices.spent(spend["turn_cost_usd"], spend["call_seconds"], spend["sms_sent"]).total
    assert total == pytest.approx(sum(r["cost_usd"] for r in log.values()))

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORGE_SIDECAR_URL", "http://127.0.0.1:9")
    from voiceforge.config import get_settings

    get_settings.cache_clear()  # the call's tools read the clock's settings before these were set
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    home = {m.label: m.value for m in at.metric}
    assert home["Total"] == format_usd(total) and home["Spent on providers"] == "$0 (local)"
    at.switch_page("app_pages/conversations.py").run()
    assert not at.exception, at.exception
    listed = at.dataframe[0].value
    assert sorted(listed["cost_usd"]) == sorted(r["cost_usd"] for r in log.values())
