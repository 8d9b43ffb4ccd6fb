"""Codecs, framing, stream resampling and the turn detector: pure, no models."""

import math
import struct

import numpy as np
import pytest

from voiceforge.audio import (
    AudioFormatError,
    FrameBuffer,
    SpeechDetector,
    StreamResampler,
    VadEvent,
    VadState,
    frame_bytes,
    pcm16_to_ulaw,
    resample,
    ulaw_to_pcm16,
    unwrap_wav,
    wrap_wav,
)

pytestmark = pytest.mark.unit


def sine(freq: float, ms: int, rate: int, amp: float = 0.5) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * math.pi * freq * t) * amp * 32767).astype("<i2").tobytes()


def test_ulaw_round_trip_keeps_the_signal():
    pcm = sine(440, 100, 8000)
    ulaw = pcm16_to_ulaw(pcm)
    assert len(ulaw) == len(pcm) // 2  # one byte per sample
    back = np.frombuffer(ulaw_to_pcm16(ulaw), "<i2").astype(float)
    orig = np.frombuffer(pcm, "<i2").astype(float)
    snr = 10 * np.log10(np.sum(orig**2) / np.sum((orig - back) ** 2))
    assert snr > 30  # G.711 μ-law gives about 38 dB on a loud tone


def test_ulaw_silence_is_0xff():
    assert pcm16_to_ulaw(b"\x00\x00" * 4) == b"\xff" * 4


def test_odd_pcm_is_rejected():
    with pytest.raises(AudioFormatError):
        pcm16_to_ulaw(b"\x00\x01\x02")


def test_wav_round_trip():
    pcm = sine(300, 50, 16000)
    assert unwrap_wav(wrap_wav(pcm, 16000)) == (pcm, 16000)


def test_stereo_and_8bit_wav_become_mono_pcm16():
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<4h", 1000, 3000, -2000, -4000))
    pcm, rate = unwrap_wav(buf.getvalue())
    assert rate == 8000 and struct.unpack("<2h", pcm) == (2000, -3000)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128, 255, 0]))
    pcm, _ = unwrap_wav(buf.getvalue())
    assert struct.unpack("<3h", pcm)[0] == 0 and struct.unpack("<3h", pcm)[1] > 30000


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"ID3\x04\x00" + b"\x00" * 100, "not a WAV"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unreadable"),
    ],
)
def test_bad_wav_raises_a_clear_error(data, message):
    with pytest.raises(AudioFormatError, match=message):
        unwrap_wav(data)


def test_truncated_wav_is_detected():
    wav = wrap_wav(sine(300, 200, 16000), 16000)
    with pytest.raises(AudioFormatError, match="truncated"):
        unwrap_wav(wav[: len(wav) // 2])


def test_header_only_wav_has_no_samples():
    with pytest.raises(AudioFormatError, match="no samples"):
        unwrap_wav(wrap_wav(b"", 16000))


def test_frame_sizes():
    assert frame_bytes(8000, 20, 1) == 160  # Twilio μ-law frame
    assert frame_bytes(16000, 20) == 640


@pytest.mark.parametrize("chunk", [1, 7, 159, 160, 161, 1000])
def test_frame_buffer_yields_exact_frames(chunk):
    data = bytes(range(256)) * 10
    buf = FrameBuffer(160)
    frames = []
    for i in range(0, len(data), chunk):
        frames += buf.push(data[i : i + chunk])
    frames += buf.flush()
    assert all(len(f) == 160 for f in frames)
    assert b"".join(frames)[: len(data)] == data
    assert b"".join(frames)[len(data) :] == b"\x00" * (len(frames) * 160 - len(data))


def test_frame_buffer_clear_drops_the_partial_frame():
    buf = FrameBuffer(4)
    assert buf.push(b"abcdef") == [b"abcd"]
    buf.clear()
    assert buf.flush() == []


@pytest.mark.parametrize("in_rate, out_rate", [(8000, 16000), (16000, 8000), (22050, 8000), (24000, 16000)])
@pytest.mark.parametrize("chunk_ms", [10, 20, 37, 100])
def test_stream_resampling_equals_one_shot(in_rate, out_rate, chunk_ms):
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(in_rate // 2) * 3000).astype("<i2").tobytes()  # 0.5 s of noise
    one_shot = np.frombuffer(resample(pcm, in_rate, out_rate), "<i2").astype(int)
    stream = StreamResampler(in_rate, out_rate)
    step = in_rate * chunk_ms // 1000 * 2
    out = b"".join(stream.process(pcm[i : i + step]) for i in range(0, len(pcm), step)) + stream.flush()
    streamed = np.frombuffer(out, "<i2").astype(int)
    assert abs(len(streamed) - len(one_shot)) <= 1
    n = min(len(streamed), len(one_shot))
    assert np.max(np.abs(streamed[:n] - one_shot[:n])) <= 4  # int16 rounding in the filter: under -78 dBFS


def test_a_low_latency_stream_releases_live_phone_audio_within_30_ms():
    # An 8 kHz phone line in 20 ms chunks, up to the loop's 16 kHz, as the conversation loop gets it.
    t = np.arange(8000) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    step = 320
    for low_latency in (True, False):
        stream, fed, out, held = StreamResampler(8000, 16000, low_latency=low_latency), 0, 0, []
        for i in range(0, len(pcm), step):
            fed += step // 2
            out += len(stream.process(pcm[i : i + step])) // 2
            held.append(fed / 8 - out / 16)  # ms of input not yet out
        if low_latency:
            assert max(held) <= 30.5, held  # a steady 30 ms
        else:
            assert max(held) > 90, held  # soxr's block engine: up to ~110 ms
    low = StreamResampler(8000, 16000, low_latency=True)
    streamed = b"".join(low.process(pcm[i : i + step]) for i in range(0, len(pcm), step)) + low.flush()
    reference = np.frombuffer(resample(pcm, 8000, 16000), "<i2").astype(float)
    got = np.frombuffer(streamed, "<i2").astype(float)
    n = min(len(got), len(reference))
    assert 10 * np.log10(np.sum(reference[:n] ** 2) / np.sum((reference[:n] - got[:n]) ** 2)) > 40  # same audio


def test_same_rate_passes_through():
    assert StreamResampler(16000, 16000).process(b"\x01\x02") == b"\x01\x02"
    assert resample(b"\x01\x02", 8000, 8000) == b"\x01\x02"


def run(detector, confidences, frame_ms=20):
    return [(i, e) for i, c in enumerate(confidences) if (e := detector.process(c, frame_ms))]


def test_turn_detector_needs_sustained_speech_to_start():
    d = SpeechDetector(start_ms=60, stop_ms=100)
    assert run(d, [1, 1, 0, 1, 0]) == []  # 40 ms bursts are not speech
    assert d.state is VadState.QUIET
    assert run(d, [1, 1, 1]) == [(2, VadEvent.SPEECH_START)]
    assert d.state is VadState.SPEAKING


def test_turn_detector_ends_after_configured_silence_and_survives_short_pauses():
    d = SpeechDetector(start_ms=40, stop_ms=100)
    events = run(d, [1, 1] + [1, 0, 0, 0, 1] + [0] * 5)
    assert events == [(1, VadEvent.SPEECH_START), (11, VadEvent.SPEECH_END)]
    assert d.end_reason == "silence" and d.state is VadState.QUIET


def test_turn_detector_caps_utterance_length():
    d = SpeechDetector(start_ms=20, stop_ms=500, max_utterance_ms=200)
    events = run(d, [1] * 20)
    assert events[0] == (0, VadEvent.SPEECH_START)
    assert events[1][1] is VadEvent.SPEECH_END and d.end_reason == "max_length"
    assert events[1][0] == 9  # 10 frames of 20 ms


def test_turn_detector_threshold():
    d = SpeechDetector(threshold=0.7, start_ms=20, stop_ms=20)
    assert run(d, [0.6, 0.69]) == []
    assert run(d, [0.8, 0.1]) == [(0, VadEvent.SPEECH_START), (1, VadEvent.SPEECH_END)]


def test_smart_turn_features_are_pipecats():
    """Forge feeds Smart Turn faster-whisper's log-mel features; they must be the ones Pipecat
    (which trained and ships the model) computes."""
    import importlib.metadata
    import importlib.util

    from faster_whisper.feature_extractor import FeatureExtractor

    source = importlib.metadata.distribution("pipecat-ai").locate_file(
        "pipecat/audio/turn/smart_turn/_whisper_features.py")
    spec = importlib.util.spec_from_file_location("pipecat_whisper_features", str(source))
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    audio = np.random.default_rng(1).normal(0, 0.1, 16000 * 8).astype(np.float32)
    expected = reference.compute_whisper_log_mel_features(audio, do_normalize=True)
    normalized = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    ours = FeatureExtractor(feature_size=80)(normalized, padding=0)[:, :800]
    assert ours.shape == expected.shape == (80, 800)
    assert np.abs(ours - expected).max() < 1e-5


def test_the_words_say_when_a_turn_cannot_be_over():
    from voiceforge.conversation.end_of_turn import decide, text_complete

    for unfinished in ("My customer number is", "I'd like to book an appointment for", "Um", "my order, the",
                       "I need to change my..."):
        assert not text_complete(unfinished), unfinished
    for finished in ("My customer number is twelve.", "Thank you.", "Yes I do", "no", "I think so", ""):
        assert text_complete(finished), finished
    assert decide(0.98, "My customer number is").complete is False  # the words overrule the sound
    assert decide(0.2, "Where is my order?").complete is False  # the sound says not yet
    assert decide(0.9, "Where is my order?").complete is True
    assert decide(None, "Where is my order?").complete is True  # no model: the words alone
    assert decide(0.99, "").complete is False  # no words yet (a fragment Whisper cannot read): wait


def test_backchannels_and_real_words_over_the_agent():
    from voiceforge.conversation.interruptions import is_backchannel

    for listener in ("uh-huh", "Okay, right.", "Mm-hmm.", "M. M.", "[cough]", "", "oh I see"):
        assert is_backchannel(listener), listener
    for turn in ("Wait, stop.", "No.", "Yes.", "Hold on, I have a question.", "okay okay okay okay"):
        assert not is_backchannel(turn), turn
