"""Sidecars started together on one empty database: every process migrates and seeds it, and the
database ends up migrated once and seeded once (the loser of an unguarded race on PostgreSQL fails
with a duplicate pg_type row, and the mock data would be generated twice)."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest
from sqlalchemy import create_engine, make_url, text

from forge.processes import forge_command
from tests.conftest import postgres_url

pytestmark = pytest.mark.integration


def _fresh_postgres() -> str:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not available: set FORGE_TEST_POSTGRES_URL (CI does)")
    name = f"forge_start_{secrets.token_hex(4)}"
    admin = create_engine(make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_three_processes_initialise_one_empty_database_at_once(dialect, tmp_path):
    url = _fresh_postgres() if dialect == "postgresql" else f"sqlite:///{tmp_path / 'forge.db'}"

    async def init(i: int) -> tuple[int, bytes]:
        env = {**os.environ, "DATABASE_URL": url, "FORGE_DATA_DIR": str(tmp_path / f"data{i}"),
               "FORGE_MOCK_CUSTOMERS": "25"}
        proc = await asyncio.create_subprocess_exec(*forge_command("db", "init"), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode, out

    results = await asyncio.gather(*(init(i) for i in range(3)))
    assert all(code == 0 for code, _ in results), [out.decode()[-800:] for code, out in results if code]
    assert sum(b"seeded" in out for _, out in results) == 1  # one seeded; the others found it done
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg") if dialect == "postgresql" else url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 25
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
