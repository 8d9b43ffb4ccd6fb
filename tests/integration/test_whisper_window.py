"""Whisper over a 10 s window: the same words as over its 30 s one, silence stays silent, long audio falls back."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wer
from voiceforge.config import load_settings
from voiceforge.providers.local import WhisperSTT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stts():
    settings = load_settings()
    return {w: WhisperSTT(settings.forge_cache_dir, prompt_words=["Forge"], window_s=w) for w in (10, 30)}


async def test_the_short_window_hears_what_the_full_one_hears(stts, speak):
    text = "Could you move my appointment to Friday afternoon, please?"
    pcm, rate = speak(text)
    short, full = (await stts[10].transcribe(pcm, rate)).text, (await stts[30].transcribe(pcm, rate)).text
    assert stts[10]._window is not None and stts[10]._window.fits(len(pcm) / 2 / rate)
    assert wer(text, short) <= 0.15 and wer(text, short) <= wer(text, full) + 0.1, (short, full)


async def test_noise_is_no_words_on_the_short_window(stts):
    noise = np.random.default_rng(3).normal(0, 600, 16000 * 2).astype("<i2").tobytes()
    assert (await stts[10].transcribe(noise, 16000)).text == ""


async def test_audio_longer_than_the_window_goes_through_the_full_decoder(stts, speak):
    first, second = "Please look up customer number three.", "Then tell me how many orders are still processing."
    parts = [speak(first), speak(second)]
    rate = parts[0][1]
    gap = b"\x00\x00" * int(rate * 3)
    pcm = parts[0][0] + gap + parts[1][0] + gap
    heard = (await stts[10].transcribe(pcm, rate)).text
    assert not stts[10]._window.fits(len(pcm) / 2 / rate)  # over 9.5 s: Whisper's own 30 s path
    assert wer(first + " " + second, heard) <= 0.15, heard
