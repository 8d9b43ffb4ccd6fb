"""Audio: codecs (PCM16, μ-law, WAV), stream resampling, 20 ms framing and pacing, VAD, turns."""

from voiceforge.audio.codecs import (
    AudioFormatError,
    float32_to_pcm16,
    pcm16_to_float32,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
    unwrap_wav,
    wrap_wav,
)
from voiceforge.audio.framing import FrameBuffer, Pacer, frame_bytes
from voiceforge.audio.resample import StreamResampler, resample
from voiceforge.audio.vad import SpeechDetector, VadEvent, VadState, WebRtcVad

__all__ = [
    "AudioFormatError",
    "FrameBuffer",
    "Pacer",
    "StreamResampler",
    "SpeechDetector",
    "VadEvent",
    "VadState",
    "WebRtcVad",
    "float32_to_pcm16",
    "frame_bytes",
    "pcm16_to_float32",
    "pcm16_to_ulaw",
    "resample",
    "ulaw_to_pcm16",
    "unwrap_wav",
    "wrap_wav",
]
