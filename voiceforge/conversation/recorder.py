"""The whole conversation as audio (``ENABLE_RECORDINGS``): the caller's track, the agent's, and both mixed."""

from __future__ import annotations

from pathlib import Path

from voiceforge.audio.resample import StreamResampler


class CallRecorder:
    """The whole conversation as audio (``ENABLE_RECORDINGS``): the caller's track, the agent's, and both mixed.

    Both tracks are PCM16 mono at ``rate`` Hz. The caller's is every inbound frame in order (its
    own clock: the wire delivers it in real time). Agent audio is placed at the caller track's
    position when it was sent, or straight after the previous agent audio if that is later (a
    reply queued faster than real time plays back to back), so the mix lines up turn by turn.
    Audio a barge-in cleared from the far end's buffer is still in the agent track.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._caller = bytearray()
        self._agent = bytearray()
        self._agent_end = 0  # bytes
        self._resampler: StreamResampler | None = None

    def caller(self, frame: bytes) -> None:
        """One inbound frame (PCM16 at ``rate``)."""
        self._caller += frame

    def agent(self, frame: bytes, sample_rate: int) -> None:
        """One frame of agent audio as sent (PCM16 at ``sample_rate``)."""
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, self.rate)
        pcm = self._resampler.process(frame)
        at = max(len(self._caller), self._agent_end)
        if len(self._agent) < at:
            self._agent += bytes(at - len(self._agent))
        self._agent[at : at + len(pcm)] = pcm
        self._agent_end = at + len(pcm)

    def save(self, folder: Path) -> list[Path]:
        """Write ``call-caller.wav``, ``call-agent.wav`` and ``call-mixed.wav`` into ``folder``; returns them."""
        import numpy as np

        from voiceforge.audio.codecs import wrap_wav

        if not self._caller and not self._agent:
            return []
        folder.mkdir(parents=True, exist_ok=True)
        length = max(len(self._caller), len(self._agent))
        caller = bytes(self._caller).ljust(length, b"\0")
        agent = bytes(self._agent).ljust(length, b"\0")
        mixed = np.clip(np.frombuffer(caller, "<i2").astype(np.int32) + np.frombuffer(agent, "<i2"), -32768, 32767)
        paths = []
        for name, pcm in (("caller", caller), ("agent", agent), ("mixed", mixed.astype("<i2").tobytes())):
            path = folder / f"call-{name}.wav"
            path.write_bytes(wrap_wav(pcm, self.rate))
            paths.append(path)
        return paths
