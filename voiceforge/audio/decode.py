"""Audio in the formats browsers and phones produce: WAV, MP3, OGG/Opus, WebM, M4A, FLAC.

WAV is read by :func:`voiceforge.audio.codecs.unwrap_wav`; everything else goes through
``pydub`` and ffmpeg (Debian's ``ffmpeg`` package), decoded to PCM16 mono. The container is
recognised from its first bytes, not from a file name. ffmpeg is told to stop after the turn
limit plus a second, so a small file that claims hours of audio costs nothing; longer audio is
then refused. All functions are blocking (ffmpeg is a subprocess): async callers run them in a
worker thread.
"""

from __future__ import annotations

import io
import shutil

from voiceforge.audio.codecs import (
    WAV_RATES,
    AudioFormatError,
    AudioTooLongError,
    UnsupportedAudioError,
    unwrap_wav,
)

FORMATS = ("WAV", "MP3", "OGG/Opus", "WebM", "M4A", "FLAC")
"""What :func:`decode_audio` reads."""


def sniff(data: bytes) -> str | None:
    """The container of ``data`` from its magic bytes: wav, mp3, ogg, webm, m4a, flac, or None."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"fLaC":
        return "flac"
    return None


def ffmpeg_path() -> str | None:
    """Where ffmpeg is, or None."""
    return shutil.which("ffmpeg")


def decode_audio(data: bytes, max_seconds: float | None = None, strict: bool = False) -> tuple[bytes, int]:
    """Any supported audio file's samples as PCM16 mono.

    Args:
        data: the file's bytes.
        max_seconds: refuse audio longer than this.
        strict: for WAV, the sidecar's rule (16-bit PCM, 1 or 2 channels).

    Returns:
        (PCM16 mono, sample rate in Hz, 8000–48000).

    Raises:
        AudioFormatError: empty, or a known container ffmpeg cannot decode (a damaged file).
        UnsupportedAudioError: a format Forge does not read, or ffmpeg is not installed (the
            message names it).
        AudioTooLongError: longer than ``max_seconds``.
    """
    if not data:
        raise AudioFormatError("the audio is empty (0 bytes)")
    kind = sniff(data)
    if kind == "wav":
        return unwrap_wav(data, max_seconds=max_seconds, strict=strict)
    if kind is None:
        raise UnsupportedAudioError(f"unrecognised audio; send one of {', '.join(FORMATS)}")
    if ffmpeg_path() is None:
        raise UnsupportedAudioError(f"decoding {kind.upper()} needs ffmpeg, which is not installed "
                                    "(apt-get install ffmpeg); WAV needs nothing")
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    cap = None if max_seconds is None else max_seconds + 1
    try:
        segment = AudioSegment.from_file(io.BytesIO(data), format=None if kind == "m4a" else kind, duration=cap)
    except (CouldntDecodeError, IndexError, ValueError, OSError) as exc:
        raise AudioFormatError(f"the {kind.upper()} file could not be decoded ({type(exc).__name__})") from None
    if max_seconds is not None and segment.duration_seconds > max_seconds:
        raise AudioTooLongError(f"the audio lasts over {max_seconds:g} s, the limit for a turn")
    if len(segment) == 0:
        raise AudioFormatError(f"the {kind.upper()} file holds no audio")
    rate = min(max(segment.frame_rate, WAV_RATES[0]), WAV_RATES[1])
    segment = segment.set_channels(1).set_sample_width(2).set_frame_rate(rate)
    return segment.raw_data, rate
