"""Whisper's accuracy and speed on voices and phrasings the tests never use, per condition.

Run: .venv/bin/python bench/stt_accuracy.py [--windows 10,30] [--quick] [--set heldout|dev] [--repeats N]

Voices: four eSpeak NG voices (libespeak-ng from the espeakng-loader wheel, a dev dependency)
at different speeds and pitches, and Piper's joe voice slowed down; the tests speak with Piper
joe at its normal pace, so that row is the nearest to what the project tunes on and is shown
apart. Phrases: bench/data/stt_heldout.txt (callers' requests written for this set only).
``--set dev`` uses other phrases (stt_dev.txt) and other eSpeak voices: the set Whisper's
decoding choices are tuned on, so that the held-out figures stay unseen.

Conditions, as the phone path sees them: 16 kHz clean; the 8 kHz telephone band (soxr down to
8 kHz, G.711 μ-law encoded and decoded: what Twilio's media stream carries); the same with
white noise at 15 dB SNR. Each is transcribed by Forge's WhisperSTT with the customer-service
persona's vocabulary prompt, once per Whisper window (``FORGE_WHISPER_WINDOW_S``).

``--clips DIR`` measures a folder of recorded speech instead: ``references.tsv`` (tab-separated,
``id`` and ``text`` columns) and ``audio/<id>.16k.wav``, ``audio/<id>.8k.wav`` and
``audio/<id>.8k-noisy.wav`` (the conditions it has). Real speech is what the figures are judged
on; measure on it, never tune on it.

``--prompts with,without`` runs each condition with the persona's vocabulary prompt (what
Forge does) and without it, to see what the domain words cost on ordinary speech.

Prints corpus WER per condition and window, and the median transcription time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.espeak import Espeak  # noqa: E402,F401 - re-exported for bench/turn_taking.py
from voiceforge.agent.persona import load_persona  # noqa: E402
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from voiceforge.audio.resample import resample  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.providers.local import WhisperSTT  # noqa: E402
from voiceforge.scoring import corpus_wer  # noqa: E402

PHRASES = {"heldout": Path(__file__).parent / "data" / "stt_heldout.txt",
           "dev": Path(__file__).parent / "data" / "stt_dev.txt"}
ESPEAK_VOICES = {  # (voice+variant, words per minute, pitch 0-100)
    "heldout": [("en-us+m3", 150, 40), ("en-gb+f3", 170, 65), ("en-us+f2", 190, 55), ("en+m7", 135, 30)],
    # The development set's own voices: what decoding may be tuned on.
    "dev": [("en-us+m1", 160, 50), ("en-gb+m4", 145, 35), ("en-us+f4", 175, 60), ("en+f1", 155, 45)],
}


def piper_slow(text: str) -> tuple[bytes, int]:
    from piper.config import SynthesisConfig

    from voiceforge.providers.local import PiperTTS, load_piper

    config = SynthesisConfig(length_scale=1.25, noise_scale=0.5, noise_w_scale=0.6)
    return b"".join(c.audio_int16_bytes for c in load_piper().synthesize(text, config)), PiperTTS.sample_rate


def phone_band(pcm: bytes, rate: int) -> tuple[bytes, int]:
    """What a Twilio media stream carries: 8 kHz G.711 μ-law, decoded back to PCM16."""
    return ulaw_to_pcm16(pcm16_to_ulaw(resample(pcm, rate, 8000))), 8000


def with_noise(pcm: bytes, snr_db: float, seed: int) -> bytes:
    signal = np.frombuffer(pcm, "<i2").astype(np.float64)
    power = np.mean(signal**2) / (10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).normal(0, np.sqrt(power), signal.size)
    return np.clip(signal + noise, -32768, 32767).astype("<i2").tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="10,30", help="Whisper windows to compare, in s")
    parser.add_argument("--quick", action="store_true", help="the first 8 phrases only")
    parser.add_argument("--repeats", type=int, default=1,
                        help="render each phrase this many times and pool the WER: eSpeak NG and Piper (noise_scale"
                             " 0.5) give different audio for the same text on each call, so one run's WER moves by"
                             " about 0.02 (Whisper gives the same text for the same audio)")
    parser.add_argument("--set", choices=list(PHRASES), default="heldout",
                        help="heldout (reported) or dev (phrases and voices decoding may be tuned on)")
    parser.add_argument("--clips", type=Path, help="a folder of recorded speech (references.tsv, audio/<id>.*.wav)")
    parser.add_argument("--prompts", default="with", help="with, without or with,without: the vocabulary prompt")
    args = parser.parse_args()
    if args.clips:
        return measure_clips(args.clips, [float(w) for w in args.windows.split(",")], args.prompts.split(","))
    phrases = [p.strip() for p in PHRASES[args.set].read_text().splitlines() if p.strip() and not p.startswith("#")]
    if args.quick:
        phrases = phrases[:8]
    espeak = Espeak()
    espeak_set = f"espeak ({args.set})"
    voices: dict[str, list[tuple[str, bytes, int]]] = {espeak_set: [], "piper joe slow (seen voice)": []}
    for _ in range(args.repeats):
        for i, text in enumerate(phrases):
            voice, wpm, pitch = ESPEAK_VOICES[args.set][i % len(ESPEAK_VOICES[args.set])]
            voices[espeak_set].append((text, *espeak.say(text, voice, wpm, pitch)))
            voices["piper joe slow (seen voice)"].append((text, *piper_slow(text)))
    settings = load_settings()
    words = load_persona("customer_service", Path(tempfile.mkdtemp())).domain_words
    print(f"{len(phrases)} phrases x {len(voices)} voice sets x {args.repeats} rendering(s); "
          "WER is corpus WER (edits / reference words)")
    for window in [float(w) for w in args.windows.split(",")]:
        stt = WhisperSTT(settings.forge_cache_dir, prompt_words=words, window_s=window)
        stt.warm_up()
        for name, clips in voices.items():
            conditions = {
                "16 kHz clean": [(t, pcm, rate) for t, pcm, rate in clips],
                "8 kHz phone": [(t, *phone_band(pcm, rate)) for t, pcm, rate in clips],
                "8 kHz phone + noise 15 dB": [(t, with_noise(phone_band(pcm, rate)[0], 15, i), 8000)
                                              for i, (t, pcm, rate) in enumerate(clips)],
            }
            for condition, items in conditions.items():
                pairs, times = transcribe_all(stt, items)
                print(f"window {window:>4.0f} s | {name:<28} | {condition:<26} | WER {corpus_wer(pairs):.3f} | "
                      f"vocabulary heard, not said {inserted(pairs, words):>2} | "
                      f"median {statistics.median(times):5.0f} ms", flush=True)


def read_clips(folder: Path) -> dict[str, list[tuple[str, bytes, int]]]:
    """``{condition: [(reference, PCM16, Hz)]}`` from a folder laid out as ``--clips`` says."""
    import csv

    from voiceforge.audio.codecs import unwrap_wav

    with (folder / "references.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    conditions: dict[str, list[tuple[str, bytes, int]]] = {}
    for name, suffix in (("16 kHz", "16k"), ("8 kHz phone", "8k"), ("8 kHz phone + noise", "8k-noisy")):
        found = [(row["text"], *unwrap_wav((folder / "audio" / f"{row['id']}.{suffix}.wav").read_bytes()))
                 for row in rows if (folder / "audio" / f"{row['id']}.{suffix}.wav").exists()]
        if found:
            conditions[name] = found
    if not conditions:
        raise SystemExit(f"no clips in {folder}/audio (expected <id>.16k.wav, <id>.8k.wav, <id>.8k-noisy.wav)")
    return conditions


def measure_clips(folder: Path, windows: list[float], prompts: list[str]) -> None:
    """Corpus WER of recorded speech per condition, window and prompt (with / without the vocabulary)."""
    conditions = read_clips(folder)
    settings = load_settings()
    words = load_persona("customer_service", Path(tempfile.mkdtemp())).domain_words
    print(f"vocabulary prompt: {', '.join(words)}")
    print(f"{folder}: {len(next(iter(conditions.values())))} clips; WER is corpus WER (edits / reference words)")
    for window in windows:
        for prompt in prompts:
            stt = WhisperSTT(settings.forge_cache_dir, prompt_words=words if prompt == "with" else (), window_s=window)
            stt.warm_up()
            for condition, items in conditions.items():
                pairs, times = transcribe_all(stt, items)
                print(f"window {window:>4.0f} s | prompt {prompt:<7} | {condition:<20} | WER {corpus_wer(pairs):.3f} "
                      f"| vocabulary words heard but not said {inserted(pairs, words)} "
                      f"| median {statistics.median(times):5.0f} ms", flush=True)


def transcribe_all(stt: WhisperSTT, items: list[tuple[str, bytes, int]]) -> tuple[list[tuple[str, str]], list[float]]:
    """Each (reference, PCM16, Hz) through ``stt``: the (reference, heard) pairs and each transcription's time, ms."""
    pairs, times = [], []
    for text, pcm, rate in items:
        start = time.perf_counter()
        heard = asyncio.run(stt.transcribe(pcm, rate)).text
        times.append((time.perf_counter() - start) * 1000)
        pairs.append((text, heard))
    return pairs, times


def inserted(pairs: list[tuple[str, str]], vocabulary: list[str]) -> int:
    """How many times a vocabulary word was heard beyond the times it was said (the prompt's bias)."""
    from voiceforge.scoring import words as normalised

    wanted = {w.lower() for w in vocabulary}
    extra = 0
    for reference, heard in pairs:
        said, got = normalised(reference), normalised(heard)
        extra += sum(max(0, got.count(w) - said.count(w)) for w in wanted)
    return extra


if __name__ == "__main__":
    main()
