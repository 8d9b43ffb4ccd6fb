"""Read-only SQL over the mock business tables, confined by the database itself.

``run_sql`` lets an LLM (and so anyone who can talk to it, a texter included) write SQL, so
the confinement cannot be a regular expression or a prompt. Here it is the database's own:

- SQLite: a separate ``mode=ro`` connection with an authorizer that allows reading the mock
  tables and nothing else (no other table, no ``sqlite_master``, no PRAGMA, no ATTACH, no
  recursive CTE, no ``randomblob``, ``zeroblob`` or ``printf``), per-connection limits (a string or blob of
  at most 1 MB, a short statement, shallow expressions: so no single function call can build a
  gigabyte), a progress handler that aborts at the deadline, the deadline checked between rows
  too, and Python's one-statement-per-execute rule.
- PostgreSQL: a login role of its own (``forge_reader_<database>``) granted SELECT on the mock
  tables only (on customers, not their personal columns), ``default_transaction_read_only``,
  a ``statement_timeout`` and a small ``work_mem``, reached on its own connections with the
  extended query protocol (one statement, no ``; RESET ROLE``). ``FORGE_SQL_READER_URL`` names
  a read-only login instead when Forge's user may not create roles.
- DuckDB: its own ``read_only`` connection with file access, extension loading and the
  configuration itself locked (``enable_external_access=false``, ``lock_configuration``), one
  parsed statement that must be a SELECT naming only the mock tables (unqualified), an
  interrupt at the deadline, one thread and a memory limit.

Personal columns (:data:`PERSONAL_COLUMNS`) are read only in the verified caller's own row: on
SQLite and DuckDB the query sees ``customers`` through a temporary view that blanks them in
every other row (the caller's verified customer id is the query's one input); PostgreSQL's
reader is never granted them. Rows and bytes are capped. Every call is blocking; the tool runs
it on its own small pool.
"""

from __future__ import annotations

import hashlib
import json
import re
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
PERSONAL_COLUMNS = ("phone", "email", "zip_code")
"""Columns of ``customers`` about a person (how to reach them, where they live)."""
PERSONAL_REFUSED = (f"not allowed: run_sql reads only {', '.join(MOCK_TABLES)}, and {', '.join(PERSONAL_COLUMNS)} "
                    "only in a verified caller's own row")
SQLITE_LIMITS = {
    sqlite3.SQLITE_LIMIT_LENGTH: 1_000_000,  # bytes in one string or blob: no gigabyte printf or randomblob
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 20_000,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 10,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 16,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1_000,
}
"""Per-connection limits of run_sql's SQLite connection (sqlite3.Connection.setlimit)."""


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
_SQLITE_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "randomblob",
                            "zeroblob", "printf", "format"}
"""Files and extensions, and the functions that loop or allocate inside one call, where neither the
length limit nor the progress handler reaches: printf('%.*c', 2000000000, 'x') ran 6 s in one call."""


def _sqlite_authorizer(other_tables: set[str]):  # noqa: ANN202
    """An authorizer that allows SELECT over the mock tables and query-local names only.

    SQLite reports reads of a CTE like reads of a table (and ``COUNT(*)`` with no database
    name), so a read is refused when it names any real table or view other than the mock
    tables, or an internal ``sqlite_`` table; names that exist only inside the query pass.
    A personal column of ``main.customers`` is read only through the temporary ``customers``
    view (which blanks it outside the verified caller's row); the query cannot name the table
    around it. Every other action (PRAGMA, ATTACH, writes, recursion, ``load_extension``) is
    refused.
    """

    def authorize(action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            name = (arg1 or "").lower()
            if dbname == "temp" and name == "customers":
                return sqlite3.SQLITE_OK  # the view run_sql made; the query may create nothing
            if dbname not in (None, "main") or name.startswith("sqlite_") or name in other_tables:
                return sqlite3.SQLITE_DENY
            if name == "customers" and (arg2 or "").lower() in PERSONAL_COLUMNS and source != "customers":
                return sqlite3.SQLITE_DENY  # main.customers.phone named around the view
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return authorize


def customers_view(columns: list[str], source: str, verified_customer: int | None) -> str:
    """The SELECT of a view of ``source`` (the customers table) that blanks the personal columns.

    They are kept in the verified customer's own row only (in no row when ``verified_customer``
    is None); ``columns`` are the table's, in order.
    """
    own = f"id = {int(verified_customer)}" if verified_customer is not None else "0 = 1"
    shown = [f"CASE WHEN {own} THEN {c} END AS {c}" if c in PERSONAL_COLUMNS else c for c in columns]
    return f"SELECT {', '.join(shown)} FROM {source}"


def _run_sqlite(path: str, sql: str, limits: QueryLimits, verified_customer: int | None,
                params: dict[str, Any] | None = None) -> QueryResult:
    deadline = time.monotonic() + limits.timeout_ms / 1000
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=limits.timeout_ms / 1000,
                           check_same_thread=False)
    try:
        names = {row[0].lower() for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        columns = [row[1] for row in conn.execute("PRAGMA table_info(customers)")]
        conn.execute("CREATE TEMP VIEW customers AS " + customers_view(columns, "main.customers", verified_customer))
        for limit, value in SQLITE_LIMITS.items():
            conn.setlimit(limit, value)
        conn.set_authorizer(_sqlite_authorizer(names - set(MOCK_TABLES)))
        # Called every 1,000 VM instructions: a non-zero return aborts the statement.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            cursor = conn.execute(sql, params or {})
            columns = [d[0] for d in cursor.description or ()]
            rows = []
            while len(rows) <= limits.max_rows and (row := cursor.fetchone()) is not None:
                rows.append(list(row))
                if time.monotonic() > deadline:
                    raise QueryRefused(f"the query ran past its {limits.timeout_ms} ms limit")
        except sqlite3.Warning as exc:  # "You can only execute one statement at a time."
            raise QueryRefused(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if message == "interrupted":
                message = f"the query ran past its {limits.timeout_ms} ms limit"
            elif "not authorized" in message or "prohibited" in message:
                message = PERSONAL_REFUSED
            elif "too big" in message:
                message = "a value in the query would be larger than 1 MB"
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


def _run_duckdb(path: str, sql: str, limits: QueryLimits, verified_customer: int | None,
                params: dict[str, Any] | None = None) -> QueryResult:
    import duckdb

    # DuckDB's named parameters are $name; its table-name reader cannot bind them, so it reads NULLs
    probe = _named(sql, "NULL") if params else sql
    if params:
        sql = _named(sql, "$")
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
            # Unqualified names only: "customers" must be the view below, not the table around it.
            named = {name.split(" AS ", 1)[0].strip().lower() for name in duckdb.get_table_names(probe, qualified=True)}
            if named - set(MOCK_TABLES):
                raise QueryRefused(PERSONAL_REFUSED)
            catalog = conn.execute("SELECT current_database()").fetchone()[0]
            columns = [row[0] for row in conn.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = 'customers' "
                "ORDER BY column_index", [catalog]).fetchall()]
            source = '"' + catalog.replace('"', '""') + '".main.customers'
            conn.execute("CREATE TEMP VIEW customers AS " + customers_view(columns, source, verified_customer))
            timer.start()
            cursor = conn.execute(sql, params) if params else conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            rows = [list(r) for r in cursor.fetchmany(limits.max_rows + 1)]
        except duckdb.InterruptException:
            raise QueryRefused(f"the query ran past its {limits.timeout_ms} ms limit") from None
        except duckdb.PermissionException:
            raise QueryRefused(PERSONAL_REFUSED) from None
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
        f"GRANT SELECT ON {', '.join(t for t in MOCK_TABLES if t != 'customers')} TO {role}",
        # customers without the columns about a person: a column privilege, checked by PostgreSQL
        f"""DO $$ DECLARE shown text; BEGIN
              SELECT string_agg(quote_ident(column_name), ', ') INTO shown FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name = 'customers'
                 AND column_name NOT IN ({', '.join(repr(c) for c in PERSONAL_COLUMNS)});
              EXECUTE format('GRANT SELECT (%s) ON customers TO {role}', shown);
            END $$""",
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

    def run(self, sql: str, limits: QueryLimits, params: dict[str, Any] | None = None) -> QueryResult:
        import psycopg

        raw = self.engine.raw_connection()
        try:
            driver = raw.driver_connection
            try:
                with driver.cursor() as cur:
                    cur.execute("SET TRANSACTION READ ONLY")
                    cur.execute(f"SET LOCAL statement_timeout = {int(limits.timeout_ms)}")
                    cur.execute("SET LOCAL work_mem = '4MB'")  # sorts and hashes spill early, not grow
                    # prepare=True: the extended protocol accepts exactly one statement.
                    if params:
                        cur.execute(_named(sql.replace("%", "%%"), "%"), params, prepare=True)
                    else:
                        cur.execute(sql, prepare=True)
                    columns = [d.name for d in cur.description or ()]
                    rows = [list(r) for r in cur.fetchmany(limits.max_rows + 1)] if cur.description else []
            except psycopg.errors.QueryCanceled:
                raise QueryRefused(f"the query ran past its {limits.timeout_ms} ms limit") from None
            except psycopg.errors.InsufficientPrivilege:
                raise QueryRefused(PERSONAL_REFUSED) from None
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


_NAMED = re.compile(r"'(?:[^']|'')*'|(?<!:):([A-Za-z_]\w*)")


def _named(sql: str, style: str) -> str:
    """``:name`` parameters (outside string literals) in another style: ``$`` → ``$name``, ``%`` → ``%(name)s``, ``NULL``."""
    def swap(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)
        return {"$": f"${match.group(1)}", "%": f"%({match.group(1)})s"}.get(style, style)

    return _NAMED.sub(swap, sql)


def run_query(db: Database, sql: str, limits: QueryLimits, reader_url: str | None = None,
              verified_customer: int | None = None, params: dict[str, Any] | None = None) -> QueryResult:
    """Run one read-only statement over the mock tables (blocking).

    Args:
        db: the database holding the mock tables (SQLite file, PostgreSQL or DuckDB file).
        sql: one SELECT in the database's dialect.
        limits: time, row and byte caps.
        reader_url: a read-only PostgreSQL login to use instead of Forge's own reader role.
        verified_customer: the customer id the caller is verified as (their own number called
            or texted): their row's personal columns are readable (SQLite, DuckDB); None: no row's.
        params: values of the statement's ``:name`` parameters (a declared SQL tool's arguments),
            bound by the driver, never pasted into the text.

    Raises:
        QueryRefused: not allowed by the database, not a single statement, too slow, or a
            syntax error; the message is safe to show.
    """
    if db.dialect == "sqlite":
        path = make_url(db.url).database
        if not path or path == ":memory:":
            raise QueryRefused("run_sql needs a SQLite database file")
        return _run_sqlite(path, sql, limits, verified_customer, params)
    if db.dialect == "duckdb":
        path = make_url(db.url).database
        if not path or path == ":memory:":
            raise QueryRefused("run_sql needs a DuckDB database file")
        return _run_duckdb(path, sql, limits, verified_customer, params)
    if db.dialect == "postgresql":
        with _readers_lock:
            readers = db.cache.setdefault("sql_readers", {})
            reader = readers.get(reader_url)
            if reader is None:
                reader = readers[reader_url] = _PostgresReader(db, reader_url, limits)
        return reader.run(sql, limits, params)
    raise QueryRefused(f"run_sql does not support the {db.dialect} dialect")
