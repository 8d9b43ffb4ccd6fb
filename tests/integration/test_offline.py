"""Offline means offline: a whole spoken turn opens no network connection.

``forge talk`` runs in a fresh process (models load, STT, the offline brain, a tool, TTS, the
database) with every proxy variable pointed at a local recorder, so any HTTP(S) client that
tried the network would knock there, and with an audit hook that logs every socket connect
and name lookup the process makes, whatever library makes it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from voiceforge.audio.codecs import wrap_wav

pytestmark = pytest.mark.integration

HOOK = r"""
import json, socket, sys
log = open(sys.argv[1], "w")
def hook(event, args):
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple):
            log.write(json.dumps([event, str(address[0]), address[1]]) + "\n"); log.flush()
    elif event == "socket.getaddrinfo":
        log.write(json.dumps([event, str(args[0]), str(args[1])]) + "\n"); log.flush()
sys.addaudithook(hook)
from forge.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def recorder():
    """A TCP listener counting the connections it gets (a proxy that nobody should use)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    knocks: list[tuple] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            knocks.append(peer)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", knocks
    stop.set()
    thread.join(2)
    server.close()


def test_a_spoken_turn_makes_no_network_connection(tmp_path, speak, recorder):
    proxy, knocks = recorder
    wav = tmp_path / "q.wav"
    wav.write_bytes(wrap_wav(*speak("How many customers are there?")))
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy, "http_proxy": proxy,
                "https_proxy": proxy, "NO_PROXY": "", "FORGE_DATA_DIR": str(tmp_path / "data")})
    env.pop("ORT_DISABLE_TELEMETRY", None)  # Forge must set it itself
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run([sys.executable, "-c", HOOK, str(log), "talk", str(wav), "--json"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    turn = json.loads(out.stdout.strip().splitlines()[-1])
    assert turn["reply"] == "The answer is 40."  # a whole turn really ran
    assert knocks == []
    assert log.read_text() == "", log.read_text()


def test_the_detectors_see_a_connection_when_there_is_one(tmp_path, speak, recorder):
    proxy, knocks = recorder
    wav = tmp_path / "q.wav"
    wav.write_bytes(wrap_wav(*speak("Hello.")))
    log = tmp_path / "net.log"
    env = {**{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
           "STT_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": proxy + "/v1",
           "FORGE_FAILOVER": "false",  # the failure itself is the evidence here, not Whisper's answer
           "FORGE_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", HOOK, str(log), "transcribe", str(wav)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode != 0  # the "server" hung up on it
    assert knocks and "socket.connect" in log.read_text()
