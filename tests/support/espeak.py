"""eSpeak NG voices for tests and benches: a formant synthesizer, unlike Piper's neural voices.

A second, very different synthetic voice keeps the STT and turn-taking checks from fitting one
voice. The library and its data come from the ``espeakng-loader`` wheel (requirements-dev.txt).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np


class Espeak:
    """eSpeak NG through its C API (espeak_Synth with a synchronous callback), PCM16 at 22,050 Hz."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2: SYNCHRONOUS
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, n, _events):  # noqa: ANN001, ANN202
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(collect)  # kept alive as long as the library may call it
        self.lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, voice: str, wpm: int, pitch: int) -> tuple[bytes, int]:
        self._chunks = []
        self.lib.espeak_SetVoiceByName(voice.encode())
        self.lib.espeak_SetParameter(1, wpm, 0)  # espeakRATE
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks).astype("<i2").tobytes(), self.rate


@functools.lru_cache(maxsize=1)
def espeak() -> Espeak:
    """The process's one :class:`Espeak`: the library is initialised once (a second init synthesised nothing)."""
    return Espeak()
