"""Audio in the formats browsers and phones produce: WAV, MP3, OGG/Opus, WebM, M4A, FLAC.

WAV is read by :func:`voiceforge.audio.codecs.unwrap_wav`; everything else by ffmpeg (Debian's
``ffmpeg`` package), in two steps:

1. ``ffprobe`` reads the container's header, and a file is refused before any sample is decoded
   when it has more than :data:`MAX_CHANNELS` channels, a rate over :data:`MAX_RATE` Hz, samples
   wider than :data:`MAX_BITS` bits, or a duration over the turn limit. A 37 KB FLAC of 7.1
   channels at 192 kHz took 33 s and 1.2 GB to decode whole; it is now refused from its header.
2. ``ffmpeg`` decodes straight to PCM16 mono at the file's own rate, stops after the turn limit
   plus a second, and its output is read up to the bytes that length can hold (a header that
   lies about its duration cannot make it write more).

The container is recognised from its first bytes, not from a file name. All functions are
blocking (ffmpeg is a subprocess): async callers run them in a worker thread.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from voiceforge.audio.codecs import (
    WAV_RATES,
    AudioFormatError,
    AudioTooLongError,
    UnsupportedAudioError,
    unwrap_wav,
)

FORMATS = ("WAV", "MP3", "OGG/Opus", "WebM", "M4A", "FLAC")
"""What :func:`decode_audio` reads."""
MAX_CHANNELS = 2
MAX_RATE = 48_000
"""Hz; a phone, a browser and a device record at 8 to 48 kHz."""
MAX_BITS = 32
FFMPEG_TIMEOUT_S = 30
"""A decode that takes longer is stopped (and the file refused as damaged)."""


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
    with tempfile.TemporaryDirectory(prefix="forge-decode-") as folder:
        path = Path(folder) / f"upload.{kind}"  # a file, not a pipe: an M4A keeps its index at the end
        path.write_bytes(data)
        stream = probe(path, kind)
        _check(stream, kind, max_seconds)
        rate = min(max(int(stream["sample_rate"]), WAV_RATES[0]), WAV_RATES[1])
        pcm = _decode(path, kind, rate, max_seconds)
    if max_seconds is not None and len(pcm) / 2 / rate > max_seconds:
        raise AudioTooLongError(f"the audio lasts over {max_seconds:g} s, the limit for a turn")
    if not pcm:
        raise AudioFormatError(f"the {kind.upper()} file holds no audio")
    return pcm, rate


def probe(path: Path, kind: str) -> dict:
    """The first audio stream of a file as ffprobe reports it (channels, sample_rate, ...), read from its header.

    Raises:
        AudioFormatError: ffprobe cannot read it, or it has no audio stream.
    """
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
        report = json.loads(done.stdout or b"{}")
    except (subprocess.TimeoutExpired, ValueError, OSError):
        raise AudioFormatError(f"the {kind.upper()} file could not be read") from None
    streams = [s for s in report.get("streams", []) if s.get("codec_type") == "audio"]
    if done.returncode != 0 or not streams:
        raise AudioFormatError(f"the {kind.upper()} file could not be decoded (no audio stream)")
    stream = dict(streams[0])
    stream.setdefault("duration", (report.get("format") or {}).get("duration"))
    return stream


_SAMPLE_BITS = {"u8": 8, "u8p": 8, "s16": 16, "s16p": 16, "s32": 32, "s32p": 32, "flt": 32, "fltp": 32,
                "s64": 64, "s64p": 64, "dbl": 64, "dblp": 64}
"""Bits of ffmpeg's sample formats (the decoder's output when the file states no bit depth)."""


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _check(stream: dict, kind: str, max_seconds: float | None) -> None:
    """Refuse a stream from its header: channels, rate, sample width, duration."""
    channels, rate = int(_number(stream.get("channels")) or 0), int(_number(stream.get("sample_rate")) or 0)
    bits = int(_number(stream.get("bits_per_raw_sample")) or _number(stream.get("bits_per_sample")) or 0) \
        or _SAMPLE_BITS.get(str(stream.get("sample_fmt")), 0)
    if not 1 <= channels <= MAX_CHANNELS:
        raise UnsupportedAudioError(f"the {kind.upper()} file has {channels} channels; mono or stereo are accepted")
    if not 1 <= rate <= MAX_RATE:
        raise UnsupportedAudioError(f"the {kind.upper()} file is sampled at {rate} Hz; at most {MAX_RATE} Hz is accepted")
    if bits > MAX_BITS:
        raise UnsupportedAudioError(f"the {kind.upper()} file has {bits}-bit samples; at most {MAX_BITS} are accepted")
    duration = _number(stream.get("duration"))
    if max_seconds is not None and duration is not None and duration > max_seconds:
        raise AudioTooLongError(f"the audio lasts {duration:.1f} s; the limit is {max_seconds:g} s a turn")


def _decode(path: Path, kind: str, rate: int, max_seconds: float | None) -> bytes:
    """PCM16 mono at ``rate`` from ffmpeg, at most the turn limit plus a second of it."""
    cap = None if max_seconds is None else max_seconds + 1
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar", str(rate),
               "-f", "s16le", "-acodec", "pcm_s16le"] + (["-t", f"{cap:g}"] if cap else []) + ["pipe:1"]
    limit = int(rate * 2 * cap) + 4096 if cap else None
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        raise UnsupportedAudioError("ffmpeg could not be started") from None
    out = bytearray()
    try:
        assert process.stdout is not None
        while chunk := process.stdout.read(1 << 16):
            out += chunk
            if limit is not None and len(out) > limit:
                break  # more than the header promised: what is over the limit is refused below
        process.wait(timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AudioFormatError(f"the {kind.upper()} file took too long to decode") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode not in (0, None) and not out:
        raise AudioFormatError(f"the {kind.upper()} file could not be decoded")
    return bytes(out[: len(out) - len(out) % 2])
