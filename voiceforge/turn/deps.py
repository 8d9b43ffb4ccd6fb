"""What a conversation's turn pipeline and live loop use, handed to them as one small record.

The engine (the composition root) builds a :class:`TurnDeps` once; a pipeline reads its
providers, stores, tools and settings from it and nothing else, so a test or another host can
build one without an engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiceforge.agent.persona import Persona
from voiceforge.cost import Cost, Usage
from voiceforge.providers.registry import Providers
from voiceforge.tools import ToolRegistry
from voiceforge.turn.phrases import PhraseCache


@dataclass(frozen=True)
class TurnSettings:
    """The settings a turn pipeline and a conversation loop read (each is in ``.env.sample``).

    Attributes:
        endpointing_ms: silence that ends an utterance (``FORGE_ENDPOINTING_MS``), ms.
        turn_detector: "model" or "silence" (``FORGE_TURN_DETECTOR``).
        turn_max_wait_ms: the model detector's longest wait for an unfinished turn, ms.
        vad: "silero" or "webrtc" (``FORGE_VAD``), the frame-level speech decision.
        speculative_stt_ms: silence after which the utterance so far is transcribed ahead of the
            endpoint (``FORGE_SPECULATIVE_STT_MS``; 0: off), ms.
        llm_first_token_ms: the LLM's first-token budget on a live call (``FORGE_LLM_FIRST_TOKEN_MS``).
        max_turn_s: the longest utterance (``FORGE_MAX_TURN_S``), s.
        filler_after_ms: a tool still running after this long gets a filler sentence, ms.
        phone_reply_max_chars / phone_reply_max_s: a phone reply's caps (characters, spoken s).
        idle_s / idle_reprompts: a silent caller's reprompt delay (s; 0: never) and how many
            reprompts come before the goodbye and hang-up.
        max_call_s: the longest conversation before the spoken wrap-up and hang-up, s (0: none).
        min_interruption_ms: caller speech over the agent pauses it only after this long, ms.
        false_interruption_ms: a pause with no words after it (or only a backchannel) resumes
            the reply this long after the caller's sound ended, ms.
        enable_recordings: keep the caller's utterances and whole calls as WAV files.
        keep_replies: keep the agent's replies as WAV files (for replay), on by default.
        data_dir: the data folder (recordings go under ``recordings/``).
    """

    endpointing_ms: int = 500
    turn_detector: str = "model"
    turn_max_wait_ms: int = 2000
    vad: str = "webrtc"
    speculative_stt_ms: int = 200
    llm_first_token_ms: int = 4000
    max_turn_s: float = 60.0
    filler_after_ms: int = 600
    phone_reply_max_chars: int = 300
    phone_reply_max_s: float = 20.0
    idle_s: float = 8.0
    idle_reprompts: int = 2
    max_call_s: float = 900.0
    min_interruption_ms: int = 300
    false_interruption_ms: int = 1500
    enable_recordings: bool = False
    keep_replies: bool = True
    data_dir: Path = Path("data")

    @classmethod
    def from_settings(cls, settings: Any) -> TurnSettings:
        """The fields of :class:`voiceforge.config.Settings` that turns and the loop read."""
        return cls(
            endpointing_ms=settings.forge_endpointing_ms, speculative_stt_ms=settings.forge_speculative_stt_ms,
            turn_detector=settings.forge_turn_detector, turn_max_wait_ms=settings.forge_turn_max_wait_ms,
            vad=settings.forge_vad,
            llm_first_token_ms=settings.forge_llm_first_token_ms, max_turn_s=settings.forge_max_turn_s,
            filler_after_ms=settings.forge_filler_after_ms, phone_reply_max_chars=settings.forge_phone_reply_max_chars,
            phone_reply_max_s=settings.forge_phone_reply_max_s, enable_recordings=settings.enable_recordings,
            idle_s=settings.forge_idle_s, idle_reprompts=settings.forge_idle_reprompts,
            max_call_s=settings.forge_max_call_s, min_interruption_ms=settings.forge_min_interruption_ms,
            false_interruption_ms=settings.forge_false_interruption_ms,
            keep_replies=settings.forge_keep_replies, data_dir=settings.forge_data_dir,
        )

    @property
    def recordings_dir(self) -> Path | None:
        """``<data dir>/recordings`` when recordings or kept replies are on, else None."""
        return self.data_dir / "recordings" if self.enable_recordings or self.keep_replies else None

    @property
    def keep_reply_audio(self) -> bool:
        """Whether a live turn keeps its reply's PCM16 for storage."""
        return self.enable_recordings or self.keep_replies


@dataclass
class TurnDeps:
    """Everything a turn pipeline uses.

    Attributes:
        providers: the STT, LLM and TTS (built on first use), their labels and price keys.
        db: Forge's database (conversations, turns, calls, devices).
        business_db: where the mock customers, orders and appointments live (often ``db``).
        registry: the tool registry personas select their tools from.
        settings: see :class:`TurnSettings`.
        tool_settings: the settings tools read (the SMS allow-list, run_sql's limits, Telegram):
            :class:`voiceforge.config.Settings`.
        price: a turn's cost from its usage, with the providers in use.
        persona: loads a persona by id (re-read each turn, so edits apply from the next one).
        services: clients tools may use, by name ("tts", "twilio"); a zero-argument callable is
            called on first use.
        phrases: fixed sentences synthesized ahead (greetings, reprompts, apologies).
    """

    providers: Providers
    db: Any
    business_db: Any
    registry: ToolRegistry
    settings: TurnSettings
    tool_settings: Any
    price: Callable[[Usage], Cost]
    persona: Callable[[str], Persona]
    services: dict[str, Any] = field(default_factory=dict)
    phrases: PhraseCache = field(default_factory=PhraseCache)
