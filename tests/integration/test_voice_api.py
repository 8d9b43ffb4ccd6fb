"""The sidecar's general voice-agent REST surface and the browser websocket /ws."""

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.conftest import wer
from voiceforge.audio.codecs import unwrap_wav, wrap_wav
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings

pytestmark = pytest.mark.integration
KEY = "voice-test-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    app = create_app(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'f.db'}",
                                   forge_api_key=KEY))
    with TestClient(app, headers=AUTH) as c:
        yield c


def test_personas(client):
    listed = {p["id"]: p for p in client.get("/personas").json()}
    assert {"friendly_guide", "calm_concierge", "energetic_host", "customer_service", "hanuman_storyteller"} <= set(listed)
    one = client.get("/personas/hanuman_storyteller").json()
    assert "children" in one["system_prompt"]
    assert one["tools"] == ["teach_hanuman_chalisa", "tell_a_story", "play_hanuman_chalisa", "end_call"]
    assert client.get("/personas/nope").status_code == 404


def test_conversation_keeps_context_across_requests(client):
    started = client.post("/conversation/start", json={"persona": "customer_service"}).json()
    assert started["greeting"].startswith("Hi")
    cid = started["conversation_id"]
    first = client.post("/conversation/process", json={"conversation_id": cid, "text": "Where is my order?"}).json()
    assert first["reply"].endswith("?") and first["tool_calls"] == []
    second = client.post("/conversation/process", json={"conversation_id": cid, "text": "I am customer 4"}).json()
    assert second["tool_calls"][0]["name"] == "get_order_history"
    assert second["tool_calls"][0]["arguments"] == {"customer_id": 4}
    assert client.post("/conversation/process", json={"conversation_id": 999, "text": "hi"}).status_code == 404


def test_speech_endpoints(client, speak):
    tts = client.post("/voice/text-to-speech", json={"text": "Your order has shipped."})
    assert tts.status_code == 200 and tts.headers["content-type"] == "audio/wav"
    pcm, rate = unwrap_wav(tts.content)
    assert rate == 22050 and len(pcm) / 2 / rate > 0.8
    wav = wrap_wav(*speak("Please cancel appointment number four."))
    stt = client.post("/voice/speech-to-text", files={"file": ("q.wav", wav, "audio/wav")}).json()
    assert wer("Please cancel appointment number four.", stt["text"]) <= 0.2 and stt["audio_ms"] > 1000


def test_voice_agent_process_and_bad_uploads(client, speak):
    wav = wrap_wav(*speak("How many customers are there?"))
    out = client.post("/voice-agent/process", files={"file": ("q.wav", wav, "audio/wav")},
                      data={"persona": "customer_service"}).json()
    assert out["reply"] == "The answer is 40." and out["tool_calls"][0]["name"] == "run_sql"
    reply_pcm, _ = unwrap_wav(base64.b64decode(out["audio_wav_base64"]))
    assert len(reply_pcm) > 20_000
    # empty or a damaged WAV: 422; bytes that are no audio format Forge reads: 415
    for bad, status in ((b"", 422), (wav[: len(wav) // 2], 422), (b"not audio at all", 415)):
        r = client.post("/voice-agent/process", files={"file": ("bad.wav", bad, "audio/wav")})
        assert r.status_code == status, (bad[:10], r.text)


def test_browser_websocket_text_and_streamed_audio(client, speak):
    with client.websocket_connect("/ws?persona=customer_service", headers=AUTH) as ws:
        ws.send_json({"type": "text_input", "text": "How many customers are there?"})
        reply = ws.receive_json()
        assert reply["type"] == "conversation_response" and reply["reply"] == "The answer is 40."
        audio = ws.receive_json()
        assert audio["type"] == "audio_response" and unwrap_wav(base64.b64decode(audio["data"]))[1] == 22050
        pcm, rate = speak("Look up customer number three.")
        stream = resample(pcm, rate, 16000) + np.zeros(16000, dtype="<i2").tobytes()  # then 1 s of silence
        for i in range(0, len(stream), 3200):  # 100 ms chunks, as a browser would send
            ws.send_json({"type": "audio_chunk", "data": base64.b64encode(stream[i : i + 3200]).decode()})
        heard = ws.receive_json()
        assert heard["type"] == "transcription" and wer("Look up customer number three.", heard["text"]) <= 0.2
        answer = ws.receive_json()
        assert answer["tool_calls"][0]["arguments"] == {"customer_id": 3}
        ws.receive_json()  # the audio_response
        ws.send_json({"type": "teleport"})
        assert ws.receive_json() == {"type": "error", "message": "unknown message type 'teleport'"}
