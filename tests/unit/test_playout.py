"""The one playout over a far end that plays on the wall clock and echoes marks when it gets to them.

No model and no socket: the far end is the tests' RecordingTransport (it drops queued audio and
marks on a clear, as Twilio does), the audio is tones, and what is checked is what a caller hears.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from tests.support.fakes import RecordingTransport
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voiceforge.conversation import Played, Playout

pytestmark = pytest.mark.unit


def tone(ms: int, rate: int = 16000, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * math.pi * hz * t) * 8000).astype("<i2").tobytes()


class UlawWire(RecordingTransport):
    """A Twilio-like far end: μ-law frames of 160 bytes at 8 kHz."""

    output_encoding = "ulaw"

    async def send_audio(self, frame: bytes, sample_rate: int) -> None:
        assert sample_rate == 8000 and len(frame) == 160
        self.frames.append((time.perf_counter(), frame))
        self._queue.append(("audio", frame * 2))  # two bytes a sample, for its play time
        self._ensure_player()


def wired(transport: RecordingTransport, **kwargs) -> tuple[Playout, list[Played]]:
    played: list[Played] = []
    playout = Playout(transport, on_played=played.append, **kwargs)
    transport.echo = lambda name: _echo(playout, name)
    return playout, played


async def _echo(playout: Playout, name: str) -> None:
    playout.played(name)


async def until(condition, limit_s: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_segment_is_resampled_framed_paced_and_heard_whole():
    wire = RecordingTransport(8000)
    playout, played = wired(wire)
    started = time.perf_counter()
    await playout.write("1:0", tone(300, 24000), 24000)
    await playout.end("1:0")
    await until(lambda: played and played[-1].complete)
    # 300 ms at 8 kHz is 15 frames of 20 ms; pacing keeps the last no more than 80 ms ahead of real time
    assert len(wire.frames) == 15 and all(len(f) == 320 for _, f in wire.frames)
    assert wire.frames[-1][0] - started >= 0.28 - 0.08 - 0.02
    assert played[-1] == Played("1:0", 300, True) and wire.marks_sent == ["1:0"]


async def test_mu_law_wires_get_mu_law_and_a_mu_law_source_passes_through_untouched():
    wire = UlawWire(8000)
    playout, played = wired(wire)
    source = pcm16_to_ulaw(tone(100, 8000))
    await playout.write_ulaw("item", source)
    await playout.end("item")
    assert b"".join(f for _, f in wire.frames) == source  # not a bit changed
    pcm_wire = RecordingTransport(16000)
    other, _ = wired(pcm_wire)
    await other.write_ulaw("item", source)
    await other.end("item")
    assert len(pcm_wire.frames) == 5 and len(pcm_wire.frames[0][1]) == 640  # decoded and resampled
    decoded = np.frombuffer(ulaw_to_pcm16(wire.frames[0][1]), "<i2")
    assert np.abs(decoded).max() > 4000


async def test_a_clear_stops_the_audio_and_the_flushed_marks_count_for_nothing():
    wire = RecordingTransport(16000)
    playout, played = wired(wire, mark_every_ms=100)
    writer = asyncio.create_task(playout.write("1:0", tone(2000), 16000))
    await until(lambda: any(p.heard_ms >= 300 for p in played))
    heard = await playout.clear()
    await asyncio.wait_for(writer, 1)  # the writer returns at once: its segment is gone
    sent = len(wire.frames)
    assert 300 <= heard["1:0"] <= 600 and sent * 20 < 1000  # cut within a few frames of what was heard
    await playout.write("1:0", tone(200), 16000)  # a cleared segment takes no more audio
    await playout.end("1:0")
    await asyncio.sleep(0.1)
    assert len(wire.frames) == sent and not any(p.complete for p in played)


async def test_pause_then_resume_plays_on_from_the_point_that_was_heard():
    wire = RecordingTransport(16000)
    playout, played = wired(wire, mark_every_ms=100)
    audio = tone(1200, hz=300) + tone(800, hz=700)  # two halves the far end can tell apart
    writer = asyncio.create_task(playout.write("1:0", audio, 16000))
    await until(lambda: any(p.heard_ms >= 400 for p in played))
    await playout.pause()
    heard_at_pause = playout.heard_ms("1:0")
    frames_at_pause = len(wire.frames)
    await asyncio.sleep(0.3)
    assert len(wire.frames) == frames_at_pause and playout.paused  # silence while paused
    await playout.resume()
    await asyncio.wait_for(writer, 5)
    await playout.end("1:0")
    await until(lambda: played and played[-1].complete)
    # what was sent after the pause starts where the far end had confirmed, not where sending had got to
    resent = b"".join(f for _, f in wire.frames[frames_at_pause:])
    assert resent[: 640] == audio[heard_at_pause * 32 : heard_at_pause * 32 + 640]
    assert played[-1] == Played("1:0", 2000, True)


async def test_a_wire_that_cannot_confirm_playback_counts_a_mark_as_played_when_sent():
    wire = RecordingTransport(16000)
    wire.confirms_playback = False
    played: list[Played] = []
    playout = Playout(wire, on_played=played.append)
    await playout.end("1:0")  # a sentence with no audio (its TTS failed) is still settled
    assert played == [Played("1:0", 0, True)]
