"""The three prototype styles on the same utterances: latency, accuracy and cost.

1. **batch**: record, then STT → LLM → TTS on the whole clip; the reply plays when it is whole
   (the first prototype of the seed: Voice Chat's record-then-send). Voice-to-voice is the end
   of the turn (``turn_done``), measured from the moment the clip is handed over.
2. **phone**: streaming over the phone path. A call simulator speaking Twilio's media-stream
   protocol calls a sidecar started for the run (μ-law 8 kHz, VAD endpointing, barge-in ready);
   voice-to-voice is from the caller's last voiced frame to the first agent media frame.
3. **speech-to-speech**: a Realtime session (OpenAI when configured, else Forge's offline
   Realtime-compatible server started for the run), audio streamed in real time with server
   VAD; voice-to-voice is from the last voiced frame to the first audio delta.

Every style is measured from the end of the user's speech, as everywhere in Forge. Accuracy is
the WER of what the style heard against the reference text. Cost is per turn, per minute of
conversation (user speech plus agent speech), and per conversation (the whole set), from the
price table (:mod:`voiceforge.cost`; local providers cost 0); the phone style adds Twilio's
per-minute price for the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiceforge.audio.decode import decode_audio
from voiceforge.scoring import corpus_wer, percentile, wer

if TYPE_CHECKING:
    from voiceforge.engine import Engine

STYLES = {"batch": "Batch: STT → LLM → TTS", "phone": "Phone streaming (call simulator)",
          "speech-to-speech": "Speech-to-speech (Realtime)"}
DEFAULT_SET = [
    "How many customers are there?",
    "What are the orders of customer number two?",
    "Do I have any appointments coming up? I'm customer three.",
    "Hello, who am I talking to?",
]
"""The shipped default utterances, synthesised by Piper at run time (no files to download)."""
AUDIO_SUFFIXES = (".wav", ".mp3", ".ogg", ".opus", ".webm", ".m4a", ".mp4", ".flac")

QUALITATIVE = {
    "batch": {"pros": "simplest to build and debug; any STT/LLM/TTS; whole-reply audio is easy to cache",
              "cons": "the user waits for the whole reply; no barge-in; no streaming"},
    "phone": {"pros": "reaches any phone; streaming replies; barge-in with clear/mark",
              "cons": "8 kHz μ-law hurts STT accuracy; Twilio per-minute cost; needs a public URL"},
    "speech-to-speech": {"pros": "one model hears tone and answers in speech; server VAD and interruption built in",
                         "cons": "audio tokens are the priciest per minute; less control over each stage"},
}


@dataclass
class Utterance:
    """One test utterance: PCM16 mono at ``rate`` Hz and its reference text ("" when unknown)."""

    name: str
    pcm16: bytes
    rate: int
    reference: str = ""

    @property
    def seconds(self) -> float:
        """Its length, s."""
        return len(self.pcm16) / 2 / self.rate


@dataclass
class StyleRun:
    """One style's results: a row per utterance, or the error that stopped it."""

    style: str
    turns: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Voice-to-voice p50/p95 (ms), stage medians (ms), WER, cost per turn/minute/conversation (USD).

        A turn that failed (``error``) is counted in ``failed`` and left out of the latency
        percentiles, whose time it would distort either way. Cost is what was billed
        (:meth:`voiceforge.cost.PriceTable.spent`): the phone style's call is simulated on
        loopback, so no Twilio minutes are added (a real call adds Twilio's per-minute price).
        """
        failed = sum(1 for t in self.turns if t.get("error"))
        v2v = [t["v2v_ms"] for t in self.turns if t.get("v2v_ms") is not None and not t.get("error")]
        stages: dict[str, float] = {}
        for stage in ("endpointing", "stt", "llm", "tts"):
            values = [t["stages"][stage] for t in self.turns if stage in t.get("stages", {})]
            if values:
                stages[stage] = round(statistics.median(values), 1)
        scored = [(t["reference"], t["heard"]) for t in self.turns if t.get("reference")]
        cost = sum(t.get("cost_usd") or 0.0 for t in self.turns)
        minutes = sum(t.get("user_s", 0.0) + t.get("agent_s", 0.0) for t in self.turns) / 60
        return {
            "style": self.style, "label": STYLES[self.style], "turns": len(self.turns), "failed": failed,
            "error": self.error,
            "v2v_p50_ms": round(statistics.median(v2v), 1) if v2v else None,
            "v2v_p95_ms": round(percentile(v2v, 95), 1) if v2v else None,
            "stages_ms": stages,
            "wer": round(corpus_wer(scored), 3) if scored else None,
            "cost_per_turn_usd": cost / len(self.turns) if self.turns else None,
            "cost_per_minute_usd": cost / minutes if minutes else None,
            "cost_per_conversation_usd": cost if self.turns else None,
            "wall_s": round(self.wall_s, 1),
        }


def default_utterances() -> list[Utterance]:
    """The shipped default set, spoken by the embedded TTS (Piper); call it outside an event loop."""
    return asyncio.run(default_utterances_async())


async def default_utterances_async() -> list[Utterance]:
    """The shipped default set (:data:`DEFAULT_SET`) spoken by Piper, with the sentences as references."""
    from voiceforge.providers.local import PiperTTS

    tts = PiperTTS()
    return [Utterance(f"default-{i + 1}", await tts.synthesize(text), tts.sample_rate, text)
            for i, text in enumerate(DEFAULT_SET)]


def load_utterances(folder: Path, max_turn_s: float = 60.0) -> list[Utterance]:
    """The audio files in ``folder`` (WAV, MP3, OGG/Opus, WebM, M4A, FLAC), in name order.

    A reference text for ``x.wav`` is read from ``x.txt`` beside it, or from a line
    ``x.wav<TAB>text`` (or ``x.wav|text``) of ``folder/references.tsv``; without one the
    utterance gets no WER.

    Raises:
        FileNotFoundError: no such folder, or no audio in it.
        AudioFormatError: a file that cannot be decoded (named in the message).
    """
    from voiceforge.audio.codecs import AudioFormatError

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    references: dict[str, str] = {}
    table = folder / "references.tsv"
    if table.exists():
        for line in table.read_text(encoding="utf-8").splitlines():
            for sep in ("\t", "|"):
                if sep in line:
                    name, text = line.split(sep, 1)
                    references[name.strip()] = text.strip()
                    break
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            pcm, rate = decode_audio(path.read_bytes(), max_turn_s)
        except AudioFormatError as exc:
            raise AudioFormatError(f"{path.name}: {exc}") from None
        side = path.with_suffix(".txt")
        reference = side.read_text(encoding="utf-8").strip() if side.exists() else references.get(path.name, "")
        out.append(Utterance(path.stem, pcm, rate, reference))
    if not out:
        raise FileNotFoundError(f"no audio files in {folder} ({', '.join(AUDIO_SUFFIXES)})")
    return out


Progress = Callable[[str, int, int], None]


async def run_batch(engine: Engine, utterances: list[Utterance], persona: str | None,
                    progress: Progress | None = None) -> StyleRun:
    """Style 1: each clip through the turn pipeline, the reply synthesised whole."""
    run = StyleRun("batch")
    pipeline = engine.pipeline(persona, channel="compare")
    for i, utt in enumerate(utterances):
        result = await pipeline.voice_turn(utt.pcm16, utt.rate, speak=True)
        marks = result.timings_ms
        stt = marks.get("stt_final", 0.0)
        llm = marks.get("llm_first_token", stt)
        run.turns.append({
            "utterance": utt.name, "reference": utt.reference, "heard": result.user_text, "reply": result.reply,
            "v2v_ms": marks.get("turn_done"), "error": result.error,
            "stages": {"stt": stt, "llm": max(0.0, llm - stt), "tts": max(0.0, marks.get("turn_done", llm) - llm)},
            "cost_usd": (result.cost or {}).get("total", 0.0), "user_s": utt.seconds,
            "agent_s": len(result.audio or b"") / 2 / (result.sample_rate or 1),
        })
        if progress:
            progress("batch", i + 1, len(utterances))
    return run


async def run_phone(engine: Engine, utterances: list[Utterance], persona: str | None,
                    progress: Progress | None = None) -> StyleRun:
    """Style 2: one simulated phone call through a sidecar started for the run."""
    from forge.processes import local_sidecar
    from voiceforge.telephony.simulator import simulate_call

    run = StyleRun("phone")
    async with local_sidecar(settings=engine.settings) as (base, token, key):
        if progress:
            progress("phone", 0, len(utterances))
        result = await simulate_call(base, token, [(u.pcm16, u.rate) for u in utterances], persona, api_key=key)
    for utt, turn in zip(utterances, result["turns"], strict=False):
        marks = turn.get("timings_ms") or {}
        stt = marks.get("stt_final", 0.0)
        llm = marks.get("llm_first_token", stt)
        run.turns.append({
            "utterance": utt.name, "reference": utt.reference, "heard": turn["transcript"], "reply": turn["reply"],
            "v2v_ms": turn["latency_ms"], "error": turn.get("error"),
            "stages": {"endpointing": marks.get("endpointing_ms", 0.0), "stt": stt, "llm": max(0.0, llm - stt),
                       "tts": max(0.0, marks.get("first_frame_sent", llm) - llm)},
            "cost_usd": turn.get("cost_usd", 0.0), "user_s": utt.seconds, "agent_s": turn["agent_audio_ms"] / 1000,
        })
    if progress:
        progress("phone", len(utterances), len(utterances))
    return run


@contextlib.asynccontextmanager
async def realtime_service(engine: Engine, **extra: str) -> AsyncIterator[tuple[Any, str]]:
    """(openai SDK client, model) for Realtime sessions: OpenAI's Realtime API when a key is set,
    else Forge's offline Realtime server, started for the block (``extra``: more environment for it)."""
    import openai

    from forge.processes import local_realtime_server
    from realtime.client import OFFLINE_MODEL, make_client

    settings = engine.settings
    if settings.openai_configured:
        yield make_client(settings)
        return
    async with local_realtime_server(settings=settings, **extra) as url:
        key, _ = settings.ensure_api_key()
        yield openai.AsyncOpenAI(api_key=key, websocket_base_url=url, max_retries=0), OFFLINE_MODEL


@contextlib.asynccontextmanager
async def realtime_session(engine: Engine, persona: str | None, channel: str,
                           service: tuple[Any, str]) -> AsyncIterator[Any]:
    """A :class:`realtime.client.RealtimeClient` for ``persona`` on ``service`` (:func:`realtime_service`)."""
    from realtime.client import RealtimeClient

    sdk, model = service
    async with RealtimeClient(engine, persona, channel=channel, sdk=sdk, model=model) as client:
        yield client


class RealtimeLine:
    """A caller's side of a Realtime session: audio streamed in real time, 20 ms frames at 24 kHz.

    Silence is sent between utterances (:meth:`quiet_until`) as a microphone would, so the
    service's VAD hears the end of each turn.
    """

    def __init__(self, client: Any) -> None:
        from realtime.client import PCM_RATE

        self.client, self.rate = client, PCM_RATE
        self.frame = PCM_RATE // 50 * 2
        self.clock = time.perf_counter()

    async def send(self, audio: bytes, forever: bool = False) -> None:
        """Send ``audio`` (PCM16 at 24 kHz) in real time; with ``forever``, silence after it until cancelled."""
        k = 0
        while forever or k < len(audio):
            chunk = audio[k : k + self.frame] if k < len(audio) else b"\0" * self.frame
            await self.client.send_audio(chunk.ljust(self.frame, b"\0"), self.rate)
            k += self.frame
            self.clock = max(self.clock + 0.02, time.perf_counter() - 0.1)  # never a burst to catch up
            await asyncio.sleep(max(0.0, self.clock - time.perf_counter()))

    async def say(self, pcm16: bytes, rate: int, silence_ms: int = 0) -> None:
        """``silence_ms`` of silence, then the utterance (PCM16 mono at ``rate`` Hz)."""
        from voiceforge.audio.resample import resample

        await self.send(b"\0" * (self.rate * 2 * silence_ms // 1000) + resample(pcm16, rate, self.rate))

    async def quiet_until(self, waiting: Any) -> Any:
        """Send silence until the awaitable ``waiting`` is done; return its result."""
        silence = asyncio.create_task(self.send(b"", forever=True))
        try:
            return await waiting
        finally:
            silence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await silence


async def realtime_turn(client: Any, pcm16: bytes, rate: int, silence_ms: int = 0, timeout_s: float = 90) -> Any:
    """Stream one utterance to a Realtime session in real time (after ``silence_ms`` of silence), then
    silence until the service's VAD ends the turn and the answer is stored.

    Returns:
        The finished :class:`realtime.client.RealtimeTurn` (``timings_ms["first_audio_delta"]``
        is voice-to-voice from the last voiced frame).
    """
    line = RealtimeLine(client)
    await line.say(pcm16, rate, silence_ms)
    return await line.quiet_until(client.next_turn(timeout_s=timeout_s))


async def run_speech_to_speech(engine: Engine, utterances: list[Utterance], persona: str | None,
                               progress: Progress | None = None) -> StyleRun:
    """Style 3: a Realtime session, audio streamed in real time, server VAD finding the turns."""
    from realtime.client import PCM_RATE

    run = StyleRun("speech-to-speech")
    async with realtime_service(engine) as service, realtime_session(engine, persona, "compare", service) as client:
        for i, utt in enumerate(utterances):
            turn = await realtime_turn(client, utt.pcm16, utt.rate)
            marks = turn.timings_ms
            stt = marks.get("stt_final")
            run.turns.append({
                "utterance": utt.name, "reference": utt.reference, "heard": turn.user_text, "reply": turn.reply,
                "v2v_ms": marks.get("first_audio_delta"), "error": turn.error,
                "stages": {"endpointing": marks.get("endpointing_ms", 0.0), **({"stt": stt} if stt else {})},
                "cost_usd": (turn.cost or {}).get("total", 0.0), "user_s": utt.seconds,
                "agent_s": len(turn.audio) / 2 / PCM_RATE,
            })
            if progress:
                progress("speech-to-speech", i + 1, len(utterances))
            await asyncio.sleep(0.5)
    return run


RUNNERS = {"batch": run_batch, "phone": run_phone, "speech-to-speech": run_speech_to_speech}


async def compare(engine: Engine, utterances: list[Utterance], persona: str | None = None,
                  styles: list[str] | None = None, progress: Progress | None = None) -> list[StyleRun]:
    """Run ``utterances`` through each style in turn (one at a time: they share the CPU).

    A style that fails (its server did not start, the Realtime service refused) is reported
    with its error; the others still run.

    Raises:
        ValueError: an unknown style name.
    """
    chosen = styles or list(STYLES)
    unknown = [s for s in chosen if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown style {unknown[0]!r}: one of {', '.join(STYLES)}")
    runs = []
    for style in chosen:
        started = time.perf_counter()
        try:
            run = await RUNNERS[style](engine, utterances, persona, progress)
        except Exception as exc:  # noqa: BLE001 - one style's failure is a result, not a crash
            run = StyleRun(style, error=f"{type(exc).__name__}: {exc}")
        run.wall_s = time.perf_counter() - started
        runs.append(run)
    return runs


def table(runs: list[StyleRun]) -> list[dict[str, Any]]:
    """One row per style for a table: the summary plus the qualitative pros and cons."""
    return [{**run.summary(), **QUALITATIVE[run.style]} for run in runs]


__all__ = ["DEFAULT_SET", "QUALITATIVE", "STYLES", "StyleRun", "Utterance", "compare", "default_utterances",
           "default_utterances_async", "load_utterances", "table", "wer"]
