"""Turn-taking, both end-of-turn detectors side by side: end-of-turn delay, cut-offs, interruptions, voice-to-voice.

Sections (``--sections``, all by default):

- ``eot``: the listener alone, fed in real time over the phone band (8 kHz μ-law): the delay
  from the true end of speech (the last 20 ms frame above -40 dBFS) to the end of the turn on
  complete utterances (p50/p95), turns split on a natural pause, and cut-offs on utterances
  with an 800 ms pause mid-sentence (answered in the pause), per end-of-turn detector and VAD
  (``--combos``). Voices: Piper, two eSpeak NG voices, and ``--clips`` (real speech).
- ``interrupt``: the whole loop while the agent speaks a long reply: backchannels, coughs,
  clicks and noise bursts (false barge-ins, resumes) and real interruptions (reaction: the
  clear sent after the moment the speech qualifies, p50/p95).
- ``phone``: calls from a Twilio caller written from Twilio's docs (tests/support/twilio_caller.py)
  into an in-process sidecar; voice-to-voice at the caller, from the last voiced frame it sent
  to the first agent audio it received, p50/p95, at 1 and 4 calls, per voice set.

The sentences here are this bench's own (not the tests', not tuned on). ``--clips DIR`` takes a
folder with ``references.tsv`` (``id`` and ``text`` columns) and ``audio/<id>.8k.wav``.
Run: .venv/bin/python bench/turn_taking.py [--clips DIR] [--sections eot,interrupt,phone] [--calls 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stt_accuracy import ESPEAK_VOICES, Espeak  # noqa: E402

from server.main import create_app  # noqa: E402
from tests.conftest import _piper  # noqa: E402
from tests.support.fakes import RecordingTransport, ScriptedLLM  # noqa: E402
from tests.support.servers import free_port, serve  # noqa: E402
from tests.support.twilio_caller import TwilioCaller  # noqa: E402
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from voiceforge.audio.resample import resample  # noqa: E402
from voiceforge.audio.turn_model import SmartTurn  # noqa: E402
from voiceforge.audio.vad import SileroVad  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.conversation import ConversationLoop  # noqa: E402
from voiceforge.conversation.listener import Listener, UtteranceEnded  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402
from voiceforge.transport import MarkPlayed, TextIn  # noqa: E402

COMPLETE = [
    "How many customers are there?", "Please cancel my appointment for tomorrow.", "Where is my order?",
    "I'd like to speak to someone about a refund.", "Can you check the status of order fifty two?",
    "Thanks, that's all I needed.",
]
PAUSED = [
    ("My customer number is", "twelve."), ("I would like to book an appointment for", "next Monday."),
    ("The problem is that", "the lamp arrived broken."), ("Could you tell me", "when my refund will come?"),
    ("I ordered a coffee maker and", "it never arrived."), ("Um, I'm calling about", "my last invoice."),
]
BACKCHANNELS = ["Uh-huh.", "Okay.", "Yeah.", "Mm-hmm.", "Right."]
INTERRUPTIONS = ["Wait, stop.", "Hold on, I have a question.", "No, that's not what I asked.",
                 "Sorry, can you repeat the first part?"]
LONG_REPLY = ("Here is everything about your account. You have three orders this year, the latest shipped "
              "on Monday. Your next appointment is a checkup on the fourteenth at ten in the morning. "
              "Your balance is zero and your loyalty points are two hundred and ten.")
VERBOSE = False
PAUSE_MS = 800
"""The pause mid-sentence of the PAUSED utterances (the target: no cut-off on pauses up to 1 s)."""
MIN_INTERRUPTION_MS = 300
VOICED_DB = -40.0


def phone(pcm: bytes, rate: int) -> bytes:
    """PCM16 → the phone line: 8 kHz μ-law and back (what a Twilio stream carries)."""
    return ulaw_to_pcm16(pcm16_to_ulaw(resample(pcm, rate, 8000)))


def voiced_frames(pcm8k: bytes) -> np.ndarray:
    """Per 20 ms frame at 8 kHz: above -40 dBFS."""
    x = np.frombuffer(pcm8k, "<i2").astype(np.float64) / 32768
    n = len(x) // 160
    rms = np.sqrt(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    return 20 * np.log10(rms) > VOICED_DB


def last_voiced_s(pcm8k: bytes) -> float:
    """End of the last frame above -40 dBFS, s from the start."""
    voiced = np.nonzero(voiced_frames(pcm8k))[0]
    return (voiced[-1] + 1) * 0.02 if len(voiced) else 0.0


def first_voiced_s(pcm8k: bytes) -> float:
    voiced = np.nonzero(voiced_frames(pcm8k))[0]
    return voiced[0] * 0.02 if len(voiced) else 0.0


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (8 * ms)


def cough(ms: int, seed: int = 7) -> bytes:
    n = 8 * ms
    envelope = np.minimum(1, np.arange(n) / (n / 10)) * np.exp(-np.arange(n) / (n / 3))
    return np.clip(np.random.default_rng(seed).normal(0, 9000, n) * envelope, -32768, 32767).astype("<i2").tobytes()


def click() -> bytes:
    pulse = np.zeros(80)
    pulse[:8] = [20000, -18000, 12000, -8000, 4000, -2000, 1000, -500]
    return pulse.astype("<i2").tobytes()


def noise_burst(ms: int) -> bytes:
    return np.random.default_rng(3).normal(0, 4000, 8 * ms).astype("<i2").tobytes()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def voices(clips: Path | None) -> dict[str, list[tuple[str, bytes]]]:
    """Voice set → [(text, PCM16 at 8 kHz on the phone band)] for the complete utterances."""
    espeak = Espeak()
    out = {"piper": [(t, phone(*_piper(t))) for t in COMPLETE]}
    for voice, wpm, pitch in ESPEAK_VOICES["heldout"][:2]:
        out[f"espeak {voice}"] = [(t, phone(*espeak.say(t, voice, wpm, pitch))) for t in COMPLETE]
    if clips is not None:
        out["real"] = read_clips(clips)
    return out


def read_clips(folder: Path) -> list[tuple[str, bytes]]:
    out = []
    with open(folder / "references.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            with wave.open(str(folder / "audio" / f"{row['id']}.8k.wav")) as w:
                assert w.getframerate() == 8000 and w.getnchannels() == 1
                out.append((row["text"], w.readframes(w.getnframes())))
    return out


# --- eot: the listener alone ------------------------------------------------------------------------
async def listen(engine: Engine, detector: str, vad: str, audio8k: bytes) -> list[float]:
    """Feed 8 kHz audio in real time (20 ms chunks); the times (s from the start) utterances ended."""
    pipeline = engine.pipeline("customer_service", channel="phone", persist=False)
    settings = engine.settings
    model = SmartTurn.shared().probability if detector == "model" else None
    listener = Listener(16000, settings.forge_turn_max_wait_ms if model else settings.forge_endpointing_ms,
                        settings.forge_max_turn_s, pipeline.transcribe, speculate_ms=settings.forge_speculative_stt_ms,
                        turn_model=model, vad=SileroVad(16000) if vad == "silero" else None)
    ends: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(audio8k), 320):
        for heard in listener.hear(audio8k[i : i + 320], 8000):
            if isinstance(heard, UtteranceEnded):
                ends.append(time.perf_counter() - start)
                if VERBOSE:
                    words = (await heard.speculation).text if heard.speculation is not None else "?"
                    verdict = heard.verdict
                    print(f"    ended at {ends[-1]:.2f} s: {words!r}" + (
                        f" (model p={verdict.probability:.2f}, words complete: {verdict.text_complete})"
                        if verdict is not None and verdict.probability is not None else " (silence)"))
        await asyncio.sleep(max(0.0, start + (i // 320 + 1) * 0.02 - time.perf_counter()))
    return ends


async def eot(engine: Engine, sets: dict[str, list[tuple[str, bytes]]], combos: list[tuple[str, str]]) -> None:
    espeak = Espeak()
    paused_sets = {"piper": lambda t: phone(*_piper(t))}
    for voice, wpm, pitch in ESPEAK_VOICES["heldout"][:2]:
        paused_sets[f"espeak {voice}"] = lambda t, v=voice, w=wpm, p=pitch: phone(*espeak.say(t, v, w, p))
    print("\n## End of turn (listener alone, phone band, real time)\n")
    print("| detector | VAD | voices | complete: delay p50 / p95 ms | split on a natural pause "
          f"| cut-offs, {PAUSE_MS} ms pause |")
    print("|---|---|---|---|---|---|")
    for detector, vad in combos:
        for name, clips in sets.items():
            if VERBOSE:
                print(f"  {detector}, {vad}, {name}:")
            delays, splits = [], 0
            for _, audio in clips:
                audio = silence(300) + audio + silence(2600)
                ends = await listen(engine, detector, vad, audio)
                truth = last_voiced_s(audio)
                after = [e for e in ends if e >= truth - 0.05]
                splits += len(ends) > 1
                if after:
                    delays.append((after[0] - truth) * 1000)
            cut = 0
            if name in paused_sets:
                for first, rest in PAUSED:
                    a, b = paused_sets[name](first), paused_sets[name](rest)
                    audio = silence(300) + a + silence(PAUSE_MS) + b + silence(2600)
                    ends = await listen(engine, detector, vad, audio)
                    resumed = (len(silence(300)) + len(a) + len(silence(PAUSE_MS))) / 16000 + first_voiced_s(b)
                    cut += any(e < resumed for e in ends)
            cuts = f"{cut} of {len(PAUSED)}" if name in paused_sets else "-"
            print(f"| {detector} | {vad} | {name} | {pct(delays, 50):.0f} / {pct(delays, 95):.0f} | {splits} of "
                  f"{len(clips)} | {cuts} |", flush=True)


# --- interrupt: the whole loop while the agent speaks ---------------------------------------------------
async def over_the_agent(engine: Engine, sound: bytes) -> dict:
    """The agent speaks LONG_REPLY; 1.2 s into its audio the caller makes ``sound`` (8 kHz)."""
    transport = RecordingTransport(8000)
    pipeline = engine.pipeline("customer_service", channel="phone", persist=False)
    loop = ConversationLoop(pipeline, transport, greet=False, limits=False, name="bench")
    transport.echo = lambda name: loop.handle(MarkPlayed(name))
    await loop.start()
    await loop.handle(TextIn("tell me everything about my account"))
    while not transport.frames:
        await asyncio.sleep(0.01)
    start = time.perf_counter()
    chunk_at = start
    audio = silence(1200) + sound + silence(3000)
    for i in range(0, len(audio), 320):
        await loop.on_audio(audio[i : i + 320], 8000)
        chunk_at = start + (i // 320 + 1) * 0.02
        await asyncio.sleep(max(0.0, chunk_at - time.perf_counter()))
    deadline = time.monotonic() + 30
    while loop.turns.live and time.monotonic() < deadline:
        await loop.on_audio(silence(20), 8000)
        await asyncio.sleep(0.02)
    counts = dict(loop.interruptions)
    await loop.stop()
    onset = start + 1.2 + first_voiced_s(sound)
    clear = next((c for c in transport.clears if c > onset), None)
    return {**counts, "reaction_ms": None if clear is None else (clear - onset) * 1000 - MIN_INTERRUPTION_MS}


async def interrupt(engine: Engine) -> None:
    espeak = Espeak()
    voice, wpm, pitch = ESPEAK_VOICES["heldout"][0]
    say = {"piper": lambda t: phone(*_piper(t)), "espeak": lambda t: phone(*espeak.say(t, voice, wpm, pitch))}
    not_interruptions = [(f"backchannel {v} {t!r}", say[v](t)) for v in say for t in BACKCHANNELS]
    not_interruptions += [("cough 150 ms", cough(150)), ("cough 300 ms", cough(300, seed=11)), ("click", click()),
                          ("noise burst 400 ms", noise_burst(400))]
    real = [(f"{v} {t!r}", say[v](t)) for v in say for t in INTERRUPTIONS]
    print("\n## Interruptions (the whole loop, the agent speaking, phone band; the reply is scripted, "
          "STT, Silero and TTS are real)\n")
    false, resumed = 0, 0
    for name, sound in not_interruptions:
        r = await over_the_agent(engine, sound)
        false += r["barge_in"] > 0
        resumed += r["resumed"]
        print(f"- {name}: {'BARGED IN' if r['barge_in'] else 'resumed' if r['resumed'] else 'ignored'}", flush=True)
    reactions, missed = [], 0
    for name, sound in real:
        r = await over_the_agent(engine, sound)
        missed += not r["barge_in"]
        if r["barge_in"] and r["reaction_ms"] is not None:
            reactions.append(r["reaction_ms"])
        print(f"- {name}: {'barge-in, clear ' + format(r['reaction_ms'], '.0f') + ' ms after it qualified' if r['barge_in'] else 'MISSED'}", flush=True)
    print(f"\nfalse barge-ins {false} of {len(not_interruptions)} ({100 * false / len(not_interruptions):.0f} %), "
          f"resumes {resumed}; real interruptions missed {missed} of {len(real)}; clear after qualifying "
          f"p50 {pct(reactions, 50):.0f} ms, p95 {pct(reactions, 95):.0f} ms (at the sidecar)")


# --- phone: voice-to-voice at the caller ----------------------------------------------------------------
TOKEN, KEY = "bench-token", "bench-key"


async def one_call(base: str, clips: list[tuple[str, bytes]]) -> list[float]:
    caller = TwilioCaller(base, TOKEN, persona="customer_service")
    await caller.dial()
    await caller.send_audio(silence(4500))  # the greeting
    out = []
    for _, clip in clips:
        heard_before = len(caller.heard.media)
        await caller.send_audio(clip)
        voiced = np.nonzero(voiced_frames(clip))[0]
        last_sent = caller.sent_at[min(len(caller.sent_at) - 1, int(voiced[-1]))] if len(voiced) else time.perf_counter()
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline:
            new = [at for at, _ in caller.heard.media[heard_before:] if at > last_sent]
            if new:
                out.append((new[0] - last_sent) * 1000)
                break
            await caller.send_audio(silence(20))
        quiet_since = time.perf_counter()  # wait for the reply to end (1 s without agent audio)
        while time.perf_counter() - quiet_since < 1.0 and time.perf_counter() < deadline + 30:
            await caller.send_audio(silence(100))
            if caller.heard.media and caller.heard.media[-1][0] > time.perf_counter() - 0.1:
                quiet_since = time.perf_counter()
    await caller.hang_up()
    return out


async def phone_section(sets: dict[str, list[tuple[str, bytes]]], calls: list[int], detectors: list[str]) -> None:
    print("\n## Voice-to-voice at the caller (Twilio caller from Twilio's docs, in-process sidecar)\n")
    print("| detector | voices | calls | p50 ms | p95 ms | turns |")
    print("|---|---|---|---|---|---|")
    for detector in detectors:
        with tempfile.TemporaryDirectory() as folder:
            port = free_port()
            settings = load_settings(public_base_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN,
                                     forge_api_key=KEY, forge_data_dir=Path(folder), forge_turn_detector=detector,
                                     forge_idle_s=0, forge_rate_calls_per_min=10_000,
                                     forge_max_unauthenticated_per_address=1000)
            app = create_app(settings)
            with serve(app, port) as base:
                async with httpx.AsyncClient() as http:  # the sidecar runs on its own loop: ask /ready
                    while (await http.get(base + "/ready")).status_code != 200:
                        await asyncio.sleep(0.2)
                for name, clips in sets.items():
                    for n in calls:
                        results = await asyncio.gather(*[one_call(base, clips) for _ in range(n)])
                        values = [v for r in results for v in r]
                        print(f"| {detector} | {name} | {n} | {pct(values, 50):.0f} | {pct(values, 95):.0f} | "
                              f"{len(values)} |", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, help="a folder of real speech: references.tsv and audio/<id>.8k.wav")
    parser.add_argument("--sections", default="eot,interrupt,phone")
    parser.add_argument("--calls", default="1,4")
    parser.add_argument("--detectors", default="model,silence", help="end-of-turn detectors for the phone section")
    parser.add_argument("--combos", default="model:webrtc,model:silero,silence:webrtc",
                        help="end-of-turn detector:VAD pairs for the eot section")
    parser.add_argument("--voices", help="only these voice sets (comma-separated names as printed, e.g. piper,real)")
    parser.add_argument("--verbose", action="store_true", help="print how each turn of the eot section ended")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    sections = args.sections.split(",")
    sets = voices(args.clips)
    if args.voices:
        sets = {k: v for k, v in sets.items() if k in args.voices.split(",")}
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(load_settings(forge_data_dir=Path(folder)))
        engine.ensure_mock_data()
        engine.warm_up()
        if "eot" in sections:
            await eot(engine, sets, [tuple(c.split(":")) for c in args.combos.split(",")])
        if "interrupt" in sections:  # a scripted long reply, every other stage real
            talker = Engine(load_settings(forge_data_dir=Path(folder)), llm=ScriptedLLM(default=LONG_REPLY),
                            db=engine.db)
            talker.warm_up()
            await interrupt(talker)
    if "phone" in sections:
        await phone_section(sets, [int(c) for c in args.calls.split(",")], args.detectors.split(","))


if __name__ == "__main__":
    asyncio.run(main())
