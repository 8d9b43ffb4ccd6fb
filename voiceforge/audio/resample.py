"""Sample-rate conversion with soxr, one stateful stream per direction per call."""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Resample PCM16 mono chunk by chunk, carrying filter state between chunks.

    Streaming output equals one-shot output (up to the filter's edge samples) whatever the
    chunk sizes, which a property test checks. Same-rate streams pass audio through untouched.

    Args:
        in_rate: input sample rate, Hz.
        out_rate: output sample rate, Hz.
        quality: soxr quality ("HQ" default; "QQ" is cheapest, "VHQ" best).
        low_latency: use soxr's variable-rate engine (``vr=True``), for live input that is
            upsampled. soxr's default engine releases output in blocks: fed 20 ms chunks from 8
            to 16 kHz, it held back 0–114 ms (63 ms on average), so the VAD heard a caller stop
            up to 0.1 s late. The variable-rate engine holds back a steady 30 ms; on speech its
            output is 47 dB SNR against a VHQ one-shot reference (71 for the default engine),
            above G.711's own ~38 dB. Not for downsampling: from 48 to 16 kHz it let white noise
            alias (2 dB SNR against the reference), and the default engine holds back under
            40 ms there anyway.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ", low_latency: bool = False) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality, vr=low_latency)
        )

    def process(self, pcm16: bytes, last: bool = False) -> bytes:
        """Resample one chunk of PCM16; ``last=True`` flushes the filter's tail."""
        if self._stream is None:
            return pcm16
        samples = np.frombuffer(pcm16, dtype="<i2")
        return self._stream.resample_chunk(samples, last=last).astype("<i2").tobytes()

    def flush(self) -> bytes:
        """Return the samples still held in the filter and end the stream."""
        return self.process(b"", last=True)


def resample(pcm16: bytes, in_rate: int, out_rate: int, quality: str = "HQ") -> bytes:
    """One-shot PCM16 mono resampling (soxr), same-rate passthrough."""
    if in_rate == out_rate or not pcm16:
        return pcm16
    samples = np.frombuffer(pcm16, dtype="<i2")
    return soxr.resample(samples, in_rate, out_rate, quality=quality).astype("<i2").tobytes()
