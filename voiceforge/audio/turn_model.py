"""End of turn from the sound of speech: Smart Turn v3.2, an audio model, run with onnxruntime.

Smart Turn (Daily, BSD-2-Clause; the ONNX file ships inside the ``pipecat-ai`` wheel, which
Forge installs without its dependencies and never imports) reads the last 8 s of a speaker's
audio and returns the probability that they have finished their turn: intonation, lengthening
and a trailing "um" say "not yet" where silence alone cannot. Its input is a Whisper-tiny
log-mel spectrogram (80 bins, 10 ms hop, 8 s = 800 frames) of the waveform normalized to zero
mean and unit variance, left-padded with zeros; faster-whisper's feature extractor computes
the same features (to 3e-7 of Pipecat's reference implementation, checked in the tests).

About 110–145 ms per inference on one thread of this 2-core machine, so it runs in a worker
thread, once per pause.
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path

import numpy as np

MODEL_RATE = 16000
"""The rate the model takes (Hz)."""

WINDOW_S = 8
"""The audio the model reads: the last 8 s of the turn, s."""

MODEL_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"


class TurnModelMissing(RuntimeError):
    """The Smart Turn model file is not installed (``pip install --no-deps pipecat-ai``)."""


def model_path() -> Path:
    """Where the installed pipecat-ai wheel keeps Smart Turn v3.2.

    Raises:
        TurnModelMissing: pipecat-ai is not installed.
    """
    try:
        path = Path(str(importlib.metadata.distribution("pipecat-ai").locate_file(MODEL_FILE)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise TurnModelMissing("Smart Turn v3.2 is missing: `make` installs it (requirements-nodeps.txt), "
                               "or set FORGE_TURN_DETECTOR=silence")
    return path


class SmartTurn:
    """Smart Turn v3.2: P(the speaker has finished) from the audio of their turn so far.

    Args:
        path: the ONNX file (default: :func:`model_path`).
        threads: onnxruntime intra-op threads (1: leave the other core to Whisper).

    Raises:
        TurnModelMissing: no model file.
    """

    _shared: SmartTurn | None = None
    _shared_lock = threading.Lock()

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path or model_path()), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, sampling_rate=MODEL_RATE)
        self._lock = threading.Lock()  # one inference at a time per session

    @classmethod
    def shared(cls) -> SmartTurn:
        """One model per process, loaded on first use.

        Raises:
            TurnModelMissing: no model file.
        """
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def probability(self, pcm16: bytes, sample_rate: int) -> float:
        """P(complete) of a turn, 0–1 (blocking, about 120 ms: call it in a worker thread).

        Args:
            pcm16: the turn so far, PCM16 mono, ending where the pause began or later.
            sample_rate: its rate (Hz); other rates than 16 kHz are resampled with soxr.
        """
        audio = np.frombuffer(pcm16, "<i2").astype(np.float32) / 32768
        if sample_rate != MODEL_RATE:
            import soxr

            audio = soxr.resample(audio, sample_rate, MODEL_RATE).astype(np.float32)
        window = MODEL_RATE * WINDOW_S
        audio = audio[-window:]
        audio = np.pad(audio, (window - len(audio), 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio, padding=0)[:, : window // 160].astype(np.float32)
        with self._lock:
            (out,) = self._session.run(None, {"input_features": features[np.newaxis]})
        return float(np.asarray(out).reshape(-1)[0])
