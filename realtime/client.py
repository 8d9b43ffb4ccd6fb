"""A conversation over a Realtime API session: OpenAI, Azure OpenAI, or Forge's offline server.

``RealtimeClient`` connects with the official ``openai`` SDK (``client.realtime.connect``),
configures the session from the persona (instructions, voice, tools from the same registry as
the cascade, server VAD from settings or push-to-talk), runs the tools the model calls and sends
their output back, and stores every turn like any other conversation: transcript, reply, tool
calls, timings from the end of the user's speech, and audio when recordings are on. Before the
service's 60-minute session cap it rolls over to a new session, carrying the conversation's
summary and last turns.

Events (GA names): ``input_audio_buffer.speech_started`` / ``speech_stopped``,
``conversation.item.input_audio_transcription.completed``, ``response.output_audio.delta``,
``response.output_audio_transcript.delta`` / ``done``, ``response.function_call_arguments.done``,
``response.done``, ``error``. Audio is ``audio/pcm`` (24 kHz PCM16) or ``audio/pcmu`` (μ-law 8 kHz,
Twilio's, passed through untouched).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai

from realtime.turns import PCM_RATE, RealtimeTurn, store_turn
from voiceforge.audio.resample import StreamResampler
from voiceforge.config import Settings
from voiceforge.engine import Engine
from voiceforge.turn import Timeline, TurnPipeline

log = logging.getLogger("forge.realtime")
SESSION_CAP_S = 60 * 60
"""The Realtime API ends a session after 60 minutes (OpenAI Realtime docs); Forge rolls over before."""


TRANSCRIPT_WAIT_S = 3.0
"""How long a tool declared ``confirm = true`` waits for the caller's transcript before the confirmation
gate reads it. The Realtime API transcribes input asynchronously ("transcription runs asynchronously
with response creation", OpenAI Realtime guide), so the model's function call may come first."""


class RealtimeError(RuntimeError):
    """The Realtime service sent an ``error`` event or dropped the connection; the message says which."""


OFFLINE_MODEL = "forge-offline"
"""The model name Forge's clients ask Forge's own offline Realtime server for. With it they add
``store=false`` to the URL: the client stores the conversation (under its own channel), so the
server does not store it a second time."""


def make_client(settings: Settings) -> tuple[openai.AsyncOpenAI, str]:
    """The SDK client and model for Realtime: OpenAI or Azure when configured, else Forge's offline server.

    Returns:
        (the official SDK's client, model or Azure deployment).
    """
    if settings.use_azure and settings.openai_configured:
        client = openai.AsyncAzureOpenAI(azure_endpoint=settings.azure_openai_endpoint,
                                         api_key=settings.azure_openai_api_key, api_version=settings.azure_api_version,
                                         max_retries=0)
        return client, settings.azure_openai_deployment or settings.openai_realtime_model
    if settings.openai_api_key:
        return openai.AsyncOpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                                  max_retries=0), settings.openai_realtime_model
    key, _ = settings.ensure_api_key()
    return openai.AsyncOpenAI(api_key=key, websocket_base_url=settings.forge_realtime_url, max_retries=0), OFFLINE_MODEL


class RealtimeClient:
    """One speech-to-speech conversation, as a client of a Realtime service.

    Args:
        engine: Forge's engine (settings, prices, pipelines).
        persona_id: the persona (instructions, voice, tools).
        channel: stored as the conversation's channel ("realtime", "phone").
        sdk: the official SDK's client (default :func:`make_client`); ``model`` goes with it.
        audio_format: "audio/pcm" (24 kHz) or "audio/pcmu" (μ-law 8 kHz), both ways.
        server_vad: let the service find turns (True) or push-to-talk with :meth:`commit` (False).
        on_event: called with every server event (a UI, the phone bridge).
        max_session_s: roll over to a new session after this long (before the 60-minute cap).
        pipeline: the conversation's turn pipeline (default: a new one for ``persona_id``).
        voice: the service's output voice, overriding the persona's ``openai`` voice.
        vad_threshold / silence_ms: server VAD settings (default ``REALTIME_VAD_THRESHOLD``,
            0.3–0.95, and ``REALTIME_SILENCE_MS``).

    Latency is measured as on every other wire: the zero of a turn's timeline is the moment
    the last voiced audio was appended, found from ``speech_stopped``'s ``audio_end_ms`` (which
    includes the VAD's silence, per the OpenAI Realtime reference) minus ``silence_duration_ms``;
    ``first_frame_sent`` is marked by the wire (:meth:`mark_audio_sent`).
    """

    def __init__(self, engine: Engine, persona_id: str | None = None, *, channel: str = "realtime",
                 sdk: openai.AsyncOpenAI | None = None, model: str | None = None,
                 audio_format: str = "audio/pcm", server_vad: bool = True,
                 on_event: Callable[[Any], Awaitable[None]] | None = None,
                 max_session_s: float = SESSION_CAP_S - 5 * 60, pipeline: TurnPipeline | None = None,
                 voice: str | None = None, vad_threshold: float | None = None,
                 silence_ms: int | None = None) -> None:
        self.engine, self.settings = engine, engine.settings
        self.pipeline = pipeline or engine.pipeline(persona_id, channel=channel)
        if sdk is None:
            sdk, default_model = make_client(self.settings)
            model = model or default_model
        self.sdk, self.model = sdk, model or self.settings.openai_realtime_model
        self.audio_format, self.server_vad = audio_format, server_vad
        self.voice = voice
        self.vad_threshold = vad_threshold if vad_threshold is not None else self.settings.realtime_vad_threshold
        self.silence_ms = silence_ms or self.settings.realtime_silence_ms
        self._appended_ms = 0.0  # audio appended to the service's input buffer this session, ms
        self._append_clock: collections.deque[tuple[float, float]] = collections.deque(maxlen=4000)
        self.on_event, self.max_session_s = on_event, max_session_s
        self.connection: Any = None
        self._manager: Any = None
        self._receiver: asyncio.Task | None = None
        self._started = 0.0
        self._turn = RealtimeTurn(audio_format=audio_format)
        self._timeline = Timeline()
        self._done: asyncio.Queue[RealtimeTurn] = asyncio.Queue()
        self._resampler: StreamResampler | None = None
        self._user_audio = bytearray()  # what the user sent this turn, when recordings are on
        self.closed = False
        self.failure: RealtimeError | None = None
        self._failed = asyncio.Event()
        self._transcribed = asyncio.Event()  # this turn's input transcript has come
        self._tool_tasks: set[asyncio.Task] = set()

    # --- session --------------------------------------------------------------------------------
    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def session_config(self) -> dict[str, Any]:
        """The ``session.update`` body: instructions, voice, formats, turn detection, tools."""
        persona = self.pipeline.persona
        fmt = {"type": "audio/pcmu"} if self.audio_format == "audio/pcmu" else {"type": "audio/pcm", "rate": PCM_RATE}
        detection = {"type": "server_vad", "threshold": self.vad_threshold,
                     "silence_duration_ms": self.silence_ms,
                     "prefix_padding_ms": self.settings.realtime_prefix_padding_ms,
                     "create_response": True, "interrupt_response": True} if self.server_vad else None
        summary = self.pipeline.summary
        instructions = persona.prompt_for("phone" if self.pipeline.channel == "phone" else "realtime")
        instructions += ("\n\nBefore a tool that looks something up, say a short filler such as "
                         "\"One moment while I check that.\" so the caller is never left in silence.")
        if summary:
            instructions += "\n\nEarlier in this conversation: " + summary
        tools = [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                 for t in self.pipeline.tools]
        return {"type": "realtime", "instructions": instructions, "output_modalities": ["audio"],
                "audio": {"input": {"format": fmt, "turn_detection": detection,
                                    "transcription": {"model": "whisper-1"}},
                          "output": {"format": fmt, "voice": self.voice or persona.voice.get("openai")
                                     or self.settings.realtime_voice}},
                "tools": tools, "tool_choice": "auto"}

    async def connect(self) -> None:
        """Open the session and configure it (context carried when rolling over).

        Raises:
            RealtimeError: the service could not be reached or refused the session.
        """
        self._manager = self.sdk.realtime.connect(
            model=self.model, extra_query={"store": "false"} if self.model == OFFLINE_MODEL else {})
        try:
            self.connection = await self._manager.__aenter__()
        except Exception as exc:  # noqa: BLE001 - connect errors come from several libraries
            raise RealtimeError(f"the Realtime service could not be reached ({type(exc).__name__})") from None
        self._started = time.monotonic()
        self._appended_ms = 0.0
        self._append_clock.clear()
        await self.connection.session.update(session=self.session_config())
        for user, assistant in self.pipeline.recent_exchanges():  # a rolled-over session keeps its recent context
            for role, text in (("user", user), ("assistant", assistant)):
                if text:
                    await self.connection.conversation.item.create(item={
                        "type": "message", "role": role,
                        "content": [{"type": "input_text" if role == "user" else "output_text", "text": text}]})
        self._receiver = asyncio.create_task(self._receive())

    async def close(self) -> None:
        """End the session (what was said so far is stored)."""
        self.closed = True
        for task in list(self._tool_tasks):
            task.cancel()
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._receiver
        if self._manager is not None:
            with contextlib.suppress(Exception):
                await self._manager.__aexit__(None, None, None)

    async def _rollover_if_due(self) -> None:
        if time.monotonic() - self._started < self.max_session_s:
            return
        log.info("rolling the Realtime session over before its time cap")
        await self.close()
        self.closed = False
        await self.connect()

    # --- sending --------------------------------------------------------------------------------
    async def send_audio(self, audio: bytes, sample_rate: int = PCM_RATE) -> None:
        """Append microphone audio: PCM16 at ``sample_rate`` (resampled to 24 kHz), or μ-law for audio/pcmu."""
        self._raise_failure()
        if self.audio_format == "audio/pcm":
            if self._resampler is None or self._resampler.in_rate != sample_rate:
                self._resampler = StreamResampler(sample_rate, PCM_RATE)
            audio = self._resampler.process(audio)
        if self.settings.enable_recordings:
            self._user_audio += audio
        await self.connection.input_audio_buffer.append(audio=base64.b64encode(audio).decode())
        self._appended_ms += len(audio) / (8 if self.audio_format == "audio/pcmu" else PCM_RATE * 2 / 1000)
        self._append_clock.append((self._appended_ms, time.perf_counter()))

    def _speech_end_clock(self, audio_end_ms: float | None) -> float | None:
        """perf_counter time at which the last voiced audio of a server-VAD turn was appended."""
        if audio_end_ms is None or not self._append_clock:
            return None
        voiced_end = audio_end_ms - (self.silence_ms if self.server_vad else 0)
        for end_ms, at in self._append_clock:
            if end_ms >= voiced_end:
                return at - (end_ms - voiced_end) / 1000
        return None

    def mark_audio_sent(self) -> None:
        """The wire sent the first frame of the answer: ``first_frame_sent`` on the turn's timeline."""
        self._timeline.mark("first_frame_sent")

    async def commit(self) -> None:
        """Push-to-talk release: the appended audio is the user's turn; ask for the answer."""
        self._timeline = Timeline()
        self._timeline.set("speech_end", 0.0)
        self._transcribed = asyncio.Event()  # the committed audio's transcript is still to come
        await self.connection.input_audio_buffer.commit()
        await self.connection.response.create()

    async def say(self, text: str) -> RealtimeTurn:
        """A typed turn: send ``text`` and wait for the whole answer (tools included)."""
        await self.send_text(text)
        return await self.next_turn()

    async def send_text(self, text: str) -> None:
        """A typed turn: send ``text`` and ask for the answer (it arrives as events and a stored turn).

        Raises:
            RealtimeError: the session has failed.
        """
        await self._rollover_if_due()
        self._raise_failure()
        self._turn = RealtimeTurn(user_text=text, audio_format=self.audio_format)
        self._transcribed = asyncio.Event()
        self._transcribed.set()  # typed: the words are known already
        self._timeline = Timeline()
        self._timeline.set("speech_end", 0.0)
        await self.connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
        await self.connection.response.create()

    async def next_turn(self, timeout_s: float = 120.0) -> RealtimeTurn:
        """The next finished (stored) turn.

        Raises:
            RealtimeError: the service failed before the turn finished.
            TimeoutError: no turn within ``timeout_s``.
        """
        getter = asyncio.create_task(self._done.get())
        watcher = asyncio.create_task(self._watch_failure())
        try:
            done, _ = await asyncio.wait({getter, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the caller is cancelled: no task outlives the wait
            for task in (getter, watcher):
                if not task.done():
                    task.cancel()
        if getter in done and self.failure is None:
            return getter.result()
        self._raise_failure()
        raise TimeoutError("no Realtime turn finished in time")

    async def _watch_failure(self) -> None:
        await self._failed.wait()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def greet(self, text: str) -> None:
        """Have the agent speak first (a phone greeting): a response with instructions, no user turn.

        The greeting's timeline has no ``speech_end``: nobody stopped speaking, so it is stored
        with no voice-to-voice time and stays out of the latency figures.
        """
        self._timeline = Timeline()
        await self.connection.response.create(
            response={"instructions": f"Greet the caller with exactly these words: {text}"})

    async def cancel(self) -> None:
        """Stop the answer in progress (``response.cancel``)."""
        await self.connection.response.cancel()

    async def truncate(self, audio_end_ms: int) -> None:
        """Tell the service how much of the current answer was heard (``conversation.item.truncate``)."""
        if self._turn.item_id:
            await self.connection.conversation.item.truncate(item_id=self._turn.item_id, content_index=0,
                                                             audio_end_ms=max(0, int(audio_end_ms)))

    @property
    def conversation_id(self) -> int | None:
        """The stored conversation's id (None until its first turn is stored)."""
        return self.pipeline.conversation_id

    @property
    def ended(self) -> bool:
        """The model called end_call in this conversation."""
        return self.pipeline.ended

    # --- receiving ------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[RealtimeTurn]:
        """Finished turns, as they come."""
        while not self.closed:
            yield await self.next_turn(timeout_s=3600)

    async def _receive(self) -> None:  # noqa: C901 - one branch per event type
        try:
            async for event in self.connection:
                kind = event.type
                turn = self._turn
                if kind == "input_audio_buffer.speech_started":
                    if turn.response_id and not turn.reply:
                        turn.interrupted = True
                elif kind == "input_audio_buffer.speech_stopped":
                    self._turn = RealtimeTurn(audio_format=self.audio_format)
                    self._transcribed = asyncio.Event()
                    zero = self._speech_end_clock(getattr(event, "audio_end_ms", None))
                    self._timeline = Timeline(zero) if zero else Timeline()
                    self._timeline.set("speech_end", 0.0)
                    if zero:
                        self._timeline.mark("endpointing_ms")
                elif kind == "conversation.item.input_audio_transcription.completed":
                    turn.user_text = event.transcript
                    self._transcribed.set()
                    self._timeline.mark("stt_final")
                elif kind == "response.created":
                    turn.response_id = event.response.id
                elif kind == "response.output_item.added" and getattr(event.item, "type", "") == "message":
                    turn.item_id = event.item.id
                elif kind == "response.output_audio.delta":
                    self._timeline.mark("first_audio_delta")
                    turn.audio += base64.b64decode(event.delta)
                elif kind == "response.output_audio_transcript.delta":
                    self._timeline.mark("first_transcript_delta")
                elif kind == "response.output_audio_transcript.done":
                    turn.reply = (turn.reply + " " + event.transcript).strip()
                elif kind == "response.function_call_arguments.done":
                    # In its own task: a tool that must hear the caller's yes may wait for the
                    # transcript, which comes through this very loop.
                    task = asyncio.create_task(self._run_tool(event, turn, self._transcribed))
                    self._tool_tasks.add(task)
                    task.add_done_callback(self._tool_tasks.discard)
                elif kind == "response.done":
                    await self._response_done(event.response)
                elif kind == "error":
                    turn.error = f"{event.error.code or event.error.type}: {event.error.message}"
                    log.warning("Realtime error event: %s", turn.error)
                if self.on_event is not None:
                    await self.on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a dropped socket, whichever library raised it
            self.failure = RealtimeError(f"the Realtime connection was lost ({type(exc).__name__})")
        else:
            if not self.closed:
                self.failure = RealtimeError("the Realtime service closed the session")
        if self.failure is not None and (self._turn.user_text or self._turn.reply):
            self._turn.error = self._turn.error or str(self.failure)
            await self._store(self._turn, interrupted=True, hand_over=False)  # stored; the caller gets the error
        if self.failure is not None:
            self._failed.set()  # only now: the caller's close() must not cut the store short

    async def _run_tool(self, event: Any, turn: RealtimeTurn, transcribed: asyncio.Event) -> None:
        """Run the model's tool call and send its output back; a confirmation-first tool waits for the caller's words."""
        try:
            arguments = json.loads(event.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"_invalid_json": event.arguments}
        self._timeline.mark("tool_start")
        tool = self.pipeline.registry.get(event.name)
        if tool is not None and tool.confirm is True and not transcribed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transcribed.wait(), TRANSCRIPT_WAIT_S)
        said_before = self.pipeline.recent_exchanges()
        asked = said_before[-1][1] if said_before else ""
        try:
            result = await self.pipeline.run_tool(event.name, arguments if isinstance(arguments, dict) else {},
                                                  exchange=(asked, turn.user_text or ""))
            self._timeline.mark("tool_end", once=False)
            turn.tool_calls.append({"name": event.name, "arguments": result.arguments, "result": result.result,
                                    "error": result.error, "duration_ms": round(result.duration_ms, 1)})
            await self.connection.conversation.item.create(
                item={"type": "function_call_output", "call_id": event.call_id, "output": result.for_llm()})
            await self.connection.response.create()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a socket closed under the answer; the receiver reports it
            log.warning("could not return the output of %s to the Realtime service: %s", event.name, exc)

    async def _response_done(self, response: Any) -> None:
        usage = getattr(response, "usage", None)
        if usage is not None:  # every response bills, the ones that only call a tool too
            self._turn.input_tokens += getattr(usage, "input_tokens", 0) or 0
            self._turn.output_tokens += getattr(usage, "output_tokens", 0) or 0
        output = list(response.output or [])
        if output and all(getattr(item, "type", "") == "function_call" for item in output) \
                and response.status == "completed":
            return  # the answer continues after the tool's output
        turn = self._turn
        await self._store(turn, interrupted=response.status == "cancelled" or turn.interrupted)

    async def _store(self, turn: RealtimeTurn, interrupted: bool, hand_over: bool = True) -> None:
        if not turn.has_content:
            return
        self._timeline.mark("turn_done")
        # Stage times count from the end of the user's speech; a greeting has none to count from.
        turn.timings_ms = dict(self._timeline.marks) if "speech_end" in self._timeline.marks else {}
        turn.interrupted = interrupted
        price = self.engine.prices.realtime(self.model, turn.input_tokens, turn.output_tokens,
                                            local=self.model == OFFLINE_MODEL)
        user_audio, self._user_audio = bytes(self._user_audio), bytearray()
        await store_turn(self.pipeline, turn, price, user_audio or None)
        self._turn = RealtimeTurn(audio_format=self.audio_format)
        if hand_over:
            await self._done.put(turn)
