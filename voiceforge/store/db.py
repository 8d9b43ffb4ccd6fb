"""The database: engine, sessions and Alembic migrations. SQLite by default, PostgreSQL by URL.

DuckDB (``duckdb:///path``) may hold the mock business tables only (customers, orders,
appointments; see ``BUSINESS_DATABASE_URL``): Forge's own tables need concurrent writers from
two processes, which a DuckDB file does not allow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import DDL, Engine, Integer, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateColumn

from voiceforge.config import ROOT

T = TypeVar("T")

log = logging.getLogger(__name__)
MIGRATIONS = ROOT / "db"
BUSINESS_TABLES = ("customers", "orders", "appointments")
"""The mock business tables, the only ones a DuckDB database holds."""
DUCKDB_LOCK_WAIT_S = 5.0
"""How long a DuckDB open waits for another process to release the file (s)."""


class Database:
    """One engine and session factory for a URL.

    Args:
        url: a SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``, or
            ``duckdb:///path`` for the mock business tables only).

    A DuckDB file admits one writing process at a time (https://duckdb.org/docs/stable/connect/concurrency),
    and the app and the sidecar are two processes; so each DuckDB session opens the file and
    closes it after (about 40 ms on this machine), waiting up to ``DUCKDB_LOCK_WAIT_S`` while
    the other process has it open.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        if self.dialect == "duckdb":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs = {"poolclass": NullPool}
        # A failed statement's error names the SQL but never its parameters: those are the
        # caller's words, the agent's reply, phone numbers.
        self.engine: Engine = create_engine(url, hide_parameters=True, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if self.dialect == "duckdb":
            event.listen(self.engine, "do_connect", _duckdb_connect)
        self.read_session = sessionmaker(self.engine, expire_on_commit=False)
        """A database session that commits nothing (``with db.read_session() as db_session``)."""
        self.cache: dict[str, Any] = {}
        """Objects other store modules keep per database (the SQL reader); cleared on reset."""
        self._migrated = False
        self._lock = threading.Lock()

    @contextmanager
    def db_session(self) -> Iterator[Session]:
        """A database session that commits on success and rolls back on error."""
        with self.read_session() as db_session:
            try:
                yield db_session
                db_session.commit()
            except BaseException:
                db_session.rollback()
                raise

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` across every process using this database, for the block.

        Sidecars started together must not migrate or seed the same database at once (the loser
        of a race on an empty PostgreSQL database fails with a duplicate ``pg_type`` row). On
        PostgreSQL it is a session-level advisory lock (``pg_advisory_lock``) on a connection of
        its own; on a SQLite file, ``flock`` on ``<file>.<name>.lock`` beside it; otherwise (DuckDB,
        an in-memory database) this process's lock alone.
        """
        import zlib

        if self.dialect == "postgresql":
            key = zlib.crc32(f"forge:{name}".encode()) - 2**31  # a signed 32-bit key
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    connection.commit()
            return
        database = make_url(self.url).database
        if self.dialect == "sqlite" and database and database != ":memory:":
            import fcntl

            with open(f"{database}.{name}.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        yield

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent, once per process).

        A DuckDB database gets the mock business tables (created if missing) instead.
        """
        with self._lock:
            if self._migrated:
                return
            if self.dialect == "duckdb":
                _business_metadata().create_all(self.engine)
                self._migrated = True
                return
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            with self.exclusive("migrate"), self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
            self._migrated = True

    def is_empty(self) -> bool:
        """True when the customers table is missing or has no rows."""
        from sqlalchemy import func, select

        from voiceforge.store.models import Customer

        if not inspect(self.engine).has_table("customers"):
            return True
        with self.read_session() as db_session:
            return db_session.scalar(select(func.count(Customer.id))) == 0

    def reset(self) -> None:
        """Drop every table (including Alembic's version table) and migrate again."""
        from voiceforge.store.models import Base

        with self.engine.begin() as connection:
            (_business_metadata() if self.dialect == "duckdb" else Base.metadata).drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        self._migrated = False
        self.cache.clear()
        self.migrate()

    def describe(self) -> str:
        """The URL with any password hidden, for the UI and logs."""
        return make_url(self.url).render_as_string(hide_password=True)


def transient_error(exc: BaseException) -> bool:
    """Whether a failed write may succeed if tried again.

    Yes for a locked or busy database, a lost or refused connection, a timeout (SQLAlchemy's
    ``OperationalError``, an invalidated connection, ``TimeoutError``, ``ConnectionError``); no
    for a constraint violation or a bug, which trying again cannot mend.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OperationalError | PoolTimeout | TimeoutError | ConnectionError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


async def retry_transient(write: Callable[[], Awaitable[T]], what: str, max_wait_s: float = 30.0,
                          on_retry: Callable[[], None] | None = None) -> T:
    """Await ``write()`` until it succeeds, trying again after failures that may pass.

    The pause between tries starts at 0.5 s and doubles up to ``max_wait_s``; there is no limit
    on tries, so a write outlives a database locked or down for minutes. Failures that cannot
    pass (see :func:`transient_error`) are raised at once.

    Args:
        write: makes a fresh awaitable for each try (run blocking work in ``asyncio.to_thread``).
        what: names the write in the warning logged before each new try.
        max_wait_s: the longest pause between two tries (s).
        on_retry: called before each new try (to count them).

    Raises:
        Exception: the first failure that is not transient.
    """
    from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

    def before_sleep(state) -> None:  # noqa: ANN001 - tenacity's RetryCallState
        if on_retry is not None:
            on_retry()
        log.warning("%s failed (%s); trying again in %.1f s", what, state.outcome.exception(), state.next_action.sleep)

    async for attempt in AsyncRetrying(retry=retry_if_exception(transient_error), reraise=True,
                                       wait=wait_exponential(multiplier=0.5, max=max_wait_s), before_sleep=before_sleep):
        with attempt:
            return await write()
    raise AssertionError("unreachable: tenacity returns or raises")


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    # WAL lets the Streamlit app read while the sidecar writes; FKs are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


# --- DuckDB ------------------------------------------------------------------------------------
@compiles(CreateColumn, "duckdb")
def _duckdb_column(element: CreateColumn, compiler, **kw) -> str:  # noqa: ANN001
    """An integer primary key draws from ``<table>_id_seq``: DuckDB has no SERIAL type."""
    column = element.element
    if column.primary_key and isinstance(column.type, Integer) and len(column.table.primary_key.columns) == 1:
        return f"{column.name} INTEGER DEFAULT nextval('{column.table.name}_{column.name}_seq') NOT NULL"
    return compiler.visit_create_column(element, **kw)


_business: Any = None


def _business_metadata() -> Any:
    """A copy of the business tables' metadata whose CREATE/DROP also handle their sequences."""
    global _business
    if _business is None:
        from sqlalchemy import MetaData

        from voiceforge.store.models import Base

        metadata = MetaData()
        for name in BUSINESS_TABLES:
            table = Base.metadata.tables[name].to_metadata(metadata)
            event.listen(table, "before_create", DDL(f"CREATE SEQUENCE IF NOT EXISTS {name}_id_seq"))
            event.listen(table, "after_drop", DDL(f"DROP SEQUENCE IF EXISTS {name}_id_seq"))
        _business = metadata
    return _business


def open_duckdb(connect: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``connect(*args, **kwargs)``, retried for up to ``DUCKDB_LOCK_WAIT_S`` while the file is busy.

    Busy: another process holds its lock, or this process has it open with another
    configuration (read-write vs read-only) for a moment.

    Raises:
        duckdb.Error: any other failure, or still busy at the deadline.
    """
    import duckdb
    from tenacity import retry, retry_if_exception, stop_after_delay, wait_random

    def busy(exc: BaseException) -> bool:
        message = str(exc).lower()
        return isinstance(exc, duckdb.IOException | duckdb.ConnectionException) and (
            "lock" in message or "different configuration" in message)

    opener = retry(retry=retry_if_exception(busy), stop=stop_after_delay(DUCKDB_LOCK_WAIT_S),
                   wait=wait_random(0.02, 0.1), reraise=True)(connect)
    return opener(*args, **kwargs)


def _duckdb_connect(dialect, _record, cargs, cparams):  # noqa: ANN001, ANN202
    """SQLAlchemy's connect for DuckDB files, waiting while the file is busy (see :class:`Database`)."""
    return open_duckdb(dialect.connect, *cargs, **cparams)


_databases: dict[str, Database] = {}
_dbs_lock = threading.Lock()


def business_database(url: str | None, db: Database) -> Database:
    """The Database of the mock business tables: the one at ``url`` (``business_database_url_resolved``), else ``db``."""
    return get_database(url) if url else db


def get_database(url: str, migrate: bool = True) -> Database:
    """The process-wide Database for ``url``, migrated on first use."""
    with _dbs_lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = Database(url)
    if migrate:
        db.migrate()
    return db
