"""The conversation loop driven through a recording transport, with scripted providers.

No model and no socket: speech is a loud tone that a scripted VAD hears, STT and the LLM are
scripted, TTS is a tone whose length follows the text. Everything else is the real loop, the
real turn pipeline, the real tools and a real SQLite file.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from tests.support.fakes import FakeSTT, LoudnessVad, RecordingTransport, ScriptedLLM, ToneTTS
from voiceforge.config import load_settings
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.store import conversations
from voiceforge.store.db import Database
from voiceforge.transport import AudioIn, MarkPlayed, TextIn
from voiceforge.turn import APOLOGIES

pytestmark = pytest.mark.unit
RATE = 16000


def tone(ms: int) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * math.pi * 220 * t) * 9000).astype("<i2").tobytes()


def quiet(ms: int) -> bytes:
    return b"\x00\x00" * (RATE * ms // 1000)


async def until(condition, limit_s: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Call:
    """A loop over a RecordingTransport, fed in real time from the test."""

    def __init__(self, tmp_path, stt: FakeSTT, llm: ScriptedLLM, tts: ToneTTS | None = None,
                 persona: str = "friendly_guide", greet: bool = False, **settings) -> None:  # noqa: ANN001
        db = Database(f"sqlite:///{tmp_path / 'loop.db'}")
        db.migrate()
        self.engine = Engine(load_settings(forge_data_dir=tmp_path, **settings), stt=stt, llm=llm,
                             tts=tts or ToneTTS(), db=db)
        self.transport = RecordingTransport(RATE)
        self.pipeline = self.engine.pipeline(persona, channel="phone")
        # A tone is no speech to Smart Turn: the scripted calls end their turns on silence.
        self.loop = ConversationLoop(self.pipeline, self.transport, endpointing_ms=200, greet=greet,
                                     name="test", vad=LoudnessVad(), turn_detector="silence")
        self.transport.echo = lambda name: self.loop.handle(MarkPlayed(name))
        self.inbox: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> Call:
        async def source():  # noqa: ANN202
            while (event := await self.inbox.get()) is not None:
                yield event

        self.task = asyncio.create_task(self.loop.run(source()))
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:  # noqa: ANN002
        await self.inbox.put(None)
        await asyncio.wait_for(self.task, 20)

    async def say(self, pcm: bytes, realtime: bool = True) -> None:
        """Send audio in 20 ms chunks, paced like a phone line."""
        for i in range(0, len(pcm), 640):
            await self.inbox.put(AudioIn(pcm[i : i + 640], RATE))
            if realtime:
                await asyncio.sleep(0.02)

    async def utterance(self, speech_ms: int = 400) -> None:
        await self.say(tone(speech_ms) + quiet(300))

    def turns(self) -> list[dict]:
        return conversations.turns_of(self.engine.db, self.pipeline.conversation_id) \
            if self.pipeline.conversation_id else []

    def idle(self) -> bool:
        return not self.loop.turns.live and not self.transport._queue


async def test_two_spoken_turns_are_answered_played_and_stored(tmp_path):
    stt = FakeSTT(["where is my order", "thanks, bye"])
    llm = ScriptedLLM(["It shipped yesterday. Anything else?", [("end_call", {"reason": "done"})], "Goodbye!"])
    async with Call(tmp_path, stt, llm, greet=True) as call:
        await until(lambda: call.transport.marks_sent and call.idle())  # the greeting played
        assert call.engine.tts.spoken[0][0].startswith("Hi, I'm Sunny")
        await call.utterance()
        await until(lambda: call.loop.turns_stored == 1)
        await call.utterance()
        await until(lambda: call.transport.hung_up is not None)
        await until(lambda: call.loop.turns_stored == 2)
    first, second = call.turns()
    assert (first["user_text"], first["assistant_text"]) == ("where is my order", "It shipped yesterday. Anything else?")
    assert second["tool_calls"][0]["name"] == "end_call" and second["assistant_text"] == "Goodbye!"
    assert not first["interrupted"] and not second["interrupted"]
    timings = first["timings_ms"]
    # zero is the last voiced frame: endpointing waited ~200 ms, then STT, the LLM, TTS, the wire
    assert 150 <= timings["endpointing_ms"] <= 400, timings
    assert timings["endpointing_ms"] <= timings["stt_final"] <= timings["first_frame_sent"] < timings["playback_confirmed"]
    last_audio = call.transport.frames[-1][0]
    assert call.transport.hung_up >= last_audio  # hung up only after the goodbye was sent and played
    assert [e["state"] for e in call.transport.events if e["type"] == "state"][:3] == ["listening", "speaking", "listening"]


async def test_barge_in_clears_and_keeps_only_what_was_heard(tmp_path):
    long_reply = "First sentence is here. Second sentence is a bit longer than that. Third one ends it."
    llm = ScriptedLLM([long_reply, "Sure, stopping."])
    async with Call(tmp_path, FakeSTT(["tell me everything", "stop"]), llm, ToneTTS(ms_per_char=25)) as call:
        await call.utterance()
        # wait until the first sentence has played (its mark came back) and the second is playing
        await until(lambda: any(e["type"] == "sentence" and e["index"] == 1 for e in call.transport.events))
        await until(lambda: call.transport.marks_sent and call.transport.marks_sent[0] in call.transport.marks_echoed)
        await asyncio.sleep(0.2)
        spoke_at = time.perf_counter()
        await call.utterance(300)
        await until(lambda: call.loop.turns_stored == 2)
    interrupted, answer = call.turns()
    # cleared while the caller was still talking (300 ms of speech), not after its end of turn;
    # the bound leaves room for a loaded machine, the bench measures the figure
    assert call.transport.clears and call.transport.clears[0] - spoke_at < 0.5
    assert interrupted["interrupted"] and interrupted["assistant_text"] == "First sentence is here."
    assert answer["user_text"] == "stop" and answer["assistant_text"] == "Sure, stopping."
    # the agent's memory holds what the caller heard, not what it had planned to say
    heard = [m["content"] for m in llm.requests[-1] if m["role"] == "assistant"]
    assert heard == ["First sentence is here."]


async def test_an_utterance_during_transcription_is_merged_not_dropped(tmp_path):
    # The second transcription is of both utterances' audio together (Whisper hears a sentence
    # split by a pause better whole), so the fake answers it with the whole sentence.
    stt = FakeSTT(["I need to move", "I need to move my appointment on Friday"], delay=0.6)
    llm = ScriptedLLM(["Which appointment number is it?"])
    async with Call(tmp_path, stt, llm) as call:
        await call.utterance(300)
        await call.utterance(300)  # ends while the first is still being transcribed
        await until(lambda: call.loop.turns_stored == 1)
        await until(call.idle)
    (turn,) = call.turns()
    assert turn["user_text"] == "I need to move my appointment on Friday"
    assert len(stt.calls) == 2 and stt.calls[1] > stt.calls[0] + 0.25  # the joint audio
    assert len(llm.requests) == 1 and llm.requests[0][-1]["content"] == "I need to move my appointment on Friday"


async def test_an_utterance_during_a_tool_call_is_queued_and_both_are_answered(tmp_path):
    llm = ScriptedLLM([[("list_appointments", {"customer_id": 2})], "You have none.", "Yes, we open at nine."])
    async with Call(tmp_path, FakeSTT(["my appointments please", "and are you open tomorrow"]), llm,
                    forge_filler_after_ms=5000) as call:
        call.engine.registry.set_fault("list_appointments", delay_ms=900)
        await call.utterance(300)
        await until(lambda: any(e["type"] == "tool_call" for e in call.transport.events))
        await call.utterance(300)  # the tool is still running
        await until(lambda: call.loop.turns_stored == 2, limit_s=15)
    first, second = call.turns()
    assert first["user_text"] == "my appointments please", (first, second)  # one conversation, in order
    assert first["tool_calls"][0]["name"] == "list_appointments"
    assert second["user_text"] == "and are you open tomorrow" and second["assistant_text"] == "Yes, we open at nine."


async def test_a_hung_llm_gets_the_apology_within_its_budget(tmp_path):
    async with Call(tmp_path, FakeSTT(["hello?"]), ScriptedLLM(hang=True), forge_llm_first_token_ms=500) as call:
        await call.utterance()
        spoken_at = time.perf_counter()
        await until(lambda: call.loop.turns_stored == 1)
        first_audio = call.transport.frames[0][0]
    (turn,) = call.turns()
    assert turn["assistant_text"] == APOLOGIES["llm"] and "no first token" in turn["error"]
    assert first_audio - spoken_at < 1.5


async def test_failed_stt_apologizes_and_noise_is_ignored(tmp_path):
    from voiceforge.providers.base import ProviderConnectionError

    async with Call(tmp_path, FakeSTT(exception=ProviderConnectionError("fake-stt: cannot connect")),
                    ScriptedLLM()) as call:
        await call.utterance()
        await until(lambda: call.loop.turns_stored == 1)
    (turn,) = call.turns()
    assert turn["assistant_text"] == APOLOGIES["stt"] and turn["error"] == "fake-stt: cannot connect"

    async with Call(tmp_path, FakeSTT([""]), ScriptedLLM()) as call:
        await call.utterance()
        await asyncio.sleep(0.5)
    assert call.loop.turns_stored == 0 and not call.transport.frames


async def test_typed_text_over_speech_barges_in_and_is_answered(tmp_path):
    llm = ScriptedLLM(["One. Two is a longer sentence that takes a while to say.", "Typed answer."])
    async with Call(tmp_path, FakeSTT(["talk to me"]), llm, ToneTTS(ms_per_char=25)) as call:
        await call.utterance()
        await until(lambda: call.transport.frames)
        await call.inbox.put(TextIn("actually, never mind"))
        await until(lambda: call.loop.turns_stored == 2)
    first, second = call.turns()
    assert call.transport.clears and first["interrupted"]
    assert second["user_text"] == "actually, never mind" and second["assistant_text"] == "Typed answer."


async def test_a_silent_caller_is_reprompted_then_let_go(tmp_path):
    async with Call(tmp_path, FakeSTT(["yes I am here"]), ScriptedLLM(["Good. How can I help?"]), greet=True,
                    forge_idle_s=0.6, forge_idle_reprompts=2) as call:
        persona = call.pipeline.persona
        await until(lambda: any(text == persona.reprompt for text, _ in call.engine.tts.spoken))
        # the reprompt came a silence after the greeting's last frame (counted from its end, not its start)
        times = [at for at, _ in call.transport.frames]
        assert max(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.5
        # the caller answers the first reprompt: the count starts over
        await until(call.idle)
        await call.utterance()
        await until(lambda: call.loop.turns_stored == 1)
        await until(lambda: call.transport.hung_up is not None, limit_s=15)
    said = [text for text, _ in call.engine.tts.spoken]
    assert said[0] == persona.greeting and said[1] == persona.reprompt, said
    after_answer = said[said.index("Good. How can I help?") + 1:]
    assert after_answer == [persona.reprompt, persona.reprompt, persona.idle_goodbye], said
    assert call.turns()[0]["user_text"] == "yes I am here"
    assert call.transport.hung_up >= call.transport.frames[-1][0]  # after the goodbye was sent


async def test_silence_during_a_slow_tool_is_not_the_callers(tmp_path):
    llm = ScriptedLLM([[("list_appointments", {"customer_id": 2})], "You have none."])
    async with Call(tmp_path, FakeSTT(["my appointments please"]), llm, forge_idle_s=0.5,
                    forge_filler_after_ms=5000) as call:
        call.engine.registry.set_fault("list_appointments", delay_ms=1500)
        await call.utterance(300)
        await until(lambda: call.loop.turns_stored == 1, limit_s=15)
        assert call.pipeline.persona.reprompt not in [text for text, _ in call.engine.tts.spoken]
        await until(lambda: call.pipeline.persona.reprompt in [text for text, _ in call.engine.tts.spoken])


async def test_the_maximum_duration_wraps_the_call_up(tmp_path):
    async with Call(tmp_path, FakeSTT(["hello"]), ScriptedLLM(["Hi there."]), forge_idle_s=0,
                    forge_max_call_s=1.2) as call:
        started = time.perf_counter()
        await call.utterance()
        await until(lambda: call.transport.hung_up is not None, limit_s=10)
    said = [text for text, _ in call.engine.tts.spoken]
    assert said == ["Hi there.", call.pipeline.persona.wrap_up], said
    assert call.transport.hung_up - started >= 1.2


async def test_keypad_digits_reach_the_agent_as_words(tmp_path):
    from voiceforge.transport import DtmfIn

    llm = ScriptedLLM(["Thanks, number 42.", "Checking your order."])
    stored: list[str] = []

    async def on_dtmf(digit: str) -> None:
        stored.append(digit)

    async with Call(tmp_path, FakeSTT([]), llm) as call:
        call.loop._on_dtmf = on_dtmf
        call.loop.keypad.meanings = {"1": "I want to check my order"}
        for key in "42#":
            await call.inbox.put(DtmfIn(key))
        await until(lambda: call.loop.turns_stored == 1)
        await call.inbox.put(DtmfIn("1"))  # mapped: sent at once, no # needed
        await until(lambda: call.loop.turns_stored == 2)
    assert [t["user_text"] for t in call.turns()] == ["I pressed 42 on the keypad.", "I want to check my order"]
    assert stored == ["4", "2", "#", "1"]


LONG_REPLY = "First sentence is here. Second sentence is a bit longer than that. Third one ends it."


async def _speak_over_the_second_sentence(call: Call, speech_ms: int) -> float:
    await call.utterance()
    await until(lambda: any(e["type"] == "sentence" and e["index"] == 1 for e in call.transport.events))
    await asyncio.sleep(0.3)
    spoke_at = time.perf_counter()
    await call.say(tone(speech_ms) + quiet(300))
    return spoke_at


async def test_a_cough_over_the_agent_changes_nothing(tmp_path):
    stt = FakeSTT(["tell me everything"], default="should not be transcribed")
    async with Call(tmp_path, stt, ScriptedLLM([LONG_REPLY]), ToneTTS(ms_per_char=25)) as call:
        await _speak_over_the_second_sentence(call, 150)
        await until(lambda: call.loop.turns_stored == 1, limit_s=15)
    (turn,) = call.turns()
    assert not call.transport.clears and not turn["interrupted"] and turn["assistant_text"] == LONG_REPLY
    assert len(stt.calls) == 1 and call.loop.interruptions["ignored"] == 1


@pytest.mark.parametrize("heard", ["uh-huh", "Okay, right.", ""])
async def test_a_backchannel_or_a_wordless_sound_pauses_the_agent_then_it_resumes(tmp_path, heard):
    stt = FakeSTT(["tell me everything", heard])
    async with Call(tmp_path, stt, ScriptedLLM([LONG_REPLY]), ToneTTS(ms_per_char=25)) as call:
        spoke_at = await _speak_over_the_second_sentence(call, 600)
        await until(lambda: call.loop.turns_stored == 1, limit_s=20)
    (turn,) = call.turns()
    assert call.transport.clears and call.transport.clears[0] - spoke_at < 0.6  # paused once it qualified
    assert not turn["interrupted"] and turn["assistant_text"] == LONG_REPLY  # resumed and played to the end
    assert call.loop.interruptions == {"ignored": 0, "resumed": 1, "barge_in": 0}
    resumed = [at for at, _ in call.transport.frames if at > call.transport.clears[0]]
    assert resumed, "no audio after the pause"


async def test_words_over_the_agent_interrupt_it_within_300_ms_of_qualifying(tmp_path):
    stt = FakeSTT(["tell me everything", "wait, stop"])
    llm = ScriptedLLM([LONG_REPLY, "Sure, stopping."])
    async with Call(tmp_path, stt, llm, ToneTTS(ms_per_char=25)) as call:
        spoke_at = await _speak_over_the_second_sentence(call, 600)
        await until(lambda: call.loop.turns_stored == 2, limit_s=20)
    interrupted, answer = call.turns()
    qualified_at = spoke_at + 0.3  # FORGE_MIN_INTERRUPTION_MS of voiced speech
    assert -0.03 <= call.transport.clears[0] - qualified_at < 0.3  # 20 ms frames: one early at most
    assert interrupted["interrupted"] and interrupted["assistant_text"] == "First sentence is here."
    assert answer["user_text"] == "wait, stop" and answer["assistant_text"] == "Sure, stopping."
    assert call.loop.interruptions["barge_in"] == 1
    # The sidecar's own figure, stored on the cut turn: from the VAD's start of the speech to the pause.
    assert 240 <= interrupted["timings_ms"]["barge_in_stop_ms"] < 600, interrupted["timings_ms"]
