"""The agent's replies are kept for replay by default (the caller's voice only with
ENABLE_RECORDINGS), and kept files older than the retention are deleted at start."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.conftest import wer
from voiceforge.audio.codecs import unwrap_wav
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.local import WhisperSTT
from voiceforge.store import conversations

pytestmark = pytest.mark.integration


async def test_a_spoken_turn_keeps_the_reply_heard_but_not_the_callers_voice(tmp_path, speak):
    engine = Engine(load_settings(forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'f.db'}"))
    engine.ensure_mock_data()
    result = await engine.pipeline("customer_service").voice_turn(*speak("How many customers are there?"))
    (turn,) = conversations.get_conversation(engine.db, result.conversation_id)["turns"]
    assert turn["user_audio_path"] is None and not list(tmp_path.glob("recordings/*/*-user.wav"))
    pcm, rate = unwrap_wav(await asyncio.to_thread(Path(turn["reply_audio_path"]).read_bytes))
    heard = await WhisperSTT(load_settings().forge_cache_dir).transcribe(pcm, rate)
    assert wer(result.reply, heard.text) <= 0.2, (result.reply, heard.text)


async def test_kept_replies_can_be_switched_off(tmp_path, speak):
    engine = Engine(load_settings(forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'f.db'}",
                                  forge_keep_replies=False))
    engine.ensure_mock_data()
    result = await engine.pipeline("customer_service").voice_turn(*speak("Where is my order?"))
    (turn,) = conversations.get_conversation(engine.db, result.conversation_id)["turns"]
    assert turn["reply_audio_path"] is None and not (tmp_path / "recordings").exists()


def test_replies_older_than_the_retention_are_deleted(tmp_path):
    folder = tmp_path / "recordings" / "7"
    folder.mkdir(parents=True)
    old, new = folder / "000-reply.wav", folder / "001-reply.wav"
    old.write_bytes(b"RIFF")
    new.write_bytes(b"RIFF")
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    assert conversations.prune_recordings(tmp_path, 0) == 0 and old.exists()  # 0: kept for ever
    assert conversations.prune_recordings(tmp_path, 30) == 1
    assert not old.exists() and new.exists()
    new.unlink()
    assert conversations.prune_recordings(tmp_path, 30) == 0 and not folder.exists()
