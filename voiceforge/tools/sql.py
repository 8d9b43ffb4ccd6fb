"""run_sql: read-only SQL over the mock tables, confined by the database (store/readonly.py).

The text check below only gives a plain answer to an obvious non-SELECT; the confinement is
the database's own (an authorizer on SQLite, a read-only role on PostgreSQL), which the
tests exercise with statements that pass the text check.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from voiceforge.store.readonly import QueryLimits, QueryRefused, run_query
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry

_READ_ONLY_START = re.compile(r"^\s*(select|with)\b", re.I)
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|drop|alter|create|replace|truncate|attach|detach|pragma|vacuum|grant|revoke|copy|call|do)\b",
    re.I,
)
TABLES = "customers(id, name, phone, email, zip_code, tier), orders(id, customer_id, item, total_cents, status, placed_at), appointments(id, customer_id, service, starts_at, duration_min, status)"

# Its own two threads: slow queries queue here instead of starving the shared pool that tool
# calls and database writes of every live call use.
_SQL_POOL = ThreadPoolExecutor(2, thread_name_prefix="run-sql")


async def run_sql(ctx: ToolContext, query: str) -> dict[str, Any]:
    """Run one read-only SELECT over the mock tables customers, orders and appointments.

    Returns at most 50 rows. The database itself enforces that only these three tables can be
    read and that nothing can be written.

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
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(_SQL_POOL, run_query, ctx.business, sql, limits, reader_url)
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


_COUNTABLE = {"customer": "customers", "order": "orders", "appointment": "appointments"}
_STATUSES = ["processing", "shipped", "delivered", "returned", "scheduled", "cancelled"]


def _extract(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str | None:
    raw = re.search(r"\b(select\b.*)", utterance, re.I | re.S)
    if raw and re.search(r"\b(sql|query)\b", utterance, re.I):
        return {"query": raw.group(1).strip().rstrip(".?!")}
    m = re.search(r"\b(?:how many|number of|count|total)\b(?:\s+\w+){0,4}?\s+(customer|order|appointment)s?\b",
                  utterance, re.I)
    if not m:
        return None
    table = _COUNTABLE[m.group(1).lower()]
    status = next((s for s in _STATUSES if re.search(rf"\b{s}\b", utterance, re.I)), None)
    tier = next((t for t in ("gold", "platinum", "standard") if re.search(rf"\b{t}\b", utterance, re.I)), None)
    where = []
    if status and table != "customers":
        where.append(f"status = '{status}'")
    if tier and table == "customers":
        where.append(f"tier = '{tier}'")
    query = f"SELECT COUNT(*) AS n FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
    return {"query": query}


def register(registry: ToolRegistry) -> None:
    """Add run_sql to ``registry``."""
    tool = registry.add(
        run_sql,
        triggers=[r"\bhow many\s+(\w+\s+)?(customers?|orders?|appointments?)\b", r"\b(sql|query)\b.*\bselect\b"],
        extract=_extract,
        tags=("sql",),
        offer="answer a question about the customer records",
        examples=["how many customers are there", "how many orders have shipped", "count the appointments",
                  "what's the number of customers in each tier", "how many orders were returned",
                  "total count of cancelled appointments", "run a sql query", "query the database",
                  "how many appointments are scheduled", "number of platinum customers", "how many orders are processing",
                  "count how many customers are gold"],
    )
    tool.description += f" Tables: {TABLES}."
