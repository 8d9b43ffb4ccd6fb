"""Stage timings of `forge talk` on a ~3 s Piper utterance, and the round-trip WER.

Run: .venv/bin/python bench/turn_latency.py   (prints figures; not part of the tests)
"""

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import _piper, wer  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402
from voiceforge.store import mockdata  # noqa: E402
from voiceforge.store.db import Database  # noqa: E402

REQUESTS = ["Can you look up customer number three?", "How many customers are there?",
            "What is the order history for customer number two?", "Please cancel appointment number five."]


async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    settings = load_settings(forge_data_dir=folder)
    engine = Engine(settings, db=Database(f"sqlite:///{folder / 'b.db'}"))
    engine.db.migrate()
    mockdata.generate(engine.db, 40)
    print(f"model load: {engine.warm_up():.0f} ms")
    rows, errors = [], []
    for text in REQUESTS * 3:
        pcm, rate = _piper(text)
        result = await engine.pipeline(channel="voice").voice_turn(pcm, rate)
        errors.append(wer(text, result.user_text))
        rows.append({**result.timings_ms, "audio_s": len(pcm) / 2 / rate})
    print(f"utterances: {len(rows)}, median length {statistics.median(r['audio_s'] for r in rows):.1f} s")
    for stage in ("stt_final", "llm_first_token", "first_sentence", "tts_first_audio", "turn_done"):
        values = sorted(r[stage] for r in rows)
        print(f"{stage:>16}: median {statistics.median(values):6.0f} ms  max {values[-1]:6.0f} ms")
    print(f"round-trip WER: mean {statistics.mean(errors):.3f}")


asyncio.run(main())
