"""run_sql for strangers: no query can exhaust the sidecar, take the pool from other callers, or read
another person's phone, email or address; on SQLite, PostgreSQL and DuckDB alike.

The attacks are the ones a texter sent to a sidecar on loopback: a gigabyte built by one function
call (which a progress handler never interrupts), a recursive CTE that never ends, a cartesian
product, and a plain request for every customer's contact details.
"""

from __future__ import annotations

import asyncio
import resource
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from server.main import create_app
from tests.support.servers import free_port, serve
from voiceforge.config import load_settings
from voiceforge.store import mockdata
from voiceforge.store.business import find_customers
from voiceforge.telephony.security import sign
from voiceforge.tools import ToolContext, build_registry

pytestmark = pytest.mark.integration

BOMBS = {
    "printf": "SELECT length(printf('%.*c', 2000000000, 'x')) AS n FROM customers LIMIT 1",
    "randomblob": "SELECT length(randomblob(900000000)) AS n FROM customers LIMIT 1",
    "zeroblob": "SELECT hex(zeroblob(100000000)) AS n FROM customers LIMIT 1",
    "recursion": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
}
"""SQLite's: each cost seconds and hundreds of MB before (printf: 95 s and 2 GB for two texters)."""
CARTESIAN = ("SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e, orders f "
             "WHERE a.total_cents + b.total_cents + c.total_cents + d.total_cents + e.total_cents > f.id")
"""Billions of rows: it runs until the query's deadline on every database."""


@pytest.fixture
def business(business_database):
    mockdata.generate(business_database, customers=12, seed=3)
    return business_database


def ctx_for(db, caller: str | None = None) -> ToolContext:  # noqa: ANN001
    return ToolContext(db=db, settings=load_settings(forge_sql_timeout_ms=1500), caller=caller, conversation_id=1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_no_single_call_builds_a_gigabyte(business):
    if business.dialect != "sqlite":
        pytest.skip("the functions are SQLite's (PostgreSQL and DuckDB are bounded by their own settings)")
    reg = build_registry()
    before = peak_rss_mb()
    for name, query in BOMBS.items():
        started = time.perf_counter()
        result = await reg.execute("run_sql", {"query": query}, ctx_for(business))
        took = time.perf_counter() - started
        assert took < 1.0, (name, took, result)
        assert result.error is not None or result.result["rows"] == [[None]], (name, result)
    assert peak_rss_mb() - before < 100  # no allocation of hundreds of MB on the way


async def test_a_cartesian_product_stops_at_the_deadline(business):
    result = await build_registry().execute("run_sql", {"query": CARTESIAN}, ctx_for(business))
    assert result.ok or "limit" in result.error or "ran past" in result.error, result
    assert result.duration_ms < 1500 + 1500, result.duration_ms


async def test_personal_columns_are_blank_except_in_the_verified_callers_own_row(business):
    reg = build_registry()
    everyone = await reg.execute("run_sql", {"query": "SELECT id, name, phone, email, zip_code FROM customers"},
                                 ctx_for(business))
    if business.dialect == "postgresql":  # the reader role is never granted them
        assert "not allowed" in everyone.error and "phone" in everyone.error
        named = await reg.execute("run_sql", {"query": "SELECT name, tier FROM customers"}, ctx_for(business))
        assert named.ok and len(named.result["rows"]) == 12
        return
    assert everyone.ok and len(everyone.result["rows"]) == 12
    assert all(row[2:] == [None, None, None] for row in everyone.result["rows"]), everyone.result["rows"]
    me = find_customers(business, customer_id=5)[0]
    mine = await reg.execute("run_sql", {"query": "SELECT id, phone, email FROM customers ORDER BY id"},
                             ctx_for(business, caller=me["phone"]))
    rows = {row[0]: row[1:] for row in mine.result["rows"]}
    assert rows[5] == [me["phone"], me["email"]]  # their own, the caller being that customer's number
    assert all(values == [None, None] for cid, values in rows.items() if cid != 5)
    around = "SELECT phone FROM main.customers" if business.dialect == "sqlite" else 'SELECT phone FROM "business".main.customers'
    sneaky = await reg.execute("run_sql", {"query": around}, ctx_for(business))
    assert sneaky.error and "not allowed" in sneaky.error, sneaky
    joined = await reg.execute("run_sql", {"query": "SELECT o.id, c.email FROM orders o JOIN customers c "
                                                    "ON c.id = o.customer_id LIMIT 3"}, ctx_for(business))
    assert joined.ok and all(row[1] is None for row in joined.result["rows"])


async def test_one_query_at_a_time_per_sender(business):
    reg = build_registry()
    slow = asyncio.create_task(reg.execute("run_sql", {"query": CARTESIAN}, ctx_for(business, "+14155550111")))
    await asyncio.sleep(0.2)
    second = await reg.execute("run_sql", {"query": "SELECT count(*) FROM customers"}, ctx_for(business, "+14155550111"))
    other = await reg.execute("run_sql", {"query": "SELECT count(*) FROM customers"}, ctx_for(business, "+14155550122"))
    await slow
    assert "one query at a time" in second.error
    assert other.ok and other.result["rows"] == [[12]]


TOKEN = "sql-strangers-token"
KEY = "sql-strangers-key-0123456789"


def test_two_texters_pushing_the_worst_sql_leave_a_third_answered_in_its_normal_time(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(twilio_auth_token=TOKEN, public_base_url=base, forge_api_key=KEY,
                             forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 's.db'}")
    app = create_app(settings)
    attackers = ["+15550000001", "+15550000002"]  # mock customers' numbers: run_sql is theirs to use

    async def text(client: httpx.AsyncClient, sender: str, body: str, sid: str) -> tuple[str, float]:
        form = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
        started = time.perf_counter()
        r = await client.post("/twilio/sms", data=form,
                              headers={"X-Twilio-Signature": sign(TOKEN, base + "/twilio/sms", form)})
        assert r.status_code == 200
        message = ET.fromstring(r.text).find("Message")
        return (message.text if message is not None else ""), time.perf_counter() - started

    async def run() -> tuple[float, float, list[str]]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            alone = (await text(client, "+15550000009", "how many customers are there", "SMalone"))[1]
            attack = [text(client, who, f"run the sql query {q}", f"SM{who[-1]}{i}")
                      for i, q in enumerate([BOMBS["printf"], CARTESIAN, BOMBS["recursion"], CARTESIAN])
                      for who in attackers]
            pending = [asyncio.create_task(a) for a in attack]
            await asyncio.sleep(0.3)
            answer, under_attack = await text(client, "+15550000010", "how many customers are there", "SMthird")
            replies = [reply for reply, _ in await asyncio.gather(*pending)]
            return alone, under_attack, [answer, *replies]

    with serve(app, port=port):
        alone, under_attack, replies = asyncio.run(run())
    assert replies[0] == "The answer is 40."
    assert under_attack < alone + 1.0, (alone, under_attack)  # not queued behind the attackers' queries
    assert not any("2000000000" in r for r in replies)
