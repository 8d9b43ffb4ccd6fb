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


class _CountingWhisper:
    """CTranslate2's Whisper with its decoding passes counted (everything else is the real model's)."""

    def __init__(self, model) -> None:  # noqa: ANN001
        self._model, self.beams = model, []

    def generate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.beams.append(kwargs.get("beam_size", 1))
        return self._model.generate(*args, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._model, name)


class _Model:
    """faster-whisper's model with the counting CTranslate2 model inside."""

    def __init__(self, model) -> None:  # noqa: ANN001
        self._outer, self.model = model, _CountingWhisper(model.model)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._outer, name)


async def test_the_beam_runs_only_when_greedy_decoding_is_unsure(stts, speak):
    from voiceforge.audio.codecs import pcm16_to_float32
    from voiceforge.audio.resample import resample
    from voiceforge.providers.local import WHISPER_BEAM_SIZE, _ShortWindow, load_whisper

    model = _Model(load_whisper(None, load_settings().forge_cache_dir))
    window = _ShortWindow(model, 10)
    text = "How many customers are there?"
    pcm, rate = speak(text)
    clean = pcm16_to_float32(resample(pcm, rate, 16000))
    assert wer(text, window.transcribe(clean, "Vocabulary: Forge.")) == 0
    assert model.model.beams == [1]  # a confident greedy pass is the answer
    model.model.beams.clear()
    # Noise twice as loud as the speech (-6 dB SNR): greedy decoding is unsure, so the beam decodes again.
    noisy = clean + np.random.default_rng(5).normal(0, clean.std() * 2, clean.size).astype(np.float32)
    heard = window.transcribe(noisy, "Vocabulary: Forge.")
    assert model.model.beams[:2] == [1, WHISPER_BEAM_SIZE] and heard, (model.model.beams, heard)


def test_when_every_temperature_fails_a_looping_text_loses_to_a_plain_one():
    from voiceforge.providers.local import _best_of_failed

    loop = " ".join(["What's the standard?"] * 7)
    # The loop is the most probable text, yet a plain one is kept; with only loops, the likeliest loop.
    assert _best_of_failed([(-0.5, loop), (-1.6, "What's the standard of my order?"), (-1.9, "What's that?")]) \
        == "What's the standard of my order?"
    assert _best_of_failed([(-0.5, loop), (-0.2, loop + " Yes.")]) == loop + " Yes."
    assert _best_of_failed([]) == ""


def phone_band(pcm: bytes, rate: int) -> bytes:
    """8 kHz, 300-3400 Hz (a phone line's band), by zeroing the spectrum outside it."""
    import soxr

    x = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32), rate, 8000)
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    return np.clip(np.fft.irfft(spectrum, len(x)), -32768, 32767).astype("<i2").tobytes()


async def test_a_sentence_is_not_heard_twice_on_a_phone_line(stts):
    """Whisper repeated this eSpeak sentence when it began 300 ms into the audio ("Can you recite the
    manual for me? Can you recite the manual for me?"): a loop the audio is too short for is dropped."""
    from tests.support.espeak import espeak

    pcm, rate = espeak().say("Can you recite the Hanuman Chalisa for me?", "en+f1", 155, 45)
    line = phone_band(pcm, rate)
    for lead_ms in (100, 300):
        audio = b"\x00\x00" * (8 * lead_ms) + line + b"\x00\x00" * 800
        heard = (await stts[10].transcribe(audio, 8000)).text
        words = heard.lower().split()
        assert 5 <= len(words) <= 10 and heard.lower().count("can you") == 1, (lead_ms, heard)


def test_a_repetition_the_audio_holds_is_what_was_said():
    from voiceforge.providers.local import _loops, _unloop

    doubled = "Please cancel my appointment. Please cancel my appointment."
    assert _loops(doubled, 2.0) and _unloop(doubled, 2.0) == "Please cancel my appointment."
    assert not _loops(doubled, 4.0)  # 8 words in 4 s: a caller who said it twice
    assert _unloop("Can you recite? No, no, no, no.", 1.0) == "Can you recite? No."
    assert not _loops("Hello? Hello?", 0.5) and not _loops("No, no, no.", 0.5)  # people repeat a word or two


async def test_the_assistants_name_is_not_heard_in_ordinary_speech(tmp_path):
    """With "Ava" in Whisper's prompt, this eSpeak voice's "about Hanuman" came back as "about Ava"."""
    from tests.support.espeak import espeak
    from voiceforge.agent.persona import load_persona

    persona = load_persona("customer_service", tmp_path)
    assert persona.name not in persona.domain_words
    stt = WhisperSTT(load_settings().forge_cache_dir, prompt_words=persona.domain_words)
    pcm, rate = espeak().say("Tell me a story about Hanuman.", "en-gb+m4", 145, 35)
    heard = (await stt.transcribe(phone_band(pcm, rate), 8000)).text
    assert "story" in heard.lower() and persona.name.lower() not in heard.lower(), heard
