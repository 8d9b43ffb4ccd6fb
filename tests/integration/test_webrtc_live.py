"""The Live page's session without a browser: aiortc's two callbacks driven at real time.

A peer thread stands in for aiortc's media loop exactly as streamlit-webrtc calls the callbacks:
every 20 ms it hands the sink one microphone frame (48 kHz stereo s16, as Opus decodes) and
pulls one agent frame from the source. Piper speaks the user's side; Whisper reads back the
agent audio the peer received. Both backends: the cascade conversation loop, and a Realtime
session against Forge's offline Realtime-compatible server on loopback.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time

import av
import numpy as np
import pytest

from forge_ui.live import OUTPUT_RATE, LivePageController
from server.main import create_app
from server.transports.webrtc import frame_to_pcm16, level_dbfs
from tests.support.servers import free_port, serve
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.local import WhisperSTT
from voiceforge.store import conversations
from voiceforge.transport import SpeechStarted

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]
KEY = "webrtc-live-test-key"
FRAME = OUTPUT_RATE // 50  # samples in 20 ms


class Peer(threading.Thread):
    """aiortc's side: one microphone frame in and one agent frame out every 20 ms of wall clock."""

    def __init__(self, session: LivePageController) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.pending = bytearray()  # microphone PCM16 mono 48 kHz still to send
        self.lock = threading.Lock()
        self.received: list[tuple[float, bytes]] = []  # (Unix time, agent PCM16 48 kHz)
        self.running = True

    def speak(self, pcm48: bytes) -> None:
        with self.lock:
            self.pending += pcm48

    def speaking(self) -> bool:
        with self.lock:
            return bool(self.pending)

    def run(self) -> None:
        start, n = time.monotonic(), 0
        tb = fractions.Fraction(1, OUTPUT_RATE)
        while self.running:
            with self.lock:
                chunk = bytes(self.pending[: FRAME * 2]).ljust(FRAME * 2, b"\0")
                del self.pending[: FRAME * 2]
            mono = np.frombuffer(chunk, dtype="<i2")
            frame = av.AudioFrame.from_ndarray(np.stack([mono, mono], axis=1).reshape(1, -1), format="s16",
                                               layout="stereo")
            frame.sample_rate = OUTPUT_RATE
            self.session.transport.on_microphone_frame(frame)
            out = self.session.transport.next_agent_frame(n * FRAME, tb)
            self.received.append((time.time(), frame_to_pcm16(out)))
            n += 1
            time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))

    def audio_since(self, t: float) -> bytes:
        return b"".join(pcm for at, pcm in self.received if at >= t)


def say(speak, text: str) -> bytes:
    pcm, rate = speak(text)
    return resample(pcm, rate, OUTPUT_RATE) + b"\0\0" * (OUTPUT_RATE // 2)


def wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def background_loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webrtc")
    eng = Engine(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'w.db'}",
                               forge_api_key=KEY))
    eng.ensure_mock_data()
    eng.warm_up()
    return eng


def spoken(judge: WhisperSTT, pcm48: bytes) -> str:
    return asyncio.run(judge.transcribe(resample(pcm48, OUTPUT_RATE, 16000), 16000)).text


def test_cascade_two_turns_and_a_barge_in_over_the_webrtc_callbacks(engine, background_loop, speak):
    session = LivePageController(engine, background_loop, "friendly_guide", vad_threshold=0.5, silence_ms=500)
    session.start()
    peer = Peer(session)
    peer.start()
    judge = WhisperSTT(engine.settings.forge_cache_dir, window_s=30)
    try:
        wait_for(lambda: session.state == "speaking", 30, "the greeting")
        wait_for(lambda: session.state == "listening" and session.transport.queued_ms == 0, 60, "the greeting's end")

        t0 = time.time()
        peer.speak(say(speak, "How many customers are there?"))
        wait_for(lambda: any(e["role"] == "agent" and e.get("done") for e in session.transcript()), 60, "a reply")
        wait_for(lambda: session.state == "listening" and session.transport.queued_ms == 0, 30, "the reply's end")
        reply_audio = peer.audio_since(t0)
        assert "40" in spoken(judge, reply_audio) or "forty" in spoken(judge, reply_audio).lower()

        # A request the offline brain answers at length, then a question over the answer.
        peer.speak(say(speak, "Tell me a joke about the weather."))
        wait_for(lambda: not peer.speaking() and session.state == "speaking", 60, "the long answer")
        time.sleep(1.5)
        barge = time.time()
        peer.speak(say(speak, "How many customers are there?"))
        wait_for(lambda: sum(1 for e in session.transcript() if e["role"] == "agent" and e.get("done")) >= 3,
                 60, "the answer after the barge-in")
        wait_for(lambda: session.state == "listening" and session.transport.queued_ms == 0, 30, "the last reply's end")
    finally:
        peer.running = False
        peer.join(5)
        session.stop()

    agents = [e for e in session.transcript() if e["role"] == "agent" and e.get("done")]
    assert [a["interrupted"] for a in agents] == [False, True, False], agents
    assert "40" in agents[2]["text"]
    assert all(a["timings_ms"]["first_frame_sent"] > 0 for a in agents)
    # The interrupted answer went silent within 300 ms of the user's speech being detected.
    detected = min(at for at, e in session.feed() if isinstance(e, SpeechStarted) and at >= barge)
    after = [(at, pcm) for at, pcm in peer.received if detected + 0.3 <= at <= detected + 1.0]
    assert after and max(level_dbfs(pcm) for _, pcm in after) == -100.0

    stored = conversations.get_conversation(engine.db, session.conversation_id)
    assert [t["interrupted"] for t in stored["turns"]] == [False, True, False]


@pytest.fixture(scope="module")
def realtime_server(engine):
    app = create_app(engine.settings, engine=engine, roles=("realtime",))
    with serve(app, port=free_port()) as base:
        yield base.replace("http://", "ws://") + "/v1"


def test_realtime_backend_answers_over_the_webrtc_callbacks(engine, background_loop, realtime_server, speak):
    engine.settings.forge_realtime_url = realtime_server
    session = LivePageController(engine, background_loop, "friendly_guide", backend="realtime", silence_ms=500)
    session.start()
    peer = Peer(session)
    peer.start()
    judge = WhisperSTT(engine.settings.forge_cache_dir, window_s=30)
    try:
        wait_for(lambda: session.state == "speaking", 30, "the greeting")
        wait_for(lambda: session.state != "speaking" or session.transport.queued_ms == 0, 60, "the greeting's end")
        time.sleep(0.5)
        t0 = time.time()
        peer.speak(say(speak, "How many customers are there?"))
        wait_for(lambda: any(e["role"] == "agent" and e.get("done") and e["generation"] > 0
                             for e in session.transcript()), 60, "a reply")
        wait_for(lambda: session.transport.queued_ms == 0, 30, "the reply's end")
        time.sleep(0.3)
    finally:
        peer.running = False
        peer.join(5)
        session.stop()
    entries = session.transcript()
    assert any(e["role"] == "user" and "customers" in e["text"].lower() for e in entries), entries
    answer = [e for e in entries if e["role"] == "agent" and e.get("done") and e["generation"] > 0][0]
    assert "40" in answer["text"]
    assert 0 < answer["timings_ms"]["first_frame_sent"] < 10_000, answer["timings_ms"]
    heard = spoken(judge, peer.audio_since(t0))
    assert "40" in heard or "forty" in heard.lower(), heard


def test_realtime_words_said_during_the_greeting_get_their_own_turn_in_order(engine, background_loop, realtime_server,
                                                                            speak):
    """One bubble per turn, in order: the greeting, then what the user said over it, then the reply."""
    engine.settings.forge_realtime_url = realtime_server
    session = LivePageController(engine, background_loop, "friendly_guide", backend="realtime", silence_ms=500)
    session.start()
    peer = Peer(session)
    peer.start()
    try:
        wait_for(lambda: session.state == "speaking", 30, "the greeting")
        peer.speak(say(speak, "How many customers are there?"))  # over the greeting
        wait_for(lambda: any(e["role"] == "agent" and e.get("done") and "40" in e["text"]
                             for e in session.transcript()), 60, "the answer")
        wait_for(lambda: session.transport.queued_ms == 0, 30, "the answer's end")
    finally:
        peer.running = False
        peer.join(5)
        session.stop()
    entries = [e for e in session.transcript() if e["role"] == "agent" or not e.get("partial")]
    roles = [e["role"] for e in entries]
    assert roles == ["agent", "user", "agent"], entries
    greeting, words, answer = entries
    assert "customers" in words["text"].lower(), entries  # the words said over the greeting are kept
    assert "40" not in greeting["text"] and "40" in answer["text"], entries  # two bubbles, not one
