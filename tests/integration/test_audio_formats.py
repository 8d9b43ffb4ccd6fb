"""Audio in the formats browsers and phones produce, probed and decoded by ffmpeg."""

from __future__ import annotations

import io
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.conftest import wer
from voiceforge.config import load_settings

pytestmark = pytest.mark.integration
KEY = "formats-key"
TEXT = "Please cancel appointment number four."
EXPORTS = {"mp3": {}, "ogg": {"codec": "libopus"}, "webm": {"codec": "libopus"}, "ipod": {"codec": "aac"},
           "flac": {}}


def encode(speak, fmt: str, text: str = TEXT) -> bytes:
    from pydub import AudioSegment

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg; .ci/run does)")
    pcm, rate = speak(text)
    buf = io.BytesIO()
    AudioSegment(pcm, frame_rate=rate, sample_width=2, channels=1).export(buf, format=fmt, **EXPORTS[fmt])
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    app = create_app(load_settings(forge_api_key=KEY, forge_data_dir=folder, database_url=f"sqlite:///{folder / 'f.db'}"))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_uploads_in_each_format_are_transcribed(client, speak, fmt):
    data = encode(speak, fmt)
    r = client.post("/voice/speech-to-text", files={"file": (f"clip.{fmt}", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert wer(TEXT, r.json()["text"]) <= 0.2, (fmt, r.json())


def test_a_spoken_mp3_turn_is_answered(client, speak):
    data = encode(speak, "mp3", "How many customers are there?")
    out = client.post("/voice-agent/process", files={"audio_file": ("q.mp3", data, "audio/mpeg")}).json()
    assert out["reply"] == "The answer is 40."


def test_without_ffmpeg_the_415_names_it(client, speak, monkeypatch):
    data = encode(speak, "ogg")
    monkeypatch.setenv("PATH", "/nonexistent")  # this machine without Debian's ffmpeg
    r = client.post("/voice/speech-to-text", files={"file": ("q.ogg", data, "audio/ogg")})
    assert r.status_code == 415 and "ffmpeg" in r.json()["detail"]


def test_a_small_file_that_lasts_too_long_is_refused_quickly(client):
    from pydub import AudioSegment

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    buf = io.BytesIO()
    AudioSegment.silent(duration=5 * 60_000, frame_rate=16000).export(buf, format="ogg", codec="libopus")
    assert len(buf.getvalue()) < 200_000  # five minutes in a small file
    started = time.perf_counter()
    r = client.post("/voice/speech-to-text", files={"file": ("long.ogg", buf.getvalue(), "audio/ogg")})
    assert r.status_code == 413 and time.perf_counter() - started < 3


def test_a_flac_bomb_is_refused_from_its_header_before_any_sample_is_decoded(client, tmp_path):
    import resource
    import subprocess

    from voiceforge.audio.codecs import UnsupportedAudioError
    from voiceforge.audio.decode import decode_audio

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    bomb = tmp_path / "bomb.flac"  # 59 s of 7.1 silence at 192 kHz: under the 60 s cap, tiny on disk
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=192000:cl=7.1", "-t", "59",
                    "-c:a", "flac", "-sample_fmt", "s32", str(bomb)], check=True)
    data = bomb.read_bytes()
    assert len(data) < 1_000_000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(UnsupportedAudioError, match="8 channels"):
        decode_audio(data, max_seconds=60)
    r = client.post("/voice/speech-to-text", files={"file": ("bomb.flac", data, "audio/flac")})
    assert r.status_code == 415 and "channels" in r.json()["detail"]
    assert time.perf_counter() - started < 3  # 33 s and 1.2 GB when it was decoded whole
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024 < 100
    fast = tmp_path / "fast.flac"  # two channels, but 96 kHz
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=96000:cl=stereo", "-t", "2",
                    "-c:a", "flac", str(fast)], check=True)
    with pytest.raises(UnsupportedAudioError, match="96000 Hz"):
        decode_audio(fast.read_bytes(), max_seconds=60)


def test_damaged_and_unknown_audio(client):
    damaged = client.post("/voice/speech-to-text", files={"file": ("x.ogg", b"OggS" + b"\x00" * 300, "audio/ogg")})
    assert damaged.status_code == 422
    unknown = client.post("/voice/speech-to-text", files={"file": ("x.bin", b"\x00\x01" * 200, "audio/x-unknown")})
    assert unknown.status_code == 415 and "MP3" in unknown.json()["detail"]


def test_the_cli_takes_an_mp3(speak, tmp_path, capsys, monkeypatch):
    import json

    from forge import cli
    from voiceforge.config import get_settings

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    path = tmp_path / "q.mp3"
    path.write_bytes(encode(speak, "mp3", "How many customers are there?"))
    assert cli.main(["talk", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reply"] == "The answer is 40."
