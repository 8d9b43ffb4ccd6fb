"""The database: engine, sessions and Alembic migrations. SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from voiceforge.config import ROOT

log = logging.getLogger(__name__)
MIGRATIONS = ROOT / "db"


class Database:
    """One engine and session factory for a URL.

    Args:
        url: a SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
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
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.cache: dict[str, Any] = {}
        """Objects other store modules keep per database (the SQL reader); cleared on reset."""
        self._migrated = False
        self._lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent, once per process)."""
        with self._lock:
            if self._migrated:
                return
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
            self._migrated = True

    def is_empty(self) -> bool:
        """True when the customers table is missing or has no rows."""
        from sqlalchemy import func, select

        from voiceforge.store.models import Customer

        if not inspect(self.engine).has_table("customers"):
            return True
        with self.sessions() as session:
            return session.scalar(select(func.count(Customer.id))) == 0

    def reset(self) -> None:
        """Drop every table (including Alembic's version table) and migrate again."""
        from voiceforge.store.models import Base

        with self.engine.begin() as connection:
            Base.metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        self._migrated = False
        self.cache.clear()
        self.migrate()

    def describe(self) -> str:
        """The URL with any password hidden, for the UI and logs."""
        return make_url(self.url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    # WAL lets the Streamlit app read while the sidecar writes; FKs are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


_databases: dict[str, Database] = {}
_dbs_lock = threading.Lock()


def get_database(url: str, migrate: bool = True) -> Database:
    """The process-wide Database for ``url``, migrated on first use."""
    with _dbs_lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = Database(url)
    if migrate:
        db.migrate()
    return db
