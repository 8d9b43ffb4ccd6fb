"""What a new user hits first: CLI mistakes, `make run`'s start and stop, the seed backend's API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from forge import cli
from server.main import create_app
from tests.conftest import wer
from tests.support.servers import free_port
from voiceforge.audio.codecs import unwrap_wav, wrap_wav
from voiceforge.config import load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEY = "seed-api-key"


def test_cli_mistakes_are_plain_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    assert cli.main(["--prompts", "hello", "--persona", "nobody"]) == 2
    assert "no persona 'nobody'" in capsys.readouterr().err
    assert cli.main(["say", "  ", "-o", str(tmp_path / "empty.wav")]) == 2
    assert "no text to say" in capsys.readouterr().err
    assert not (tmp_path / "empty.wav").exists()
    wav = tmp_path / "q.wav"
    wav.write_bytes(wrap_wav(b"\x00\x00" * 1600, 16000))
    assert cli.main(["talk", str(wav), "--persona", "nobody"]) == 2
    assert "no persona" in capsys.readouterr().err


def _outside_address() -> str | None:
    """This machine's address on a non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_forge_up_will_not_publish_the_app_without_a_login(tmp_path):
    env = {**os.environ, "FORGE_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    forge = Path(sys.executable).with_name("forge")
    refused = subprocess.run([str(forge), "up", "--bind", "0.0.0.0", "--sidecar-port", str(free_port()),
                              "--app-port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "FORGE_APP_PASSWORD" in refused.stderr, refused.stderr


def test_forge_up_serves_on_loopback_and_stops_on_one_ctrl_c(tmp_path):
    sidecar_port, app_port = free_port(), free_port()
    env = {**os.environ, "FORGE_DATA_DIR": str(tmp_path / "data")}
    forge = Path(sys.executable).with_name("forge")
    subprocess.run([str(forge), "db", "init"], env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([str(forge), "up", "--sidecar-port", str(sidecar_port), "--app-port", str(app_port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (requests.get(f"http://127.0.0.1:{sidecar_port}/health", timeout=1).ok
                        and requests.get(f"http://127.0.0.1:{app_port}/_stcore/health", timeout=1).ok):
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "forge up did not start"
            time.sleep(0.5)
        outside = _outside_address()
        if outside is not None:
            for port in (sidecar_port, app_port):
                with pytest.raises(OSError):
                    socket.create_connection((outside, port), 1).close()
        key = (tmp_path / "data" / "api_key").read_text().strip()
        assert requests.get(f"http://127.0.0.1:{sidecar_port}/api/calls", timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{sidecar_port}/api/calls", timeout=5,
                            headers={"Authorization": f"Bearer {key}"}).status_code == 200
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the foreground group
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output[-3000:]
        assert time.monotonic() - started < 20
        assert "Segmentation fault" not in output and "Traceback" not in output, output[-3000:]
        assert "Forge stopped." in output
        for port in (sidecar_port, app_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), 1).close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    app = create_app(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 's.db'}",
                                   forge_api_key=KEY))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_the_seed_backend_api(client, speak):
    assert client.get("/").json()["name"] == "Forge sidecar"
    wav = wrap_wav(*speak("Please cancel appointment number four."))
    stt = client.post("/tools/understanding/speech-to-text", files={"audio_file": ("q.wav", wav, "audio/wav")})
    assert wer("Please cancel appointment number four.", stt.json()["text"]) <= 0.2
    tts = client.post("/tools/response/text-to-speech", json={"text": "Your order has shipped."})
    assert unwrap_wav(tts.content)[1] == 22050
    started = client.post("/tools/conversation/start", json={"persona": "customer_service"}).json()
    answer = client.post("/tools/conversation/process",
                         json={"conversation_id": started["conversation_id"], "text": "How many customers are there?"})
    assert answer.json()["reply"] == "The answer is 40."
    spoken = client.post("/voice-agent/process", files={"audio_file": ("q.wav", wrap_wav(*speak(
        "How many customers are there?")), "audio/wav")})
    assert spoken.json()["reply"] == "The answer is 40."


def test_ws_status_lists_live_connections_and_disconnect_ends_one(client):
    from starlette.websockets import WebSocketDisconnect

    assert client.get("/ws/status").json()["active"] == 0
    with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.send_bytes(b"\x00\x00" * 320)  # binary PCM16 frames are accepted (batch mode)
        ws.send_json({"type": "text_input", "text": "How many customers are there?"})
        assert ws.receive_json()["reply"] == "The answer is 40."
        (live,) = client.get("/ws/status").json()["connections"]
        assert live["kind"] == "browser" and live["persona"] == "customer_service" and live["call_sid"] is None
        here = client.get("/ws/status").json()["instance"]
        assert client.post(f"/ws/disconnect/{live['id']}").json() == {"disconnected": live["id"], "instance": here}
        with pytest.raises(WebSocketDisconnect):
            while True:
                ws.receive_json()
    assert client.get("/ws/status").json()["active"] == 0
    assert client.post("/ws/disconnect/abcdef").status_code == 404


async def test_the_phone_pages_simulator_runs_a_call_in_process(speak):
    from forge.inprocess import run_local

    result = await run_local([speak("How many customers are there?")])
    assert result["turns"][0]["reply"] == "The answer is 40." and result["status"] == "completed"


def test_forge_prompts_loads_no_speech_model(tmp_path):
    """Text turns need no STT, TTS or end-of-turn model: `forge --prompts` must not load one."""
    check = (
        "import sys\n"
        "from forge import cli\n"
        "code = cli.main(['--prompts', 'How many customers are there?'])\n"
        "import voiceforge.providers.local as local\n"
        "print('loaded', code, len(local._piper_voices), len(local._whisper_models), 'faster_whisper' in sys.modules,"
        " 'voiceforge.audio.turn_model' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FORGE_DATA_DIR": str(tmp_path)})
    assert "The answer is 40." in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "loaded 0 0 0 False False", out.stdout


def test_forge_say_writes_the_wav_to_a_pipe(tmp_path):
    """`forge say TEXT -o - | player`: the WAV goes to stdout (nothing else does), the summary to stderr."""
    forge = Path(sys.executable).with_name("forge")
    out = subprocess.run([str(forge), "say", "Your order has shipped.", "-o", "-"], capture_output=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "FORGE_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    pcm, rate = unwrap_wav(out.stdout)
    assert rate == 22050 and len(pcm) / 2 / rate > 0.8
    assert b"wrote stdout" in out.stderr and not (tmp_path / "-").exists()
