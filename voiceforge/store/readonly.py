"""Read-only SQL over the mock business tables, confined by the database itself.

``run_sql`` lets an LLM (and so anyone who can talk to it, a texter included) write SQL, so
the confinement cannot be a regular expression or a prompt. Here it is the database's own:

- SQLite: a separate ``mode=ro`` connection with an authorizer that allows reading the mock
  tables and nothing else (no other table, no ``sqlite_master``, no PRAGMA, no ATTACH), a
  progress handler that aborts at the deadline, and Python's one-statement-per-execute rule.
- PostgreSQL: a login role of its own (``forge_reader_<database>``) granted SELECT on the mock
  tables only, ``default_transaction_read_only`` and a ``statement_timeout``, reached on its
  own connections with the extended query protocol (one statement, no ``; RESET ROLE``).
  ``FORGE_SQL_READER_URL`` names a read-only login instead when Forge's user may not create
  roles.
- DuckDB: its own ``read_only`` connection with file access, extension loading and the
  configuration itself locked (``enable_external_access=false``, ``lock_configuration``), one
  parsed statement that must be a SELECT naming only the mock tables, an interrupt at the
  deadline, one thread and a memory limit.

Rows and bytes are capped. Every call is blocking; the tool runs it on its own small pool.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from voiceforge.store.db import Database, open_duckdb

MOCK_TABLES = ("customers", "orders", "appointments")
"""The only tables run_sql may read."""


class QueryRefused(Exception):
    """The database refused the statement (not allowed, not read-only, too slow); safe to show."""


@dataclass
class QueryLimits:
    """Bounds on one query: wall time (ms), rows returned, and bytes of JSON returned."""

    timeout_ms: int = 2000
    max_rows: int = 50
    max_bytes: int = 64_000


@dataclass
class QueryResult:
    """What a query returned: column names, rows (JSON-safe), and whether a cap cut it."""

    dialect: str
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)


def _cap(rows: list[list[Any]], limits: QueryLimits) -> tuple[list[list[Any]], bool]:
    truncated = len(rows) > limits.max_rows
    rows = [[_jsonable(v) for v in r] for r in rows[: limits.max_rows]]
    size = 2
    for i, row in enumerate(rows):
        size += len(json.dumps(row)) + 1
        if size > limits.max_bytes:
            return rows[:i], True
    return rows, truncated


# --- SQLite ------------------------------------------------------------------------------------
_SQLITE_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


def _sqlite_authorizer(other_tables: set[str]):  # noqa: ANN202
    """An authorizer that allows SELECT over the mock tables and query-local names only.

    SQLite reports reads of a CTE like reads of a table (and ``COUNT(*)`` with no database
    name), so a read is refused when it names any real table or view other than the mock
    tables, or an internal ``sqlite_`` table; names that exist only inside the query pass.
    Every other action (PRAGMA, ATTACH, writes, ``load_extension``) is refused.
    """

    def authorize(action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            name = (arg1 or "").lower()
            if dbname not in (None, "main") or name.startswith("sqlite_") or name in other_tables:
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return authorize


def _run_sqlite(path: str, sql: str, limits: QueryLimits) -> QueryResult:
    deadline = time.monotonic() + limits.timeout_ms / 1000
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=limits.timeout_ms / 1000,
                           check_same_thread=False)
    try:
        names = {row[0].lower() for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        conn.set_authorizer(_sqlite_authorizer(names - set(MOCK_TABLES)))
        # Called every 1,000 VM instructions: a non-zero return aborts the statement.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            rows = [list(r) for r in cursor.fetchmany(limits.max_rows + 1)]
        except sqlite3.Warning as exc:  # "You can only execute one statement at a time."
            raise QueryRefused(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if message == "interrupted":
                message = f"the query ran past its {limits.timeout_ms} ms limit"
            elif "not authorized" in message or "prohibited" in message:
                message = f"not allowed: run_sql reads only {', '.join(MOCK_TABLES)}"
            raise QueryRefused(message) from None
        except sqlite3.ProgrammingError as exc:
            raise QueryRefused(str(exc)) from None
    finally:
        conn.close()
    rows, truncated = _cap(rows, limits)
    return QueryResult("sqlite", columns, rows, truncated)


# --- DuckDB ------------------------------------------------------------------------------------
_DUCKDB_CONFIG = {
    # https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview
    "enable_external_access": False,  # no files, no URLs, no ATTACH, no extension installs
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "threads": 1,
    "memory_limit": "256MB",
    "lock_configuration": True,  # a SET cannot undo any of the above
}


def _run_duckdb(path: str, sql: str, limits: QueryLimits) -> QueryResult:
    import duckdb

    try:  # the writer (the app or the sidecar) holds the file for a session at a time
        conn = open_duckdb(duckdb.connect, path, read_only=True, config=_DUCKDB_CONFIG)
    except duckdb.Error as exc:
        raise QueryRefused(f"the business database could not be opened: {str(exc).splitlines()[0]}") from None
    timer = threading.Timer(limits.timeout_ms / 1000, conn.interrupt)
    try:
        try:
            statements = conn.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise QueryRefused("only a single read-only SELECT statement is allowed")
            named = {name.lower().rsplit(".", 1)[-1] for name in duckdb.get_table_names(sql)}
            if named - set(MOCK_TABLES):
                raise QueryRefused(f"not allowed: run_sql reads only {', '.join(MOCK_TABLES)}")
            timer.start()
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            rows = [list(r) for r in cursor.fetchmany(limits.max_rows + 1)]
        except duckdb.InterruptException:
            raise QueryRefused(f"the query ran past its {limits.timeout_ms} ms limit") from None
        except duckdb.PermissionException:
            raise QueryRefused(f"not allowed: run_sql reads only {', '.join(MOCK_TABLES)}") from None
        except duckdb.Error as exc:
            raise QueryRefused(str(exc).splitlines()[0]) from None
    finally:
        timer.cancel()
        conn.close()
    rows, truncated = _cap(rows, limits)
    return QueryResult("duckdb", columns, rows, truncated)


# --- PostgreSQL --------------------------------------------------------------------------------
def reader_role(db: Database) -> str:
    """The reader role's name for ``db``'s database: ``forge_reader_<database>`` (≤ 63 chars)."""
    name = make_url(db.url).database or "forge"
    safe = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    return ("forge_reader_" + safe)[:63]


def _reader_password(db: Database) -> str:
    # Derived from the main credentials, so it is as secret as they are and needs no storage.
    return hashlib.sha256(("forge-sql-reader:" + db.url).encode()).hexdigest()


def ensure_reader(db: Database, timeout_ms: int = 2000) -> None:
    """Create or refresh the PostgreSQL reader role and its grants (idempotent).

    Raises:
        QueryRefused: Forge's database user may not create roles; set FORGE_SQL_READER_URL.
    """
    role = reader_role(db)
    password = _reader_password(db)
    database = make_url(db.url).database
    statements = [
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
              END IF;
            END $$""",
        f"ALTER ROLE {role} WITH LOGIN PASSWORD '{password}'",
        f"ALTER ROLE {role} SET default_transaction_read_only = on",
        f"ALTER ROLE {role} SET statement_timeout = {int(timeout_ms)}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON {', '.join(MOCK_TABLES)} TO {role}",
    ]
    try:
        with db.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    except Exception as exc:  # noqa: BLE001 - insufficient privilege, or a race on CREATE ROLE
        if "already exists" in str(exc):
            return ensure_reader(db, timeout_ms)
        raise QueryRefused(
            "run_sql needs a read-only PostgreSQL login: Forge's database user cannot create the role "
            f"{role}; set FORGE_SQL_READER_URL to a login that may read only {', '.join(MOCK_TABLES)}"
        ) from None


class _PostgresReader:
    def __init__(self, db: Database, reader_url: str | None, limits: QueryLimits) -> None:
        if reader_url:
            url = make_url(reader_url)
        else:
            ensure_reader(db, limits.timeout_ms)
            url = make_url(db.url).set(username=reader_role(db), password=_reader_password(db))
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        self.engine = create_engine(url, pool_size=2, max_overflow=0, pool_pre_ping=True, hide_parameters=True)

    def run(self, sql: str, limits: QueryLimits) -> QueryResult:
        import psycopg

        raw = self.engine.raw_connection()
        try:
            driver = raw.driver_connection
            try:
                with driver.cursor() as cur:
                    cur.execute("SET TRANSACTION READ ONLY")
                    cur.execute(f"SET LOCAL statement_timeout = {int(limits.timeout_ms)}")
                    # prepare=True: the extended protocol accepts exactly one statement.
                    cur.execute(sql, prepare=True)
                    columns = [d.name for d in cur.description or ()]
                    rows = [list(r) for r in cur.fetchmany(limits.max_rows + 1)] if cur.description else []
            except psycopg.errors.QueryCanceled:
                raise QueryRefused(f"the query ran past its {limits.timeout_ms} ms limit") from None
            except psycopg.errors.InsufficientPrivilege:
                raise QueryRefused(f"not allowed: run_sql reads only {', '.join(MOCK_TABLES)}") from None
            except psycopg.errors.ReadOnlySqlTransaction:
                raise QueryRefused("not allowed: run_sql is read-only") from None
            except psycopg.Error as exc:
                raise QueryRefused(str(exc).splitlines()[0]) from None
            finally:
                driver.rollback()
        finally:
            raw.close()
        rows, truncated = _cap(rows, limits)
        return QueryResult("postgresql", columns, rows, truncated)


_readers_lock = threading.Lock()


def run_query(db: Database, sql: str, limits: QueryLimits, reader_url: str | None = None) -> QueryResult:
    """Run one read-only statement over the mock tables (blocking).

    Args:
        db: the database holding the mock tables (SQLite file, PostgreSQL or DuckDB file).
        sql: one SELECT in the database's dialect.
        limits: time, row and byte caps.
        reader_url: a read-only PostgreSQL login to use instead of Forge's own reader role.

    Raises:
        QueryRefused: not allowed by the database, not a single statement, too slow, or a
            syntax error; the message is safe to show.
    """
    if db.dialect == "sqlite":
        path = make_url(db.url).database
        if not path or path == ":memory:":
            raise QueryRefused("run_sql needs a SQLite database file")
        return _run_sqlite(path, sql, limits)
    if db.dialect == "duckdb":
        path = make_url(db.url).database
        if not path or path == ":memory:":
            raise QueryRefused("run_sql needs a DuckDB database file")
        return _run_duckdb(path, sql, limits)
    if db.dialect == "postgresql":
        with _readers_lock:
            readers = db.cache.setdefault("sql_readers", {})
            reader = readers.get(reader_url)
            if reader is None:
                reader = readers[reader_url] = _PostgresReader(db, reader_url, limits)
        return reader.run(sql, limits)
    raise QueryRefused(f"run_sql does not support the {db.dialect} dialect")
