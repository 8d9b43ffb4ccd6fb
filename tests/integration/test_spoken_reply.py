"""A spoken reply flows: the first audio is a short clause, and each next piece is synthesized
while the one before it plays (real offline brain, real Piper)."""

from __future__ import annotations

import asyncio
import time

import pytest

from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.store import mockdata
from voiceforge.store.db import Database
from voiceforge.turn.events import AudioChunk, Sentence, Timeline, TurnDone

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(tmp_path) -> Engine:
    """The offline engine (brain, Piper) over ten mock customers in SQLite."""
    engine = Engine(load_settings(forge_data_dir=tmp_path), db=Database(f"sqlite:///{tmp_path / 'f.db'}"))
    engine.db.migrate()
    mockdata.generate(engine.db, 10)
    return engine


def test_the_next_piece_of_a_reply_is_ready_when_the_one_before_it_has_played(engine):
    engine.warm_up()

    async def run() -> tuple[list[str], list[bool]]:
        events = engine.pipeline(None, channel="browser").respond("What can you do?", Timeline(time.perf_counter()))
        pieces, ready = [], []

        async def next_audio() -> None:
            while not isinstance(event := await anext(events), AudioChunk):
                if isinstance(event, Sentence):
                    pieces.append(event.text)

        await next_audio()  # the first piece's audio: it "plays" now
        while True:
            await asyncio.sleep(1.5)  # longer than Piper takes for the next piece
            waiting = asyncio.ensure_future(next_audio())
            for _ in range(20):  # event-loop turns only: no time for a TTS call to run
                await asyncio.sleep(0)
            ready.append(waiting.done())
            try:
                await waiting
            except StopAsyncIteration:
                break
        return pieces, ready[:-1]  # the last wait ended the reply

    pieces, ready = asyncio.run(run())
    # "I can check your orders, book or change appointments, ..." starts with its first clause.
    assert len(pieces) >= 3 and pieces[0].endswith(",") and len(pieces[0]) < 40, pieces
    assert ready and all(ready), (pieces, ready)


def test_a_reply_split_into_pieces_is_stored_whole(engine):
    async def run():  # noqa: ANN202
        async for event in engine.pipeline(None, channel="browser").respond("Look up customer number three.",
                                                                           Timeline(time.perf_counter())):
            if isinstance(event, TurnDone):
                return event.record

    result = asyncio.run(run())
    assert len(result.sentences) >= 2 and result.sentences[0].endswith(",")
    assert result.reply == " ".join(result.sentences) and "customer number 3" in result.reply
