"""The caller's side of the loop: their audio, framed and heard by the VAD, becomes speech starts and utterances.

Inbound audio at any rate → one stateful resampler → exact 20 ms frames at the analysis rate
(the STT's, when the VAD takes it) → VAD with hysteresis (:class:`voiceforge.audio.vad.UtteranceSegmenter`).
Push-to-talk wires bound the utterance with the button instead: audio between a press and its
release is held, and the release is the end of speech.

Speculative transcription: once the speaker has been quiet for ``speculate_ms`` (less than the
endpointing silence), the utterance so far is sent to STT. If they stay quiet until the
endpoint, that transcript is the utterance's (the audio after it is silence) and the endpointing
wait has overlapped with STT; if they speak again it is dropped and never answered. At most one
runs at a time.

The listener decides nothing about the agent: it reports :class:`SpeechBegan` and
:class:`UtteranceEnded`, and the loop decides what they mean for the turns in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voiceforge.audio.framing import FrameBuffer, frame_bytes
from voiceforge.audio.resample import StreamResampler
from voiceforge.audio.vad import SileroVad, SpeechDetector, UtteranceSegmenter, VadEvent, VadState, WebRtcVad
from voiceforge.conversation.end_of_turn import Verdict, decide
from voiceforge.conversation.recorder import CallRecorder

FRAME_MS = 20
"""The analysis frame (webrtcvad takes 10, 20 or 30 ms)."""


@dataclass(frozen=True)
class SpeechBegan:
    """The caller started speaking (or pressed to talk)."""


@dataclass(frozen=True)
class UtteranceEnded:
    """The caller finished an utterance.

    Attributes:
        audio: the utterance, PCM16 mono at the listener's rate (its pre-roll included).
        speculation: STT of this very audio, started in the pause before the endpoint, or None.
        verdict: how the end-of-turn model decided, or None for the silence endpoint (and for
            the model's fallback: silence up to its maximum wait).
    """

    audio: bytes
    speculation: asyncio.Task | None = None
    verdict: Verdict | None = None


Heard = SpeechBegan | UtteranceEnded


class Listener:
    """Turns a caller's audio into speech starts and utterances.

    Args:
        rate: the analysis rate (Hz): 8000, 16000, 32000 or 48000 (webrtcvad's).
        endpointing_ms: silence that ends an utterance, ms.
        max_turn_s: the longest utterance; longer speech is cut there, s.
        transcribe: STT of an utterance so far, ``(PCM16, rate) -> awaitable`` (speculation).
        speculate_ms: silence after which speculation starts (0: never), ms.
        vad: a speech-confidence source (default webrtcvad at ``rate``).
        recorder: the call's recorder (every inbound frame), or None.
        push_to_talk: utterances are bounded by :meth:`talk_start` / :meth:`talk_end`.
        turn_model: P(complete) of ``(PCM16, rate)``, blocking (Smart Turn's ``probability``);
            with it the end of turn is decided at the first pause of ``speculate_ms`` (see
            :mod:`voiceforge.conversation.end_of_turn`) and ``endpointing_ms`` becomes the
            longest wait for an unfinished turn. None: the silence endpoint.
    """

    def __init__(self, rate: int, endpointing_ms: int, max_turn_s: float,
                 transcribe: Callable[[bytes, int], Awaitable[Any]], *, speculate_ms: int = 0, vad: Any = None,
                 recorder: CallRecorder | None = None, push_to_talk: bool = False,
                 turn_model: Callable[[bytes, int], float] | None = None) -> None:
        self.rate, self.endpointing_ms = rate, endpointing_ms
        self.push_to_talk = push_to_talk
        self.turn_model = turn_model
        if turn_model is not None and not 0 < speculate_ms < endpointing_ms:
            speculate_ms = min(200, endpointing_ms // 2)  # the model needs its pause and its transcript
        self.speculate_ms = speculate_ms if speculate_ms < endpointing_ms else 0
        self._judging: asyncio.Task | None = None  # the end-of-turn verdict of the pause in progress
        self.recorder = recorder
        self._transcribe = transcribe
        detector = SpeechDetector(start_ms=60, stop_ms=endpointing_ms, max_utterance_ms=int(max_turn_s * 1000))
        self._segmenter = UtteranceSegmenter(rate, FRAME_MS, detector, vad or WebRtcVad(rate))
        if isinstance(self._segmenter.vad, SileroVad):
            detector.threshold = 0.5
        self._frames = FrameBuffer(frame_bytes(rate, FRAME_MS))
        self._inbound: StreamResampler | None = None
        self._held: bytearray | None = None  # push-to-talk audio while the button is down
        self._max_held = int(max_turn_s * rate) * 2
        self._speculation: asyncio.Task | None = None  # STT of the utterance so far, while it may still be the whole
        self._speculating: asyncio.Task | None = None  # the last one started, until it finishes (one at a time)
        self.speculations = {"used": 0, "dropped": 0}
        self.last_voiced: float | None = None
        """``time.perf_counter()`` of the last voiced frame (or the push-to-talk release)."""

    # --- audio ------------------------------------------------------------------------------------
    def hear(self, pcm16: bytes, sample_rate: int) -> list[Heard]:
        """Caller audio (PCM16 mono at ``sample_rate`` Hz, any length): what it started or ended, in order."""
        if self._inbound is None or self._inbound.in_rate != sample_rate:
            # Upsampled live (a phone line's 8 kHz): soxr's low-latency engine, so the VAD hears
            # the caller stop within 30 ms rather than up to 110 ms late.
            self._inbound = StreamResampler(sample_rate, self.rate, low_latency=sample_rate < self.rate)
        if self.push_to_talk:
            if self._held is not None and len(self._held) < self._max_held:
                self._held += self._inbound.process(pcm16)
            return []
        out: list[Heard] = []
        for frame in self._frames.push(self._inbound.process(pcm16)):
            if self.recorder is not None:
                self.recorder.caller(frame)
            if self._judging is not None and self._judging.done():
                ended = self._end_if_complete()
                if ended is not None:
                    out.append(ended)
            event = self._segmenter.push(frame)
            if self._segmenter.detector.state is VadState.SPEAKING:
                self.last_voiced = time.perf_counter()
            if event is None:
                if self.speculate_ms:
                    self._speculate()
                if self.turn_model is not None:
                    self._judge()
                continue
            kind, utterance = event
            if kind is VadEvent.SPEECH_START:
                self.last_voiced = time.perf_counter()
                out.append(SpeechBegan())
            elif utterance:
                verdict = self._settled_verdict()  # an "unfinished" verdict the silence overruled
                self._drop_judging()
                speculation, self._speculation = self._speculation, None
                out.append(UtteranceEnded(utterance, speculation, verdict))
        return out

    # --- end of turn by model -----------------------------------------------------------------------
    def _judge(self) -> None:
        """At the first pause (its speculative transcript started), ask the model.

        The verdict is dropped when the speaker goes on.
        """
        detector = self._segmenter.detector
        if detector.state is VadState.SPEAKING:
            self._drop_judging()
        elif (self._judging is None and detector.state is VadState.STOPPING
              and detector.silence_ms >= self.speculate_ms and self._speculation is not None):
            # The words are half the verdict: it waits for this pause's transcript to have started
            # (a speculation of an earlier pause may still be running; this one starts after it).
            self._judging = asyncio.ensure_future(
                self._verdict(self._segmenter.audio_so_far(), self._speculation, detector.silence_ms))

    async def _verdict(self, audio: bytes, speculation: asyncio.Task | None, silence_ms: int) -> Verdict:
        started = time.perf_counter()
        model = self.turn_model
        assert model is not None
        probability_task = asyncio.ensure_future(asyncio.to_thread(model, audio, self.rate))
        transcript = None
        if speculation is not None:
            outcome = await asyncio.shield(speculation)
            transcript = getattr(outcome, "text", None)
        try:
            probability = await probability_task
        except Exception:  # noqa: BLE001 - the words (or the silence fallback) decide alone
            probability = None
        return decide(probability, transcript, silence_ms + (time.perf_counter() - started) * 1000)

    def _end_if_complete(self) -> UtteranceEnded | None:
        """The verdict is in: end the utterance now if it says complete (and the caller is still quiet)."""
        judging, self._judging = self._judging, None
        assert judging is not None
        if judging.cancelled() or judging.exception() is not None:
            return None
        verdict = judging.result()
        if not verdict.complete:
            self._judging = judging  # keep it: no second verdict in this pause; silence decides now
            return None
        if self._segmenter.detector.state is not VadState.STOPPING:
            return None
        utterance = self._segmenter.end_now()
        speculation, self._speculation = self._speculation, None
        return UtteranceEnded(utterance, speculation, verdict) if utterance else None

    @property
    def judging(self) -> asyncio.Task | None:
        """The end-of-turn verdict being reached for the pause in progress, or None."""
        return self._judging

    def poll(self) -> list[Heard]:
        """The utterance's end, if a verdict that came in after the last audio says complete.

        A client that sends its audio in a burst, or stops sending in silence, would otherwise
        wait for audio that never comes; the loop calls this when a verdict is reached.
        """
        if self._judging is None or not self._judging.done():
            return []
        ended = self._end_if_complete()
        return [ended] if ended is not None else []

    def _settled_verdict(self) -> Verdict | None:
        judging = self._judging
        if judging is None or not judging.done() or judging.cancelled() or judging.exception() is not None:
            return None
        return judging.result()

    def _drop_judging(self) -> None:
        if self._judging is not None:
            if not self._judging.done():
                self._judging.cancel()
            self._judging = None

    def utterance_so_far(self) -> bytes:
        """The PCM16 (at :attr:`rate`) of the utterance in progress, pre-roll included; b"" outside one."""
        return self._segmenter.audio_so_far()

    @property
    def in_speech(self) -> bool:
        """The caller is speaking now (the VAD is inside an utterance, or the button is down)."""
        return self._held is not None or self._segmenter.speaking

    def _speculate(self) -> None:
        detector = self._segmenter.detector
        if self._speculation is not None and detector.state is VadState.SPEAKING:
            self._speculation = None  # the speaker went on: its transcript is never used
            self.speculations["dropped"] += 1
        elif (self._speculation is None and detector.state is VadState.STOPPING
              and detector.silence_ms >= self.speculate_ms
              and (self._speculating is None or self._speculating.done())):
            audio = self._segmenter.audio_so_far()
            self._speculation = self._speculating = asyncio.ensure_future(self._transcribe(audio, self.rate))

    def count_speculation(self, used: bool) -> None:
        """Count an utterance's speculative transcript as used, or as dropped (heard again with more)."""
        self.speculations["used" if used else "dropped"] += 1

    # --- push-to-talk -----------------------------------------------------------------------------
    def talk_start(self) -> None:
        """The button went down: hold the audio from now on."""
        self._held = bytearray()

    def talk_end(self) -> bytes | None:
        """The button came up: the held audio (None when no press was in progress); the release is the end of speech."""
        if self._held is None:
            return None
        if self._inbound is not None:
            self._held += self._inbound.flush()  # the resampler's tail belongs to this press
            self._inbound = None
        held, self._held = bytes(self._held), None
        self.last_voiced = time.perf_counter()
        return held

    def clear_input(self) -> None:
        """Drop the audio of the utterance in progress (a held press, or the VAD's)."""
        if self._held is not None:
            self._held = bytearray()
        elif not self.push_to_talk:
            self._segmenter.clear()
            self._speculation = None
            self._drop_judging()

    # --- settings ---------------------------------------------------------------------------------
    def configure_vad(self, threshold: float | None = None, silence_ms: int | None = None,
                      prefix_ms: int | None = None) -> None:
        """Change endpointing between utterances (never mid-utterance; the next one uses it).

        Args:
            threshold: 0.3–0.95, how sure the VAD must be that a frame is speech; webrtcvad's
                aggressiveness follows it (below 0.5: 1, below 0.7: 2, else 3).
            silence_ms: silence that ends an utterance, ms (100–5000).
            prefix_ms: audio kept from before the detected start, ms (0–1000).
        """
        if self._segmenter.speaking:
            return
        if silence_ms:
            self._segmenter.detector.stop_ms = self.endpointing_ms = max(100, min(5000, int(silence_ms)))
        if threshold is not None and isinstance(self._segmenter.vad, WebRtcVad):
            level = 1 if threshold < 0.5 else 2 if threshold < 0.7 else 3
            self._segmenter.vad = WebRtcVad(self.rate, aggressiveness=level)
        elif threshold is not None and isinstance(self._segmenter.vad, SileroVad):
            self._segmenter.detector.threshold = max(0.3, min(0.95, float(threshold)))
        if prefix_ms is not None:
            self._segmenter.set_preroll(max(0, min(1000, int(prefix_ms))))

    def set_turn_model(self, turn_model: Callable[[bytes, int], float] | None, endpointing_ms: int) -> None:
        """Switch between the end-of-turn model and the silence endpoint (between utterances).

        Args:
            turn_model: see the class docstring (None: the silence endpoint).
            endpointing_ms: the model's longest wait, or the silence endpoint, ms.
        """
        self._drop_judging()
        self.turn_model = turn_model
        self._segmenter.detector.stop_ms = self.endpointing_ms = endpointing_ms
        if turn_model is not None and not 0 < self.speculate_ms < endpointing_ms:
            self.speculate_ms = min(200, endpointing_ms // 2)

    @property
    def vad(self) -> object:
        """The speech-confidence source in use (webrtcvad, Silero, or one passed in)."""
        return self._segmenter.vad

    @property
    def vad_aggressiveness(self) -> int | None:
        """The aggressiveness (0–3) of webrtcvad in use, or None for another VAD."""
        vad = self._segmenter.vad
        return vad.aggressiveness if isinstance(vad, WebRtcVad) else None
