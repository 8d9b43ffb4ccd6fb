"""Voice activity: a webrtcvad confidence source and a hysteresis turn detector.

The detector is pure (scripted confidences in, events out) so it is unit-tested without a
model; :class:`UtteranceSegmenter` joins the two over real PCM16 frames.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import webrtcvad


class VadState(enum.Enum):
    """Hysteresis states: QUIET → STARTING → SPEAKING → STOPPING → QUIET."""

    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


class VadEvent(enum.Enum):
    """What the detector reports: speech start (barge-in) and speech end (an utterance)."""

    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


class WebRtcVad:
    """webrtcvad as a confidence source: 1.0 for a speech frame, 0.0 otherwise.

    Args:
        sample_rate: 8000, 16000, 32000 or 48000 Hz (webrtcvad's rates).
        aggressiveness: 0 (least) to 3 (most aggressive at calling audio non-speech).

    Raises:
        ValueError: an unsupported rate, or a frame that is not 10, 20 or 30 ms.
    """

    def __init__(self, sample_rate: int = 16000, aggressiveness: int = 2) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad supports 8/16/32/48 kHz, not {sample_rate} Hz")
        self.sample_rate, self.aggressiveness = sample_rate, aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def confidence(self, frame: bytes) -> float:
        """Speech confidence of one PCM16 frame of 10, 20 or 30 ms."""
        ms = len(frame) // 2 * 1000 // self.sample_rate
        if ms not in (10, 20, 30) or len(frame) % 2:
            raise ValueError(f"webrtcvad frames are 10, 20 or 30 ms; got {len(frame)} bytes")
        return 1.0 if self._vad.is_speech(frame, self.sample_rate) else 0.0


class SileroVad:
    """Silero VAD (v6, faster-whisper's ONNX file) as a streaming confidence source, per call.

    The model reads 32 ms windows (512 samples at 16 kHz, with 64 samples of context) and
    carries its recurrent state from one to the next; frames of any length are buffered into
    windows, and :meth:`confidence` returns the probability of the latest window (so a decision
    lags the audio by at most 32 ms). Unlike webrtcvad it gives a recording's quiet tail, a
    steady background and a noise burst a low probability (see ``bench/turn_taking.py``).
    About 0.2 ms a window on one thread here.

    Args:
        sample_rate: 16000 Hz only (the rate the model takes).

    Raises:
        ValueError: another rate.
    """

    RATE = 16000
    WINDOW = 512
    CONTEXT = 64

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate != 16000:
            raise ValueError(f"Silero VAD takes 16 kHz, not {sample_rate} Hz")
        from faster_whisper.vad import get_vad_model

        self.sample_rate = sample_rate
        self._session = get_vad_model().session  # shared, one process-wide ONNX session
        self.reset()

    def reset(self) -> None:
        """Forget the state (a new stream)."""
        import numpy as np

        self._h = np.zeros((1, 1, 128), dtype="float32")
        self._c = np.zeros((1, 1, 128), dtype="float32")
        self._context = np.zeros(self.CONTEXT, dtype="float32")
        self._pending = np.zeros(0, dtype="float32")
        self._probability = 0.0

    def confidence(self, frame: bytes) -> float:
        """Speech probability (0–1) of the latest full window, after adding this PCM16 frame."""
        import numpy as np

        samples = np.frombuffer(frame, "<i2").astype(np.float32) / 32768
        self._pending = np.concatenate([self._pending, samples])
        while len(self._pending) >= self.WINDOW:
            window, self._pending = self._pending[: self.WINDOW], self._pending[self.WINDOW:]
            batch = np.concatenate([self._context, window])[np.newaxis]
            out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
            self._context = window[-self.CONTEXT:]
            self._probability = float(np.asarray(out).reshape(-1)[0])
        return self._probability


class SileroSpeech:
    """How much of a clip is speech, by Silero VAD (v6, the ONNX model faster-whisper ships).

    webrtcvad calls any loud broadband sound speech (a 150 ms noise burst reads as about
    280 ms of speech through its hangover); Silero, a neural speech model, gives coughs,
    clicks and noise bursts no speech at all. It runs in 1–6 ms on a second of audio here
    (2 cores), so the loop asks it only to confirm an interruption webrtcvad already heard.
    """

    RATE = 16000
    """The rate the model takes (Hz)."""

    def __init__(self, threshold: float = 0.5) -> None:
        from faster_whisper.vad import VadOptions, get_vad_model

        self._options = VadOptions(threshold=threshold, min_speech_duration_ms=0, min_silence_duration_ms=100,
                                   speech_pad_ms=0)
        get_vad_model()  # load it now (once per process), not inside a call

    def speech_ms(self, pcm16: bytes) -> int:
        """Milliseconds of speech in ``pcm16`` (PCM16 mono at 16 kHz)."""
        import numpy as np
        from faster_whisper.vad import get_speech_timestamps

        audio = np.frombuffer(pcm16, "<i2").astype(np.float32) / 32768
        if len(audio) < self.RATE // 10:
            return 0
        spans = get_speech_timestamps(audio, self._options, sampling_rate=self.RATE)
        return sum(s["end"] - s["start"] for s in spans) * 1000 // self.RATE


@dataclass
class SpeechDetector:
    """Hysteresis over per-frame speech confidence.

    Speech starts after ``start_ms`` of consecutive frames at or above ``threshold`` and ends
    after ``stop_ms`` of frames below it (endpointing), or when an utterance reaches
    ``max_utterance_ms``. Times are summed frame durations, not wall clock.
    """

    threshold: float = 0.5
    start_ms: int = 60
    stop_ms: int = 600
    max_utterance_ms: int = 30_000

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to QUIET with no history."""
        self.state = VadState.QUIET
        self._run_ms = 0  # consecutive ms in the current candidate transition
        self.utterance_ms = 0
        self.end_reason: str | None = None

    def process(self, confidence: float, frame_ms: int = 20) -> VadEvent | None:
        """Feed one frame's confidence; return an event when the state machine emits one."""
        speech = confidence >= self.threshold
        state = self.state
        if state in (VadState.SPEAKING, VadState.STOPPING):
            self.utterance_ms += frame_ms
        if state is VadState.QUIET:
            if speech:
                self.state, self._run_ms = VadState.STARTING, frame_ms
                if self._run_ms >= self.start_ms:
                    return self._start()
        elif state is VadState.STARTING:
            if not speech:
                self.state, self._run_ms = VadState.QUIET, 0
            else:
                self._run_ms += frame_ms
                if self._run_ms >= self.start_ms:
                    return self._start()
        elif state is VadState.SPEAKING:
            if not speech:
                self.state, self._run_ms = VadState.STOPPING, frame_ms
                if self._run_ms >= self.stop_ms:
                    return self._end("silence")
        elif state is VadState.STOPPING:
            if speech:
                self.state, self._run_ms = VadState.SPEAKING, 0
            else:
                self._run_ms += frame_ms
                if self._run_ms >= self.stop_ms:
                    return self._end("silence")
        if self.state in (VadState.SPEAKING, VadState.STOPPING) and (
            self.utterance_ms >= self.max_utterance_ms
        ):
            return self._end("max_length")
        return None

    @property
    def silence_ms(self) -> int:
        """How long the speaker has been quiet inside an utterance (STOPPING), else 0 (ms)."""
        return self._run_ms if self.state is VadState.STOPPING else 0

    def _start(self) -> VadEvent:
        self.state, self._run_ms = VadState.SPEAKING, 0
        self.utterance_ms = self.start_ms
        self.end_reason = None
        return VadEvent.SPEECH_START

    def _end(self, reason: str) -> VadEvent:
        self.state, self._run_ms = VadState.QUIET, 0
        self.end_reason = reason
        return VadEvent.SPEECH_END


class UtteranceSegmenter:
    """Cut a PCM16 stream into utterances with VAD + turn detection.

    Feed exact frames (``frame_ms`` of PCM16 at ``sample_rate``); ``push`` returns
    ``(event, utterance)`` pairs, where ``utterance`` is the PCM16 of a finished utterance
    (with ``preroll_ms`` of audio before the detected start) on SPEECH_END, else None.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        detector: SpeechDetector | None = None,
        vad: WebRtcVad | None = None,
        preroll_ms: int = 200,
    ) -> None:
        self.sample_rate, self.frame_ms = sample_rate, frame_ms
        self.detector = detector or SpeechDetector()
        self.vad = vad or WebRtcVad(sample_rate)
        self._preroll: deque[bytes] = deque(maxlen=max(1, preroll_ms // frame_ms))
        self._speech = bytearray()

    def push(self, frame: bytes) -> tuple[VadEvent, bytes | None] | None:
        """Process one frame; return (event, utterance-or-None) when an event fires."""
        event = self.detector.process(self.vad.confidence(frame), self.frame_ms)
        if self.detector.state in (VadState.SPEAKING, VadState.STOPPING) or event:
            if event is VadEvent.SPEECH_START:
                self._speech = bytearray(b"".join(self._preroll))
            self._speech += frame
        else:
            self._preroll.append(frame)
        if event is VadEvent.SPEECH_END:
            utterance = bytes(self._speech)
            self._speech = bytearray()
            self._preroll.clear()
            return event, utterance
        if event is VadEvent.SPEECH_START:
            return event, None
        return None

    def end_now(self) -> bytes:
        """End the utterance in progress now (an end-of-turn model decided); its PCM16, or b"" outside one."""
        if not self.speaking:
            return b""
        utterance = bytes(self._speech)
        self.detector.reset()
        self._speech = bytearray()
        self._preroll.clear()
        return utterance

    def audio_so_far(self) -> bytes:
        """The PCM16 of the utterance in progress (preroll included); b"" outside one."""
        return bytes(self._speech) if self.speaking else b""

    def clear(self) -> None:
        """Drop the utterance in progress and the audio before it (back to quiet, no event)."""
        self.detector.reset()
        self._speech = bytearray()
        self._preroll.clear()

    def set_preroll(self, preroll_ms: int) -> None:
        """Keep ``preroll_ms`` of audio from before each detected start (from the next utterance)."""
        self._preroll = deque(self._preroll, maxlen=max(1, preroll_ms // self.frame_ms))

    @property
    def speaking(self) -> bool:
        """True between SPEECH_START and SPEECH_END."""
        return self.detector.state in (VadState.SPEAKING, VadState.STOPPING)
