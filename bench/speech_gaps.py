"""How a spoken reply flows: first audio, and the silence Forge adds between its sentences.

Answers multi-sentence requests with the offline brain and Piper through the turn pipeline,
played back in real time (each chunk "plays" for its duration before the next event is read,
as a paced transport does). Prints the time from the reply's start to its first audio, and the
gaps between one sentence's end of playback and the next one's first audio (Piper's own pauses
inside its audio are not counted), with the look-ahead synthesis and the first-clause split on
and off.
Run: .venv/bin/python bench/speech_gaps.py
"""

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voiceforge.config import load_settings  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402
from voiceforge.store import mockdata  # noqa: E402
from voiceforge.store.db import Database  # noqa: E402
from voiceforge.turn import pipeline as turn_pipeline  # noqa: E402
from voiceforge.turn import synthesis  # noqa: E402
from voiceforge.turn.events import AudioChunk, Sentence, Timeline  # noqa: E402

REQUESTS = ["Look up customer number three.", "What is the order history for customer number two?",
            "What appointments does customer number four have?", "What can you do?",
            "Tell me a joke about the weather."]


async def play(engine: Engine, text: str) -> tuple[float, list[float]]:
    """One reply played in real time: (ms to first audio, [gap ms between sentences])."""
    pipeline = engine.pipeline(None, channel="phone")
    timeline = Timeline(time.perf_counter())
    start = time.perf_counter()
    first, gaps, playing_until, new_sentence = None, [], None, False
    async for event in pipeline.respond(text, timeline):
        now = time.perf_counter()
        if isinstance(event, Sentence):
            new_sentence = True
        elif isinstance(event, AudioChunk):
            if first is None:
                first = (now - start) * 1000
            elif new_sentence and playing_until is not None:
                gaps.append(max(0.0, now - playing_until) * 1000)
            new_sentence = False
            duration = len(event.pcm16) / 2 / event.sample_rate
            playing_until = max(now, playing_until or now) + duration
            await asyncio.sleep(max(0.0, playing_until - time.perf_counter()))
    return first or 0.0, gaps


async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    engine = Engine(load_settings(forge_data_dir=folder), db=Database(f"sqlite:///{folder / 'b.db'}"))
    engine.db.migrate()
    mockdata.generate(engine.db, 40)
    engine.warm_up()
    for lookahead, clause in ((0, None), (1, None), (1, turn_pipeline.FIRST_CLAUSE_CHARS)):
        synthesis.TTS_LOOKAHEAD, turn_pipeline.FIRST_CLAUSE_CHARS = lookahead, clause
        firsts, gaps = [], []
        for _ in range(2):
            for text in REQUESTS:
                first, g = await play(engine, text)
                firsts.append(first)
                gaps += g
        print(f"look-ahead {lookahead}, first clause {'at ' + str(clause) + ' chars' if clause else 'off':>15}: "
              f"first audio median {statistics.median(firsts):4.0f} ms, max {max(firsts):4.0f} ms | "
              f"gaps between sentences ({len(gaps)}): median {statistics.median(gaps):4.0f} ms, "
              f"max {max(gaps):4.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
