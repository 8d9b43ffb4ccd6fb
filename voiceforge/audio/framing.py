"""Exact fixed-size frames from arbitrary chunks, and wall-clock pacing of outbound frames."""

from __future__ import annotations

import asyncio
import time


def frame_bytes(sample_rate: int, frame_ms: int = 20, sample_width: int = 2) -> int:
    """Bytes in one frame: 20 ms of μ-law 8 kHz is 160, of PCM16 16 kHz is 640."""
    return sample_rate * frame_ms // 1000 * sample_width


class FrameBuffer:
    """Turn arbitrary byte chunks into exact frames of ``size`` bytes.

    ``push`` returns every whole frame now available and keeps the remainder; ``flush``
    returns the remainder padded with ``pad`` to a whole frame (or nothing); ``clear`` drops it.
    """

    def __init__(self, size: int, pad: bytes = b"\x00") -> None:
        if size <= 0:
            raise ValueError("frame size must be positive")
        self.size = size
        self._pad = pad
        self._buf = bytearray()

    def push(self, chunk: bytes) -> list[bytes]:
        """Append ``chunk``; return the whole frames it completes, oldest first."""
        self._buf += chunk
        whole = len(self._buf) // self.size * self.size
        frames = [bytes(self._buf[i : i + self.size]) for i in range(0, whole, self.size)]
        del self._buf[:whole]
        return frames

    def flush(self) -> list[bytes]:
        """The remainder padded to one frame, or [] when empty."""
        if not self._buf:
            return []
        frame = bytes(self._buf) + self._pad * (self.size - len(self._buf))
        self._buf.clear()
        return [frame]

    def clear(self) -> None:
        """Drop any partial frame (on barge-in)."""
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)


class Pacer:
    """Sleep so that frame ``n`` leaves no earlier than ``start + n * frame_ms``.

    Pacing to the wall clock (rather than sending as fast as TTS produces) keeps the far
    end's buffer short, so that a `clear` on barge-in really stops the audio. ``lead_ms``
    frames may be sent ahead to absorb jitter.
    """

    def __init__(self, frame_ms: int = 20, lead_ms: int = 60) -> None:
        self.frame_s = frame_ms / 1000
        self.lead_s = lead_ms / 1000
        self.reset()

    def reset(self) -> None:
        """Start a new paced run (after a clear or a pause in speech)."""
        self._start: float | None = None
        self._sent = 0

    async def wait(self) -> None:
        """Wait until the next frame may be sent."""
        now = time.monotonic()
        if self._start is None or now - (self._start + self._sent * self.frame_s) > self.frame_s:
            # First frame, or we fell behind (a pause between sentences): restart the clock.
            self._start, self._sent = now, 0
        due = self._start + self._sent * self.frame_s - self.lead_s
        if due > now:
            await asyncio.sleep(due - now)
        self._sent += 1
