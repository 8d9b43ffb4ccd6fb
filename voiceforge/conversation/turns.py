"""One conversation's turns in flight: each answered by the pipeline, played, settled and queued for storage.

The loop decides when a turn starts, merges or is cut short (turn-taking); this module carries
it out: it waits for the turn's transcripts, runs the pipeline's reply through the playout, and
settles the turn once every sentence's mark came back (or a barge-in cut it), so that what is
stored and what the agent remembers is what the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from voiceforge.conversation.live_turn import LiveTurn
from voiceforge.conversation.playout import Played, Playout
from voiceforge.conversation.recorder import CallRecorder
from voiceforge.conversation.writer import TurnWriter
from voiceforge.records import TurnRecord
from voiceforge.transport import Ignored, Notification, State, Transcript, Transport, TurnFinished
from voiceforge.turn import APOLOGIES, Timeline, TurnError, TurnPipeline

log = logging.getLogger(__name__)


class Turns:
    """The turns of one conversation, by generation.

    Args:
        pipeline: the conversation's turn pipeline.
        transport: the wire (audio out through the playout, hang-up after end_call).
        rate: the rate (Hz) of the caller's audio the turns hold.
        first_token_s: the LLM's first-token budget.
        notify: passes a notification to the transport.
        set_state: the loop's agent state ("listening", "thinking", "speaking").
        spawn: runs a coroutine in the background (the loop waits for them when it stops).
        recorder: the call's recorder, or None.
        name: a label for logs.
    """

    def __init__(self, pipeline: TurnPipeline, transport: Transport, rate: int, first_token_s: float, *,
                 notify: Callable[[Notification], Awaitable[None]], set_state: Callable[[State], Awaitable[None]],
                 spawn: Callable[[Awaitable[None]], None], recorder: CallRecorder | None = None,
                 name: str = "") -> None:
        self.pipeline, self.transport, self.rate, self.name = pipeline, transport, rate, name
        self.first_token_s = first_token_s
        self._notify, self._set_state, self._spawn = notify, set_state, spawn
        self.recorder = recorder
        self.playout = Playout(transport, on_sent=self._on_sent, on_played=self._on_played)
        self.writer = TurnWriter(pipeline.save, name)
        self._generation = 0
        self._turns: dict[int, LiveTurn] = {}
        self.current: LiveTurn | None = None
        """The latest turn that answers the caller (not a greeting)."""

    @property
    def live(self) -> bool:
        """Some turn is being thought about or spoken."""
        return bool(self._turns)

    @property
    def speaking(self) -> bool:
        """Some turn's audio has started and the turn is not over (it may be paused)."""
        return any(t.audio_started and not t.finished for t in self._turns.values())

    def new(self, timeline: Timeline, store: bool = True) -> LiveTurn:
        """A new turn; ``store`` False for a fixed sentence (a greeting) that is not a turn of the conversation."""
        self._generation += 1
        turn = LiveTurn(self._generation, timeline, store=store)
        self._turns[turn.generation] = turn
        if store:
            self.current = turn
        return turn

    def answer(self, turn: LiveTurn) -> None:
        """Start answering ``turn`` once its inputs are transcribed (and the turn before it is over)."""
        turn.task = asyncio.create_task(self._answer(turn), name=f"turn-{self.name}-{turn.generation}")

    def say(self, text: str, hang_up: bool = False) -> None:
        """Speak a fixed sentence now (a greeting, a reprompt); it is not stored as a turn.

        With ``hang_up`` the transport hangs up once it has been played (or cut off).
        """
        turn = self.new(Timeline(), store=False)
        turn.hang_up_after = hang_up
        turn.task = asyncio.create_task(self._play(turn, self.pipeline.say(text)))

    def absorb(self, previous: LiveTurn, into: LiveTurn, joint: bool) -> None:
        """Merge ``previous`` (nothing of it heard, no tool run) into ``into``.

        With ``joint`` its audio is transcribed again together with the new utterance's; else
        its transcripts are kept as inputs of ``into``.
        """
        previous.finished = True
        self._turns.pop(previous.generation, None)
        self.writer.rekey(previous.generation, into.generation)  # one row for the merged turn
        into.user_audio += previous.user_audio
        into.after = previous.after
        into.typed = previous.typed
        if not joint:
            into.inputs += previous.inputs

    async def barge_in(self, stopped_after_ms: float | None = None) -> None:
        """The caller spoke over audible agent speech: clear it, stop those turns, keep what was heard.

        Args:
            stopped_after_ms: how long after the caller's speech began (the VAD's start) the agent's
                audio stopped, ms (sidecar clock); stored on each cut turn as ``barge_in_stop_ms``.
        """
        audible = [t for t in self._turns.values() if t.audio_started and not t.finished]
        if not audible:
            return
        await self.playout.clear()
        for turn in audible:
            if stopped_after_ms is not None:
                turn.timeline.marks["barge_in_stop_ms"] = round(stopped_after_ms, 1)
            await self.cancel(turn)
            if not turn.finished:
                self._finish(turn, interrupted=True)

    async def interrupt(self) -> None:
        """Stop the agent now: clear what is audible, drop what is being thought."""
        await self.barge_in()
        current = self.current
        if current is not None and not current.finished and current.task is not None:
            await self.cancel(current)
            self._finish(current, interrupted=True)

    async def cancel(self, turn: LiveTurn) -> None:
        """Stop thinking or speaking ``turn``; if nobody heard any of it, the agent forgets it."""
        task, turn.task = turn.task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if turn.mergeable and turn.memory_mark is not None:
            self.pipeline.rollback(turn.memory_mark)  # nobody heard it: as if never thought
            turn.memory_mark = None

    async def close(self) -> None:
        """The connection ended: stop every turn, settle what was heard, store what is queued."""
        for turn in list(self._turns.values()):
            for source in turn.inputs:
                if isinstance(source, asyncio.Task):
                    source.cancel()
            await self.cancel(turn)
            if not turn.finished:
                self._finish(turn, interrupted=not turn.complete)
        await self.writer.close()

    # --- running a turn ---------------------------------------------------------------------------
    async def _answer(self, turn: LiveTurn) -> None:
        heard: list[str] = []
        errors: list[str] = []
        for source in turn.inputs:
            outcome = await asyncio.shield(source)
            if isinstance(outcome, TurnError):
                errors.append(outcome.message)
            elif outcome.text:
                heard.append(outcome.text)
                turn.timeline.set("stt_ms", outcome.stt_ms)
                turn.failover += outcome.failover
        turn.timeline.mark("stt_final")
        if turn.after is not None:
            await asyncio.wait({turn.after})  # a queued turn waits for the one before it
        turn.user_text = " ".join(heard)
        if not turn.user_text:
            if not errors:  # noise: nothing to answer, nothing to store
                turn.store = False
                turn.done = True
                self._maybe_finish(turn)
                await self._notify(Ignored(turn.generation, "no words"))
                if turn is self.current:
                    await self._set_state("listening")
                return
            turn.error = errors[0]
            await self._play(turn, self.pipeline.say(APOLOGIES["stt"], turn.timeline))
            return
        await self._notify(Transcript(turn.user_text, turn.generation))
        self._store_heard(turn)
        turn.memory_mark = self.pipeline.checkpoint()
        await self._play(turn, self.pipeline.respond(turn.user_text, turn.timeline, first_token_s=self.first_token_s))

    def _store_heard(self, turn: LiveTurn) -> None:
        """Queue the caller's words for storage now, before any reply (``answered`` False)."""
        if not turn.store:
            return
        keep_audio = self.pipeline.settings.enable_recordings and turn.user_audio
        self.writer.open(turn.generation, TurnRecord(
            user_text=turn.user_text, reply="", answered=False, conversation_id=self.pipeline.conversation_id,
            timings_ms=dict(turn.timeline.marks), user_audio=(bytes(turn.user_audio), self.rate) if keep_audio else None))

    async def _play(self, turn: LiveTurn, events: AsyncIterator[Any]) -> None:
        try:
            await turn.play(events, self.playout, self._notify, keep_audio=self.pipeline.settings.keep_reply_audio)
            turn.done = True
            self._maybe_finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one turn's failure must not end the conversation
            log.exception("turn %s failed on %s", turn.generation, self.name)
            turn.error = f"turn failed: {type(exc).__name__}"
            turn.done = True
            self._finish(turn, interrupted=True)

    def _turn_of(self, segment: str) -> tuple[LiveTurn | None, int]:
        generation, _, index = segment.partition(":")
        turn = self._turns.get(int(generation)) if generation.isdigit() else None
        return turn, int(index) if index.isdigit() else -1

    async def _on_sent(self, segment: str, pcm16: bytes, rate: int) -> None:
        if self.recorder is not None:
            self.recorder.agent(pcm16, rate)
        turn, _ = self._turn_of(segment)
        if turn is not None and not turn.audio_started:
            turn.audio_started = True
            turn.timeline.mark("first_frame_sent")
            await self._set_state("speaking")

    def _on_played(self, played: Played) -> None:
        turn, index = self._turn_of(played.segment)
        if turn is not None and played.complete:
            turn.played.add(index)
            self._maybe_finish(turn)

    def _maybe_finish(self, turn: LiveTurn) -> None:
        if not turn.finished and turn.complete:
            if turn.sentences:
                turn.timeline.mark("playback_confirmed")
            self._finish(turn, interrupted=False)

    def _finish(self, turn: LiveTurn, interrupted: bool) -> None:
        """Settle memory now (before any later turn thinks) and queue the write."""
        turn.finished = True
        self._turns.pop(turn.generation, None)
        if not self._turns:
            self._spawn(self._set_state("listening"))
        if turn.hang_up_after:  # a goodbye or a wrap-up
            self._spawn(self._hang_up())
        if not turn.store or not (turn.user_text or turn.error):
            return
        record = turn.to_record(self.pipeline.conversation_id, self.rate)
        self.pipeline.record(record, heard=turn.heard() if interrupted else None, interrupted=interrupted,
                             user_audio=(bytes(turn.user_audio), self.rate) if turn.user_audio else None)
        self.writer.put(record, key=turn.generation)
        self._spawn(self._notify(TurnFinished(record, turn.generation)))
        if record.ended and not interrupted:
            self._spawn(self._hang_up())

    async def _hang_up(self) -> None:
        try:
            await self.transport.hang_up()
        except Exception:  # noqa: BLE001 - the far end is going away anyway
            log.warning("hang-up on %s failed", self.name, exc_info=True)
