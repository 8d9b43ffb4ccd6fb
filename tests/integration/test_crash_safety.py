"""Nothing the caller said is lost: not to a killed sidecar, not to a database locked past its timeout.

The crash runs ``forge serve`` as its own process (as ``make run`` does), kills it with SIGKILL
while it is answering the caller's second utterance, starts it again on the same database and
reads the call back over the API. The lock is a second SQLite connection holding the write
lock for longer than the sidecar's 15 s busy timeout, during a real simulated call.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from server.main import create_app
from tests.conftest import wer
from tests.support.servers import free_port, serve
from voiceforge.config import load_settings
from voiceforge.store import calls
from voiceforge.store.db import Database
from voiceforge.store.models import Call
from voiceforge.telephony.simulator import simulate_call

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]
TOKEN = "crash-safety-token"
KEY = "crash-safety-key"
FIRST = "How many customers are there?"
SECOND = "Please look up customer number three and tell me their city."


@contextlib.contextmanager
def sidecar_process(folder, port):  # noqa: ANN001, ANN201
    """``forge serve`` on ``port`` over ``folder``'s SQLite database; yields the Popen."""
    env = {**os.environ, "FORGE_DATA_DIR": str(folder), "DATABASE_URL": f"sqlite:///{folder / 'crash.db'}",
           "FORGE_API_KEY": KEY, "TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "FORGE_INSTANCE": "crash-test"}
    proc = subprocess.Popen([sys.executable, "-m", "forge", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "the sidecar exited while starting"
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the sidecar did not get ready"
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_a_sidecar_killed_mid_reply_loses_no_utterance_and_closes_the_call(tmp_path, speak):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    heard_at: dict[str, float] = {}

    async def kill_once_the_second_utterance_is_stored(proc: subprocess.Popen) -> dict:
        while "speaking" not in heard_at:  # noqa: ASYNC110 - waits for the simulator's progress
            await asyncio.sleep(0.05)
        while True:
            listed = (await api.get("/api/calls")).json()
            if listed:
                call = (await api.get(f"/api/calls/{listed[0]['call_sid']}")).json()
                if len(call["turns"]) == 2:
                    proc.send_signal(signal.SIGKILL)  # mid-reply: no shutdown, no flush
                    return call
            await asyncio.sleep(0.05)

    def progress(event: dict) -> None:
        if event["event"] == "speaking" and event["turn"] == 2:
            heard_at["speaking"] = time.monotonic()

    with sidecar_process(tmp_path, port) as proc:
        killer = asyncio.create_task(kill_once_the_second_utterance_is_stored(proc))
        with contextlib.suppress(Exception):  # the call dies with the sidecar
            await simulate_call(base, TOKEN, [speak(FIRST), speak(SECOND)], api_key=KEY, progress=progress,
                                timeout_s=60)
        before_kill = await asyncio.wait_for(killer, 60)
        proc.wait(10)
    second = before_kill["turns"][1]
    assert second["answered"] is False and second["assistant_text"] == "", second  # stored before its reply
    assert before_kill["status"] == "in-progress"
    with sidecar_process(tmp_path, port):  # the same instance, started again
        call = (await api.get(f"/api/calls/{before_kill['call_sid']}")).json()
    await api.aclose()
    assert call["status"] == "failed" and call["ended_at"] and "stopped during the call" in call["end_reason"], call
    first, second = call["turns"]
    assert first["answered"] and first["assistant_text"] and wer(FIRST, first["user_text"]) <= 0.3, first
    assert not second["answered"] and wer(SECOND, second["user_text"]) <= 0.3, second


def test_calls_that_never_connected_are_closed_and_other_sidecars_calls_are_left_alone(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'stale.db'}")
    db.migrate()
    calls.record_call(db, "CA-old-ringing", "outbound", "+15005550006", "+15550000001", "friendly_guide",
                      "ringing", owner="here")
    calls.record_call(db, "CA-new-ringing", "outbound", "+15005550006", "+15550000002", "friendly_guide",
                      "ringing", owner="here")
    calls.record_call(db, "CA-elsewhere", "inbound", "+15550000003", "+15005550006", "friendly_guide",
                      "in-progress", owner="there")
    calls.record_call(db, "CA-live-here", "inbound", "+15550000004", "+15005550006", "friendly_guide",
                      "in-progress", owner="here")
    with db.db_session() as s:
        old = s.query(Call).filter_by(call_sid="CA-old-ringing").one()
        old.created_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    assert calls.close_stale_calls(db, "here", at_start=False) == ["CA-old-ringing"]
    assert calls.get_call(db, "CA-old-ringing")["end_reason"].startswith("never connected")
    assert calls.get_call(db, "CA-live-here")["status"] == "in-progress"  # a running sidecar's live call
    assert calls.close_stale_calls(db, "here", at_start=True) == ["CA-live-here"]
    assert calls.get_call(db, "CA-new-ringing")["status"] == "ringing"  # Twilio may still connect it
    assert calls.get_call(db, "CA-elsewhere")["status"] == "in-progress"  # another sidecar's
    assert calls.add_status(db, "CA-live-here", "completed")  # a late callback is history, not a reopening
    assert calls.get_call(db, "CA-live-here")["status"] == "failed"


async def test_a_database_locked_past_its_timeout_mid_call_loses_no_turn(tmp_path, speak):
    port = free_port()
    settings = load_settings(public_base_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN,
                             forge_api_key=KEY, forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'l.db'}")
    app = create_app(settings)
    held = threading.Event()

    def hold_the_write_lock(seconds: float) -> None:
        conn = sqlite3.connect(tmp_path / "l.db", timeout=30)
        conn.execute("BEGIN IMMEDIATE")  # every other writer waits, then gives up after 15 s
        held.set()
        time.sleep(seconds)
        conn.rollback()
        conn.close()

    async def lock_once_the_call_runs() -> None:
        while not app.state.telephony.calls:  # noqa: ASYNC110 - polls another thread's state
            await asyncio.sleep(0.01)
        threading.Thread(target=hold_the_write_lock, args=(18,), daemon=True).start()

    with serve(app, port=port) as base:
        app.state.engine.warm_up()
        locker = asyncio.create_task(lock_once_the_call_runs())
        result = await simulate_call(base, TOKEN, [speak(FIRST), speak(SECOND)], api_key=KEY, timeout_s=90)
        await locker
        deadline = time.monotonic() + 40  # the writer retries with backoff once the lock is gone
        while time.monotonic() < deadline:
            stored = calls.get_call(app.state.engine.db, result["call_sid"])
            if stored and len(stored["turns"]) == 2 and all(t["answered"] for t in stored["turns"]):
                break
            await asyncio.sleep(0.5)
    assert held.is_set()
    first, second = stored["turns"]
    # Each turn holds its own utterance (Whisper may mishear a word or two of Piper: "their" → "they're")
    assert wer(FIRST, first["user_text"]) <= 0.3 and first["assistant_text"], first
    assert wer(SECOND, second["user_text"]) <= 0.3 and second["assistant_text"] and second["answered"], second
