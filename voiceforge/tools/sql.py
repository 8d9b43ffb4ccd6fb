"""run_sql: read-only SQL over the mock database, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry

MAX_ROWS = 50
_READ_ONLY_START = re.compile(r"^\s*(select|with)\b", re.I)
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|drop|alter|create|replace|truncate|attach|detach|pragma|vacuum|grant|revoke|copy|call|do)\b",
    re.I,
)
TABLES = "customers(id, name, phone, email, zip_code, tier), orders(id, customer_id, item, total_cents, status, placed_at), appointments(id, customer_id, service, starts_at, duration_min, status)"


def run_sql(ctx: ToolContext, query: str) -> dict[str, Any]:
    """Run one read-only SELECT over the mock tables customers, orders and appointments.

    Returns at most 50 rows. The statement runs in a read-only transaction (SQLite
    `PRAGMA query_only`, PostgreSQL `SET TRANSACTION READ ONLY`), so writes fail even if the
    text check misses them.

    Args:
        query: a single SELECT (or WITH ... SELECT) statement in the database's SQL dialect.
    """
    sql = query.strip().rstrip(";").strip()
    if not _READ_ONLY_START.match(sql) or ";" in sql or _WRITE_WORDS.search(_strip_strings(sql)):
        raise ToolError("only a single read-only SELECT statement is allowed")
    dialect = ctx.db.dialect
    try:
        with ctx.db.engine.connect() as conn:
            if dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            elif dialect == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                result = conn.execute(text(sql))
                columns = list(result.keys())
                rows = [list(r) for r in result.fetchmany(MAX_ROWS + 1)]
            finally:
                conn.rollback()
                if dialect == "sqlite":
                    conn.exec_driver_sql("PRAGMA query_only = OFF")
    except SQLAlchemyError as exc:
        message = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise ToolError(f"the query failed ({dialect}): {message}") from None
    truncated = len(rows) > MAX_ROWS
    rows = rows[:MAX_ROWS]
    if len(rows) == 1 and len(columns) == 1:
        summary = f"The answer is {rows[0][0]}."
    else:
        summary = f"The query returned {len(rows)}{'+' if truncated else ''} row{'s' if len(rows) != 1 else ''}."
    return {"dialect": dialect, "columns": columns, "rows": rows, "truncated": truncated, "summary": summary}


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


_COUNTABLE = {"customer": "customers", "order": "orders", "appointment": "appointments"}
_STATUSES = ["processing", "shipped", "delivered", "returned", "scheduled", "cancelled"]


def _extract(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str | None:
    raw = re.search(r"\b(select\b.*)", utterance, re.I | re.S)
    if raw and re.search(r"\b(sql|query)\b", utterance, re.I):
        return {"query": raw.group(1).strip().rstrip(".?!")}
    m = re.search(r"\bhow many\s+(\w+\s+)?(customer|order|appointment)s?\b", utterance, re.I)
    if not m:
        return None
    table = _COUNTABLE[m.group(2).lower()]
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
    )
    tool.description += f" Tables: {TABLES}."
