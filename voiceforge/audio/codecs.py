"""Pure audio codecs: PCM16 little-endian, G.711 μ-law, WAV containers.

All PCM here is signed 16-bit little-endian mono ("PCM16") unless a function says otherwise.
"""

from __future__ import annotations

import audioop  # built in on 3.11/3.12; `audioop-lts` provides it from 3.13
import io
import struct
import wave

import numpy as np


class AudioFormatError(ValueError):
    """Audio bytes that cannot be decoded: empty, truncated, not WAV, or an unsupported format."""


class UnsupportedAudioError(AudioFormatError):
    """A well-formed WAV in a format Forge does not take (rate, channels, sample width)."""


class AudioTooLongError(AudioFormatError):
    """Audio longer than the limit for one turn."""


WAV_RATES = (8000, 48000)
"""Sample rates (Hz) accepted from WAV files: telephone band to studio rate."""


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode G.711 μ-law (1 byte per sample) to PCM16 (2 bytes per sample), same rate.

    Twilio media streams carry μ-law at 8000 Hz, 160 bytes per 20 ms (Twilio Media Streams docs).
    """
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    """Encode PCM16 to G.711 μ-law, same rate.

    Raises:
        AudioFormatError: odd byte count (not whole 16-bit samples).
    """
    if len(pcm16) % 2:
        raise AudioFormatError(f"PCM16 needs an even byte count, got {len(pcm16)} bytes")
    return audioop.lin2ulaw(pcm16, 2)


def pcm16_to_float32(pcm16: bytes) -> np.ndarray:
    """PCM16 bytes → float32 array in [-1, 1), shape (samples,)."""
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 array in [-1, 1] → PCM16 bytes, clipped."""
    clipped = np.clip(samples, -1.0, 32767 / 32768)
    return (clipped * 32768.0).astype("<i2").tobytes()


def wrap_wav(pcm16: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap PCM16 in a RIFF/WAVE container (44-byte header)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm16)
    return buf.getvalue()


def unwrap_wav(data: bytes, max_seconds: float | None = None, strict: bool = False) -> tuple[bytes, int]:
    """Read a WAV file's audio as mono PCM16.

    The header is checked before any sample is read: the rate must be 8000–48000 Hz (a header
    that says 1 Hz would otherwise turn 4 KB into half an hour of audio after resampling).
    Integer PCM of 8, 16, 24 or 32 bits is accepted (``strict``: 16-bit only), 1 or 2
    channels (``strict``: the same; otherwise more are averaged), and stereo is mixed to mono.

    Args:
        data: the file's bytes.
        max_seconds: refuse audio longer than this (None: no limit).
        strict: the sidecar's rule for uploads: 16-bit PCM, 1 or 2 channels.

    Returns:
        (pcm16 mono bytes, sample rate in Hz).

    Raises:
        AudioFormatError: empty, not RIFF/WAVE, truncated, malformed, or with no samples.
        UnsupportedAudioError: a rate, channel count, sample width or encoding not accepted.
        AudioTooLongError: longer than ``max_seconds``.
    """
    if not data:
        raise AudioFormatError("the audio is empty (0 bytes)")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFormatError("not a WAV file (no RIFF/WAVE header)")
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            declared = wav.getnframes()
            if not WAV_RATES[0] <= rate <= WAV_RATES[1]:
                raise UnsupportedAudioError(
                    f"unsupported WAV sample rate {rate} Hz (accepted: {WAV_RATES[0]} to {WAV_RATES[1]} Hz)")
            if channels < 1 or (strict and channels > 2) or channels > 8:
                raise UnsupportedAudioError(f"unsupported WAV channel count {channels} (accepted: 1 or 2)")
            if width not in (1, 2, 3, 4) or (strict and width != 2):
                raise UnsupportedAudioError(f"unsupported WAV sample width {width * 8} bits (accepted: 16-bit PCM)")
            present = (len(data) - 44) // max(1, channels * width)
            if max_seconds is not None and min(declared, present) / rate > max_seconds:
                raise AudioTooLongError(
                    f"the audio lasts {min(declared, present) / rate:.1f} s; the limit is {max_seconds:g} s a turn")
            frames = wav.readframes(declared)
    except AudioFormatError:
        raise
    except (wave.Error, EOFError) as exc:
        message = str(exc)
        if "unknown format" in message:
            raise UnsupportedAudioError(f"unsupported WAV encoding ({message}); send 16-bit PCM") from None
        raise AudioFormatError(f"unreadable WAV: {message}") from None
    except (ValueError, OverflowError, MemoryError, RuntimeError, struct.error) as exc:
        # wave raises RuntimeError for a chunk whose size runs past the data, among others
        raise AudioFormatError(f"malformed WAV header ({type(exc).__name__})") from None
    got = len(frames) // (channels * width)
    if got == 0:
        raise AudioFormatError("the WAV file has no samples")
    if got < declared:
        raise AudioFormatError(f"truncated WAV: header says {declared} samples, file has {got}")
    frames = frames[: got * channels * width]
    if width == 1:  # 8-bit WAV is unsigned
        frames = audioop.bias(frames, 1, -128)
    if width != 2:
        frames = audioop.lin2lin(frames, width, 2)
    if channels == 2:
        frames = audioop.tomono(frames, 2, 0.5, 0.5)
    elif channels != 1:
        pcm = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1)
        frames = pcm.astype("<i2").tobytes()
    return frames, rate


def duration_ms(pcm16: bytes, sample_rate: int) -> float:
    """Duration of mono PCM16 in milliseconds."""
    return len(pcm16) / 2 / sample_rate * 1000.0
