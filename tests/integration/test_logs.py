"""What the logs may not hold: query strings in the access log, a failed statement's parameters."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest
import uvicorn
from sqlalchemy.exc import IntegrityError

from server.main import create_app
from server.serving import uvicorn_config
from tests.support.servers import free_port
from voiceforge.config import load_settings
from voiceforge.store.db import Database
from voiceforge.store.models import SmsMessage

pytestmark = pytest.mark.integration


class Lines(logging.Handler):
    """Keeps every formatted message it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_access_log_records_no_query_string(tmp_path):
    settings = load_settings(forge_api_key="k" * 24, forge_data_dir=tmp_path,
                             database_url=f"sqlite:///{tmp_path / 'l.db'}")
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the sidecar did not start"
        time.sleep(0.02)
    access, kept = logging.getLogger("uvicorn.access"), Lines()  # uvicorn's access log does not propagate
    access.addHandler(kept)
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/calls?api_key=secret-in-the-url&to=%2B14155550123")
    finally:
        access.removeHandler(kept)
        server.should_exit = True
        thread.join(10)
    lines = kept.lines
    assert any("/api/calls" in line and "401" in line for line in lines), lines
    assert not any("secret-in-the-url" in line or "4155550123" in line for line in lines), lines


def test_a_failed_statement_is_logged_without_its_parameters(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    row = {"direction": "inbound", "from_number": "+14155550123", "to_number": "+15005550006",
           "body": "my card number is 4111 1111", "message_sid": "SM1", "status": "received"}
    with db.db_session() as db_session:
        db_session.add(SmsMessage(**row))
    with pytest.raises(IntegrityError) as error, db.db_session() as db_session:
        db_session.add(SmsMessage(**row))  # the same MessageSid: the unique constraint refuses it
        db_session.flush()
    text = str(error.value)
    assert "sms_messages" in text and "4111" not in text and "4155550123" not in text
