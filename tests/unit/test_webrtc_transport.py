"""The WebRTC transport's two sides without a peer: av frames in, the playout buffer, marks, clear."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest

from server.transports.webrtc import WebRtcTransport, frame_to_pcm16, level_dbfs
from voiceforge.transport import AudioIn, MarkPlayed

pytestmark = pytest.mark.unit
TB = fractions.Fraction(1, 48000)


def tone(n: int, amplitude: int = 8000) -> np.ndarray:
    return (amplitude * np.sin(np.arange(n) * 2 * np.pi * 440 / 48000)).astype(np.int16)


def test_stereo_packed_planar_and_float_frames_become_the_same_mono_pcm16():
    left = tone(960)
    packed = av.AudioFrame.from_ndarray(np.stack([left, left], axis=1).reshape(1, -1), format="s16", layout="stereo")
    planar = av.AudioFrame.from_ndarray((np.stack([left, left]) / 32768).astype(np.float32), format="fltp",
                                        layout="stereo")
    mono = av.AudioFrame.from_ndarray(left.reshape(1, -1), format="s16", layout="mono")
    expected = left.astype("<i2").tobytes()
    assert frame_to_pcm16(packed) == expected
    assert frame_to_pcm16(mono) == expected
    got = np.frombuffer(frame_to_pcm16(planar), dtype="<i2")
    assert np.max(np.abs(got.astype(int) - left)) <= 1
    assert -30 < level_dbfs(expected) < -10 and level_dbfs(b"\0\0" * 960) == -100.0


def test_playout_marks_and_clear():
    async def scenario() -> None:
        transport = WebRtcTransport(asyncio.get_running_loop())
        speech = tone(960 * 3).astype("<i2").tobytes()  # 60 ms
        await transport.send_audio(speech, 48000)
        await transport.mark("1:0")
        assert transport.inbound.empty()  # nothing played yet: no echo
        frames = [transport.next_agent_frame(i * 960, TB) for i in range(3)]
        assert b"".join(frame_to_pcm16(f) for f in frames) == speech
        await asyncio.sleep(0)  # the echo is posted thread-safely
        assert transport.inbound.get_nowait() == MarkPlayed("1:0")

        await transport.send_audio(speech, 48000)
        await transport.mark("2:0")
        transport.next_agent_frame(0, TB)
        await transport.clear()  # barge-in: the rest is dropped and its mark never echoes
        assert transport.queued_ms == 0
        after = transport.next_agent_frame(0, TB)
        assert level_dbfs(frame_to_pcm16(after)) == -100.0
        await asyncio.sleep(0)
        assert transport.inbound.empty()

        await transport.mark("3:0")  # nothing queued: played at once
        assert transport.inbound.get_nowait() == MarkPlayed("3:0")

    asyncio.run(scenario())


def test_microphone_frames_reach_the_loop_as_audio_in():
    async def scenario() -> None:
        transport = WebRtcTransport(asyncio.get_running_loop())
        samples = tone(960)
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples], axis=1).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate = 48000
        transport.on_microphone_frame(frame)
        await asyncio.sleep(0)
        event = transport.inbound.get_nowait()
        assert event == AudioIn(samples.astype("<i2").tobytes(), 48000)
        assert transport.level_db > -30

    asyncio.run(scenario())
