"""run_sql: read-only SQL over the mock tables, confined by the database (store/readonly.py).

The text check below only gives a plain answer to an obvious non-SELECT; the confinement is
the database's own (an authorizer on SQLite, a read-only role on PostgreSQL), which the
tests exercise with statements that pass the text check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from voiceforge import clock
from voiceforge.store.business import customer_by_phone
from voiceforge.store.readonly import QueryLimits, QueryRefused, run_query
from voiceforge.tools import slots, spoken
from voiceforge.tools.declaration import load_declarations
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry

_READ_ONLY_START = re.compile(r"^\s*(select|with)\b", re.I)
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|drop|alter|create|replace|truncate|attach|detach|pragma|vacuum|grant|revoke|copy|call|do)\b",
    re.I,
)
TABLES = "customers(id, name, phone, email, zip_code, tier), orders(id, customer_id, item, total_cents, status, placed_at), appointments(id, customer_id, service, starts_at, duration_min, status)"

# Its own four threads: slow queries queue here instead of starving the shared pool that tool
# calls and database writes of every live call use. Each sender runs one query at a time, so two
# senders at their worst (a query that runs to its deadline) leave half the pool to everyone else.
_SQL_POOL = ThreadPoolExecutor(4, thread_name_prefix="run-sql")
_running: set[str] = set()  # who has a query on the pool now: one at a time each
_running_lock = threading.Lock()


def _sender(ctx: ToolContext) -> str:
    """Whose query this is: the caller's or texter's number, else the conversation."""
    return ctx.caller or f"conversation:{ctx.conversation_id}"


async def run_sql(ctx: ToolContext, query: str) -> dict[str, Any]:
    """Run one read-only SELECT over the mock tables customers, orders and appointments.

    Returns at most 50 rows. The database itself enforces that only these three tables can be
    read and that nothing can be written. A customer's phone, email and ZIP code are blank
    except in the row of the verified caller (the customer whose number is calling or texting).
    One query at a time per caller.

    Args:
        query: a single SELECT (or WITH ... SELECT) statement in the database's SQL dialect.
    """
    sql = query.strip().rstrip(";").strip()
    if not _READ_ONLY_START.match(sql) or ";" in _strip_strings(sql) or _WRITE_WORDS.search(_strip_strings(sql)):
        raise ToolError("only a single read-only SELECT statement is allowed")
    settings = ctx.settings
    limits = QueryLimits(timeout_ms=settings.forge_sql_timeout_ms, max_rows=settings.forge_sql_max_rows,
                         max_bytes=settings.forge_sql_max_bytes)
    reader_url = settings.forge_sql_reader_url
    sender = _sender(ctx)
    with _running_lock:
        if sender in _running:
            raise ToolError("one query at a time, please: the last one is still running")
        _running.add(sender)

    def release(_: object = None) -> None:
        with _running_lock:
            _running.discard(sender)

    try:
        own = await asyncio.to_thread(customer_by_phone, ctx.business, ctx.caller) if ctx.caller else None
        work = asyncio.get_running_loop().run_in_executor(_SQL_POOL, run_query, ctx.business, sql, limits, reader_url,
                                                          own["customer_id"] if own else None)
    except BaseException:
        release()
        raise
    work.add_done_callback(release)  # the sender is free when the database is done, not when we stop waiting
    try:
        # The database enforces the limit; this bound also covers queueing behind other queries.
        result = await asyncio.wait_for(asyncio.shield(work), limits.timeout_ms / 1000 + 5)
    except TimeoutError:
        raise ToolError(f"the query failed ({ctx.business.dialect}): it waited too long to run") from None
    except QueryRefused as exc:
        raise ToolError(f"the query failed ({ctx.business.dialect}): {exc}") from None
    rows = result.rows
    if len(rows) == 1 and len(result.columns) == 1:
        summary = f"The answer is {rows[0][0]}."
    else:
        n = len(rows)
        summary = f"The query returned {n}{'+' if result.truncated else ''} row{'s' if n != 1 else ''}."
    return {"dialect": result.dialect, "columns": result.columns, "rows": rows, "truncated": result.truncated,
            "summary": summary}


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


_TABLE_WORDS = [
    # The first table named wins; money words mean orders (they are the only priced rows).
    ("appointments", r"appointments?|bookings?|booked|visits?|services?"),
    ("orders", r"orders?|ordered|purchases?|sales|revenue|items?|products?|spen[dt]|spend(ing|ers?)|sells?|sold|money|made|earned"),
    ("customers", r"customers?|clients?|members?|accounts?|people"),
]
_STATUSES = {
    "processing": r"processing|pending|being processed|not shipped", "shipped": r"shipped|dispatched|sent out|on the way",
    "delivered": r"delivered|arrived", "returned": r"returned|refunded", "scheduled": r"scheduled|upcoming",
    "cancelled": r"cancell?ed|called off",
}
"""Each status in the mock tables, and the words callers use for it."""
_TIERS = ["gold", "platinum", "standard"]
_MONEY = r"\b(revenue|sales|spen[dt]|spending|money|dollars|value|worth|income|takings|earn\w*)\b"
_UNITS = {"dollars", "orders", "appointments", "percent", "minutes", "customers"}
_PERIOD = re.compile(r"\b(today|yesterday|tomorrow|(this|last|next|past|coming) (week|month|year))\b", re.I)
_UNSUPPORTED_PERIOD = re.compile(r"\b(ago|since|before|after|between|in (january|february|march|april|may|june|july|"
                                 r"august|september|october|november|december|\d{4}))\b", re.I)
_DATE_COLUMN = {"orders": "placed_at", "appointments": "starts_at"}
_PRICE = re.compile(rf"\b(over|above|more than|greater than|exceeding|at least|under|below|less than|cheaper than|at most)"
                    rf"\s+({spoken.AMOUNT_WORDS})\s*(dollars?|bucks|\$)?", re.I)
_PRICE_CUE = re.compile(rf"\$|{_MONEY}|\b(dollar|bucks|cost(ing|s)?|priced|valued)\b", re.I)
_COMPARE = {"over": ">", "above": ">", "more than": ">", "greater than": ">", "exceeding": ">", "at least": ">=",
            "under": "<", "below": "<", "less than": "<", "cheaper than": "<", "at most": "<="}


def _price(utterance: str) -> str | None:
    """An order-total condition in cents from "over a hundred dollars", "under $20"; None without a money word."""
    if not _PRICE_CUE.search(utterance):
        return None  # "more than two orders" counts orders, not dollars
    for m in _PRICE.finditer(utterance):
        amount = spoken.spoken_amount(m.group(2))
        if amount is not None:
            compare = _COMPARE[" ".join(m.group(1).lower().split())]
            return f"total_cents {compare} {round(amount * 100)}"
    return None


def _period(utterance: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """The days [start, end) a spoken period covers: "last month" on 2026-11-25 → (2026-10-01, 2026-11-01)."""
    m = _PERIOD.search(utterance)
    if m is None:
        return None
    word = m.group(1).lower()
    day = dt.timedelta(days=1)
    if word in ("today", "yesterday", "tomorrow"):
        start = today + {"today": 0, "yesterday": -1, "tomorrow": 1}[word] * day
        return start, start + day
    which, unit = m.group(2).lower(), m.group(3).lower()
    step = {"this": 0, "last": -1, "past": -1, "next": 1, "coming": 1}[which]
    if unit == "week":
        start = today - today.weekday() * day + 7 * step * day
        return start, start + 7 * day
    if unit == "month":
        month = today.year * 12 + today.month - 1 + step
        start = dt.date(month // 12, month % 12 + 1, 1)
        following = month + 1
        return start, dt.date(following // 12, following % 12 + 1, 1)
    return dt.date(today.year + step, 1, 1), dt.date(today.year + step + 1, 1, 1)


def _first_table(utterance: str) -> str | None:
    found = [(m.start(), table) for table, words in _TABLE_WORDS if (m := re.search(rf"\b({words})\b", utterance, re.I))]
    return min(found)[1] if found else None


def _where(utterance: str, table: str, today: dt.date | None = None) -> list[str]:
    """Conditions on status and period (orders, appointments) and tier (customers) in the utterance.

    A period is compared as ISO date literals, which SQLite (ISO text), PostgreSQL and DuckDB
    (timestamps) all order correctly.
    """
    where = []
    status = next((s for s, words in _STATUSES.items() if re.search(rf"\b({words})\b", utterance, re.I)), None)
    tier = next((t for t in _TIERS if re.search(rf"\b{t}\b", utterance, re.I)), None)
    if status and table != "customers":
        where.append(f"status = '{status}'")
    if tier and table == "customers":
        where.append(f"tier = '{tier}'")
    price = _price(utterance) if table == "orders" else None
    if price is not None:
        where.append(price)
    period = _period(utterance, today or clock.now().date())
    if period is not None and table in _DATE_COLUMN:
        column = _DATE_COLUMN[table]
        where += [f"{column} >= '{period[0].isoformat()}'", f"{column} < '{period[1].isoformat()}'"]
    return where


def _how_many(utterance: str, noun: str) -> int:
    """Rows asked for: "the five biggest orders" → 5; ``noun`` in the plural without a number → 5; else 1."""
    for m in re.finditer(r"\b(?:top|the|first|last)\s+(\d+|\w+)\b", utterance, re.I):
        n = spoken.spoken_int(m.group(1))
        if n is not None:
            return max(1, min(n, 10))
    return 5 if re.search(rf"\b({noun})s\b", utterance, re.I) else 1


def _read_query(utterance: str, known: dict[str, Any], parameter: Any = None) -> dict[str, Any] | str | None:
    """The SELECT that answers a spoken question about the records: the ``sql_query`` slot.

    Rules over the three tables: counts ("how many gold customers"), totals and averages of
    money ("total revenue", "average order value"), the biggest orders, the top customer by
    spending or by orders, the most ordered item or booked service, shares ("what percentage of
    orders are returned"), each narrowed by a status, a tier or a period ("last month", "next
    week"), and a SELECT read out as such. A question these rules cannot narrow as asked ("two
    years ago", customers "this year") gets None rather than an unfiltered, wrong answer.
    """
    raw = re.search(r"\b(select\b.*)", utterance, re.I | re.S)
    if raw and re.search(r"\b(sql|query)\b", utterance, re.I):
        return {"query": raw.group(1).strip().rstrip(".?!")}
    table = _first_table(utterance)
    if table is None or _UNSUPPORTED_PERIOD.search(utterance):
        return None
    period = _PERIOD.search(utterance)
    if period and table not in _DATE_COLUMN and period.group(1).lower() != "today":
        return None  # customers have no date a caller can ask about; "today" there means now
    text = utterance.lower()
    where = _where(utterance, table)

    def where_sql(conditions: list[str], prefix: str = "") -> str:
        return " WHERE " + " AND ".join(prefix + c for c in conditions) if conditions else ""

    most = re.search(r"\b(most(?! (expensive|recent))|best|top|biggest|largest|highest|popular|favou?rite)\b", text)
    # "who placed the most orders": a person ranked is a customer
    if most and re.search(r"\b(which|what)\b.*\b(customers?|clients?|members?)\b|\bwho\b|\btop customers?\b"
                          r"|\bbiggest spenders?\b", text):
        n = _how_many(utterance, "customer|client|member|spender")
        if re.search(_MONEY, text) or re.search(r"\bspender", text):
            return {"query": "SELECT c.name, ROUND(SUM(o.total_cents) / 100.0, 2) AS dollars FROM customers c "
                             "JOIN orders o ON o.customer_id = c.id" + where_sql(_where(utterance, "orders"), "o.")
                             + f" GROUP BY c.name ORDER BY dollars DESC LIMIT {n}"}
        counted = "appointments" if re.search(r"\b(appointments?|bookings?|visits?)\b", text) else "orders"
        return {"query": f"SELECT c.name, COUNT(*) AS {counted} FROM customers c JOIN {counted} x ON x.customer_id = c.id"
                         + where_sql(_where(utterance, counted), "x.")
                         + f" GROUP BY c.name ORDER BY {counted} DESC LIMIT {n}"}
    if most and re.search(r"\b(item|product|thing)s?\b", text) and table == "orders":
        return {"query": "SELECT item, COUNT(*) AS orders FROM orders" + where_sql(where)
                         + f" GROUP BY item ORDER BY orders DESC LIMIT {_how_many(utterance, 'item|product|thing')}"}
    if most and re.search(r"\bservices?\b", text):
        return {"query": "SELECT service, COUNT(*) AS appointments FROM appointments" + where_sql(_where(utterance, "appointments"))
                         + f" GROUP BY service ORDER BY appointments DESC LIMIT {_how_many(utterance, 'service')}"}
    if table == "orders" and re.search(r"\b(biggest|largest|most expensive|highest|priciest)\b", text):
        return {"query": "SELECT id, item, ROUND(total_cents / 100.0, 2) AS dollars FROM orders" + where_sql(where)
                         + f" ORDER BY total_cents DESC LIMIT {_how_many(utterance, 'order|purchase')}"}
    share_of = [c for c in where if not c.startswith(_DATE_COLUMN.get(table, "-"))]  # the period narrows the whole
    if re.search(r"\b(percent(age)?|proportion|share|fraction)\b", text) and share_of:
        return {"query": f"SELECT ROUND(100.0 * SUM(CASE WHEN {' AND '.join(share_of)} THEN 1 ELSE 0 END) / NULLIF(COUNT(*), 0), 1)"
                         f" AS percent FROM {table}" + where_sql([c for c in where if c not in share_of])}
    if re.search(r"\b(average|mean|typical)\b", text):
        if table == "appointments":
            return {"query": "SELECT ROUND(AVG(duration_min), 1) AS minutes FROM appointments" + where_sql(where)}
        if table == "orders" or re.search(_MONEY, text):
            return {"query": "SELECT ROUND(AVG(total_cents) / 100.0, 2) AS dollars FROM orders" + where_sql(_where(utterance, "orders"))}
    if re.search(_MONEY, text) and re.search(r"\b(total|sum|all|overall|how much|altogether|everything)\b", text) or \
            re.search(r"\b(sales|revenue|takings|income|money)\b", text) and re.search(r"\bwhat (did|were|was|are|is)\b", text):
        return {"query": "SELECT ROUND(SUM(total_cents) / 100.0, 2) AS dollars FROM orders" + where_sql(_where(utterance, "orders"))}
    if re.search(r"\b(how many|number of|count|total|tally)\b", text):
        return {"query": f"SELECT COUNT(*) AS n FROM {table}" + where_sql(where)}
    if table == "customers" and re.search(r"\b(list|show|name|which|who)\b", text) and (where or re.search(r"\ball\b", text)):
        return {"query": "SELECT name FROM customers" + where_sql(where) + " ORDER BY name LIMIT 20"}
    if table == "orders" and re.search(r"\b(list|show|which|what|give me|read( me)?)\b", text) and where:
        return {"query": "SELECT id, item, ROUND(total_cents / 100.0, 2) AS dollars FROM orders" + where_sql(where)
                         + " ORDER BY total_cents DESC LIMIT 20"}
    return None


def _spoken_value(value: Any, column: str) -> str:
    if isinstance(value, Decimal):  # PostgreSQL's ROUND and AVG give numeric
        value = float(value)
    if isinstance(value, float):
        value = f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
    if column == "id":
        return f"number {value}"  # "number 58, coffee maker, 245.49 dollars", not a bare "58"
    if isinstance(value, int):
        value = f"{value:,}"
    return f"{value} {column}" if column in _UNITS else str(value)


def _phrase(result: Any) -> str:
    """A run_sql result for the ear: the value, or at most three rows and how many more."""
    if not isinstance(result, dict) or not result.get("columns"):
        return "Done."
    columns, rows = result["columns"], result["rows"]
    if not rows:
        return "There are none."
    if len(rows) == 1 and len(columns) == 1:
        return f"The answer is {_spoken_value(rows[0][0], columns[0])}."
    spoken_rows = [", ".join(_spoken_value(v, c) for v, c in zip(row, columns, strict=False)) for row in rows[:3]]
    more = len(rows) - 3
    tail = f"; and {more}{'+' if result.get('truncated') else ''} more." if more > 0 else "."
    return "; ".join(spoken_rows) + tail


def register(registry: ToolRegistry) -> None:
    """Add run_sql to ``registry`` (its phrasings: sql.toml; its slot and reply: the rules above)."""
    slots.register_reader("sql_query", _read_query)
    slots.register_phraser("sql_rows", _phrase)
    tool = registry.add(run_sql, load_declarations(Path(__file__).with_suffix(".toml"))["run_sql"])
    tool.description += f" Tables: {TABLES}."
