"""Speculative transcription on real speech: Piper clips, the real VAD, Whisper and the offline brain.

The loop transcribes the utterance so far after 200 ms of silence. A speaker who stays quiet
until the 500 ms endpoint is answered from that transcript; one who goes on after the pause is
answered on the whole utterance, never on the part before the pause.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.support.fakes import RecordingTransport
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.store import conversations, mockdata
from voiceforge.store.db import Database
from voiceforge.transport import AudioIn, MarkPlayed

pytestmark = pytest.mark.integration
RATE = 16000


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (RATE * ms // 1000)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speculative")
    db = Database(f"sqlite:///{folder / 'forge.db'}")
    db.migrate()
    mockdata.generate(db, 12, seed=3)
    engine = Engine(load_settings(forge_data_dir=folder, forge_speculative_stt_ms=200), db=db)
    engine.warm_up()
    return engine


async def converse(engine: Engine, audio: bytes) -> ConversationLoop:
    """Feed ``audio`` to a loop in real time (20 ms chunks) and wait for its turns to finish."""
    transport = RecordingTransport(RATE)
    loop = ConversationLoop(engine.pipeline("customer_service", channel="phone"), transport,
                            endpointing_ms=500, greet=False, name="speculative",
                            turn_detector="silence")
    transport.echo = lambda name: loop.handle(MarkPlayed(name))
    inbox: asyncio.Queue = asyncio.Queue()

    async def source():  # noqa: ANN202
        while (event := await inbox.get()) is not None:
            yield event

    task = asyncio.create_task(loop.run(source()))
    for i in range(0, len(audio), 640):
        await inbox.put(AudioIn(audio[i : i + 640], RATE))
        await asyncio.sleep(0.02)
    for _ in range(300):  # the answer is transcribed, thought, spoken and stored
        if loop.turns_stored and not loop.turns.live:
            break
        await asyncio.sleep(0.05)
    await inbox.put(None)
    await asyncio.wait_for(task, 30)
    return loop


def speech(speak, text: str) -> bytes:
    """Piper's clip at 16 kHz without its trailing quiet (about 170 ms), so pauses are the test's own."""
    pcm, rate = speak(text)
    samples = np.frombuffer(resample(pcm, rate, RATE), "<i2")
    end = int(np.nonzero(np.abs(samples) > 300)[0][-1]) + 1
    return samples[:end].tobytes()


async def test_a_pause_then_more_words_is_answered_on_the_whole_utterance(engine, speak):
    # A 300 ms pause: past the 200 ms speculation point, short of the 500 ms endpoint.
    audio = speech(speak, "Please cancel") + silence(300) + speech(speak, "appointment number five.") + silence(1500)
    loop = await converse(engine, audio)
    assert loop.listener.speculations["dropped"] >= 1  # the transcript of "Please cancel" was never used
    assert loop.turns_stored == 1
    [turn] = conversations.turns_of(engine.db, loop.pipeline.conversation_id)
    assert "five" in turn["user_text"].lower() or "5" in turn["user_text"], turn
    # The whole utterance was understood: the cancellation of appointment 5 is asked to be confirmed.
    assert turn["assistant_text"] == "Just to confirm, shall I cancel an appointment: appointment 5?", turn
    assert turn["tool_calls"] == []


async def test_a_speaker_who_stays_quiet_is_answered_from_the_speculative_transcript(engine, speak):
    loop = await converse(engine, speech(speak, "How many customers are there?") + silence(1500))
    assert loop.listener.speculations == {"used": 1, "dropped": 0}
    [turn] = conversations.turns_of(engine.db, loop.pipeline.conversation_id)
    assert turn["assistant_text"] == "The answer is 12."
    assert turn["timings_ms"]["stt_speculative"] == 1
    # STT began 300 ms before the endpoint, so it ended sooner after it than a full transcription takes.
    assert turn["timings_ms"]["stt_final"] - turn["timings_ms"]["endpointing_ms"] < turn["timings_ms"]["stt_ms"]
