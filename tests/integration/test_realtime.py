"""Speech-to-speech through the official `openai` SDK's realtime client, against Forge's offline
Realtime-compatible server on loopback (and a fault server): no OpenAI key anywhere."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json

import openai
import pytest
import websockets

from realtime.client import RealtimeClient, RealtimeError
from server.main import create_app
from tests.conftest import wer
from tests.support.servers import free_port, serve
from voiceforge import clock
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.local import WhisperSTT
from voiceforge.store import conversations
from voiceforge.store.business import scheduled_appointments

pytestmark = pytest.mark.integration
KEY = "realtime-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("realtime")
    settings = load_settings(forge_api_key=KEY, forge_data_dir=folder, database_url=f"sqlite:///{folder / 'r.db'}")
    app = create_app(settings, roles=("realtime",))
    with serve(app, port=free_port()) as base:
        app.state.engine.warm_up()
        yield base.replace("http://", "ws://") + "/v1", app, settings


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, websocket_base_url=url)


def pcm24(speak, text: str, silence_s: float = 1.0) -> bytes:
    pcm, rate = speak(text)
    return resample(pcm, rate, 24000) + b"\x00\x00" * int(24000 * silence_s)


async def append(conn, pcm: bytes, realtime: bool = False) -> None:  # noqa: ANN001
    for i in range(0, len(pcm), 4800):  # 100 ms
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
        if realtime:
            await asyncio.sleep(0.1)


async def collect(conn, until: str = "response.done") -> tuple[list, bytes]:  # noqa: ANN001
    events, audio = [], bytearray()
    async for event in conn:
        if event.type == "response.output_audio.delta":
            audio += base64.b64decode(event.delta)
        else:
            events.append(event)
        if event.type == until:
            return events, bytes(audio)
    raise AssertionError("the session ended")


async def test_a_spoken_turn_in_audio_and_transcript_out(server, speak):
    url, app, _ = server
    async with sdk(url).realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "threshold": 0.6, "silence_duration_ms": 400, "prefix_padding_ms": 300}}}})
        await append(conn, pcm24(speak, "How many customers are there?"))
        events, audio = await collect(conn)
    kinds = [e.type for e in events]
    for expected in ("session.updated", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                     "response.created", "response.output_audio_transcript.done", "response.done"):
        assert expected in kinds, (expected, kinds)
    heard = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed").transcript
    assert wer("How many customers are there?", heard) <= 0.2
    said = next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
    assert said == "The answer is 40." and events[-1].response.status == "completed"
    back = (await WhisperSTT(app.state.engine.settings.forge_cache_dir, window_s=30).transcribe(audio, 24000)).text
    assert wer(said, back) <= 0.25, back


async def test_semantic_vad_waits_through_a_pause_mid_sentence(server, speak):
    url, _, _ = server
    first, rest = "I would like to book an appointment for", "next Monday at ten in the morning."
    async with sdk(url).realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "semantic_vad"}}}})
        await append(conn, pcm24(speak, first, silence_s=0.9) + pcm24(speak, rest, silence_s=2.5), realtime=True)
        events, _ = await collect(conn)
    heard = [e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(heard) == 1 and wer(f"{first} {rest}", heard[0]) <= 0.2, heard
    assert sum(e.type == "input_audio_buffer.speech_stopped" for e in events) == 1


async def test_a_declared_tool_is_surfaced_and_its_output_answered(server):
    url, _, _ = server
    tool = {"type": "function", "name": "lookup_customer", "description": "Find a customer.",
            "parameters": {"type": "object", "properties": {"customer_id": {"type": "integer"}}}}
    async with sdk(url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "tools": [tool],
                                           "audio": {"input": {"turn_detection": None}}})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look up customer number three."}]})
        await conn.response.create()
        events, _ = await collect(conn)
        call = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert call.name == "lookup_customer" and json.loads(call.arguments) == {"customer_id": 3}
        output = {"customer_id": 3, "name": "Test Person", "summary": "I found Test Person from your own system."}
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                  "output": json.dumps(output)})
        await conn.response.create()
        events, audio = await collect(conn)
    said = next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
    assert said == "I found Test Person from your own system." and len(audio) > 24000  # the client's answer, spoken


async def test_speech_over_a_reply_cancels_it_and_truncate_is_acknowledged(server, speak):
    url, app, _ = server
    busy = next(c for c in range(1, 41) if scheduled_appointments(app.state.engine.db, c)[1])
    async with sdk(url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": f"What appointments does customer number {busy} have?"}]})
        await conn.response.create()
        item_id, deltas, started = None, 0, False
        async for event in conn:
            if event.type == "response.output_item.added":
                item_id = event.item.id
            if event.type == "response.output_audio.delta":
                deltas += 1
                if deltas == 40:  # 0.8 s into the answer, the user talks over it
                    asyncio.create_task(append(conn, pcm24(speak, "Wait, stop please.", 0.8), realtime=True))
            if event.type == "input_audio_buffer.speech_started":
                started = True
            if event.type == "response.done":
                break
        assert started and event.response.status == "cancelled"
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=800)
        async for event in conn:
            if event.type == "conversation.item.truncated":
                assert event.item_id == item_id and event.audio_end_ms == 800
                break


async def test_forges_session_runs_tools_stores_turns_and_rolls_over_with_context(server):
    url, app, settings = server
    engine = Engine(settings.model_copy(update={"forge_realtime_url": url}), db=app.state.engine.db)
    session = RealtimeClient(engine, "customer_service", server_vad=False, max_session_s=0.0)
    before = len(conversations.list_conversations(engine.db))
    async with session:
        first = await session.say("How many customers are there?")
        second = await session.say("Look up customer number three.")  # a new session: max_session_s=0
    assert first.reply == "The answer is 40." and first.tool_calls[0]["name"] == "run_sql"
    assert second.tool_calls[0]["arguments"] == {"customer_id": 3} and "customer number 3" in second.reply
    assert second.timings_ms["first_audio_delta"] > 0 and len(second.audio) > 24000
    stored = conversations.turns_of(engine.db, session.pipeline.conversation_id)
    assert [t["user_text"] for t in stored] == ["How many customers are there?", "Look up customer number three."]
    assert stored[1]["tool_calls"][0]["name"] == "lookup_customer"
    assert conversations.get_conversation(engine.db, session.pipeline.conversation_id)["channel"] == "realtime"
    assert len(conversations.list_conversations(engine.db)) == before + 1  # the server did not store it again


@pytest.fixture
def fault_server():
    """Speaks just enough Realtime for one answer; the second request gets an error event and a dropped socket."""
    answered = {"n": 0}

    async def handler(ws) -> None:  # noqa: ANN001
        await ws.send(json.dumps({"type": "session.created", "event_id": "e0", "session": {"type": "realtime"}}))
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] != "response.create":
                continue
            answered["n"] += 1
            if answered["n"] > 1:
                await ws.send(json.dumps({"type": "error", "event_id": "e9", "error": {
                    "type": "server_error", "code": "overloaded", "message": "the server is overloaded"}}))
                await ws.close(code=1011)
                return
            for event_out in (
                {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
                {"type": "response.output_audio_transcript.done", "response_id": "resp_1", "item_id": "i1",
                 "output_index": 0, "content_index": 0, "transcript": "First answer."},
                {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}},
            ):
                await ws.send(json.dumps({"event_id": "e1", **event_out}))

    async def run():  # noqa: ANN202
        port = free_port()
        async with websockets.serve(handler, "127.0.0.1", port):
            yield f"ws://127.0.0.1:{port}/v1"

    return run


async def test_an_error_event_and_a_dropped_socket_are_clear_and_lose_nothing(fault_server, tmp_path):
    settings = load_settings(forge_api_key=KEY, forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'f.db'}")
    engine = Engine(settings)
    async for url in fault_server():
        session = RealtimeClient(engine, "friendly_guide", sdk=sdk(url), model="gpt-realtime", server_vad=False)
        async with session:
            first = await session.say("Hello")
            with pytest.raises(RealtimeError, match="lost|closed"):
                await session.say("And another thing")
    assert first.reply == "First answer."
    stored = conversations.turns_of(engine.db, session.pipeline.conversation_id)
    assert [t["user_text"] for t in stored] == ["Hello", "And another thing"]  # the dropped turn is kept
    assert "overloaded" in (stored[1]["error"] or "") or "lost" in (stored[1]["error"] or "")


async def test_azure_settings_reach_the_azure_url_shape(server):
    url, _, _ = server
    base = url.rsplit("/v1", 1)[0]
    client = openai.AsyncAzureOpenAI(azure_endpoint=base.replace("ws://", "http://"), api_key=KEY,
                                     api_version="2025-08-28", websocket_base_url=base + "/openai")
    async with client.realtime.connect(model="my-realtime-deployment") as conn:
        created = await conn.recv()
    assert created.type == "session.created" and created.session.model == "my-realtime-deployment"
    with pytest.raises(Exception):  # noqa: B017 - the wrong key: the handshake is refused (401)
        bad = openai.AsyncAzureOpenAI(azure_endpoint=base.replace("ws://", "http://"), api_key="wrong",
                                      api_version="2025-08-28", websocket_base_url=base + "/openai")
        async with bad.realtime.connect(model="x") as conn:
            await conn.recv()


async def test_a_phone_call_over_realtime_with_mulaw_passthrough(server, speak, tmp_path):
    from server.main import create_app as sidecar_app
    from voiceforge.audio.codecs import ulaw_to_pcm16
    from voiceforge.telephony.simulator import simulate_call

    url, app, _ = server
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(forge_api_key=KEY, forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'p.db'}",
                             public_base_url=base, twilio_auth_token="rt-phone-token", forge_realtime_phone=True,
                             forge_realtime_url=url)
    sidecar = sidecar_app(settings)
    with serve(sidecar, port=port):
        result = await simulate_call(base, "rt-phone-token", [speak("How many customers are there?"),
                                                               speak("Thanks, goodbye.")], api_key=KEY, timeout_s=120)
    first, last = result["turns"]
    assert wer("How many customers are there?", first["transcript"]) <= 0.2
    assert first["reply"] == "The answer is 40." and first["tool_calls"][0]["name"] == "run_sql"
    assert first["latency_ms"] is not None and first["latency_ms"] < 6000
    heard = (await WhisperSTT(settings.forge_cache_dir, window_s=30).transcribe(ulaw_to_pcm16(result["_audio"][0]), 8000)).text
    assert wer("The answer is 40.", heard) <= 0.25, heard
    assert last["tool_calls"][0]["name"] == "end_call" and result["status"] == "completed"


async def test_recordings_keep_both_sides_of_a_realtime_turn(server, speak, tmp_path):
    url, app, settings = server
    local = settings.model_copy(update={"forge_realtime_url": url, "enable_recordings": True, "forge_data_dir": tmp_path})
    engine = Engine(local, db=app.state.engine.db)
    async with RealtimeClient(engine, "customer_service", server_vad=False) as session:
        pcm, rate = speak("How many customers are there?")
        await session.send_audio(pcm, rate)
        await session.commit()
        turn = await session.next_turn()
    assert turn.reply == "The answer is 40."
    (stored,) = conversations.turns_of(engine.db, session.pipeline.conversation_id)
    from pathlib import Path

    from voiceforge.audio.codecs import unwrap_wav

    user = unwrap_wav(await asyncio.to_thread(Path(stored["user_audio_path"]).read_bytes))
    reply = unwrap_wav(await asyncio.to_thread(Path(stored["reply_audio_path"]).read_bytes))
    assert user[1] == reply[1] == 24000 and len(user[0]) > 24000 * 2 and len(reply[0]) > 24000


def test_forge_realtime_prompts_and_the_assistant_with_a_wav(tmp_path, monkeypatch, capsys, speak):
    from forge import cli
    from voiceforge.audio.codecs import wrap_wav
    from voiceforge.config import get_settings

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    assert cli.main(["--realtime", "--prompts", "How many customers are there?|Look up customer number three.",
                     "--json", "--save-audio", str(tmp_path / "replies")]) == 0
    first, second = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert first["reply"] == "The answer is 40." and second["tool_calls"][0]["name"] == "lookup_customer"
    assert (tmp_path / "replies" / "reply-0.wav").stat().st_size > 20_000
    wav = tmp_path / "q.wav"
    wav.write_bytes(wrap_wav(*speak("How many customers are there?")))
    assert cli.main(["--wav", str(wav), "--json"]) == 0  # `forge` with no prompt: the push-to-talk assistant
    spoken = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert wer("How many customers are there?", spoken["transcript"]) <= 0.2 and spoken["reply"] == "The answer is 40."


@pytest.fixture
def booking_model():
    """A Realtime "model" that books at once, speaking the GA wire (OpenAI Realtime API reference).

    Every answer to a user turn is a ``schedule_appointment`` call; after its output comes back
    it asks for a yes when the output says nothing was done, else says it is booked. For audio
    (``input_audio_buffer.commit``) it sends the input transcript 300 ms after the function call,
    as the real service may: transcription runs alongside the response.
    """
    outputs: list[dict] = []
    friday = clock.now() + dt.timedelta(days=(4 - clock.now().weekday()) % 7 or 7)
    # 1 PM: the mock data books on the hour but never at 1 PM, so the slot is free whatever the date
    arguments = json.dumps({"customer_id": 6, "starts_at": friday.strftime("%Y-%m-%dT13:00"), "service": "repair"})

    async def handler(ws) -> None:  # noqa: ANN001
        sent = iter(range(1, 10_000))

        async def send(event: dict) -> None:
            await ws.send(json.dumps({"event_id": f"evt_{next(sent)}", **event}))

        async def transcript_later() -> None:
            await asyncio.sleep(0.3)
            await send({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_in",
                        "content_index": 0, "transcript": "Yes, please."})

        await send({"type": "session.created", "session": {"type": "realtime"}})
        committed, answering, later = False, False, None
        async for raw in ws:
            event = json.loads(raw)
            kind = event["type"]
            if kind == "input_audio_buffer.commit":
                committed = True
            elif kind == "conversation.item.create" and event["item"]["type"] == "function_call_output":
                outputs.append(json.loads(event["item"]["output"]))
                answering = True
            elif kind == "response.create" and answering:
                answering = False
                said = "Shall I book a repair for Friday at 1 PM?" if outputs[-1].get("result", {}).get(
                    "needs_confirmation") else "You're booked for Friday at 1 PM."
                await send({"type": "response.created", "response": {"id": "resp_say", "status": "in_progress"}})
                await send({"type": "response.output_audio_transcript.done", "response_id": "resp_say",
                            "item_id": "item_say", "output_index": 0, "content_index": 0, "transcript": said})
                await send({"type": "response.done", "response": {"id": "resp_say", "status": "completed",
                                                                   "output": []}})
            elif kind == "response.create":
                call = {"type": "function_call", "id": "item_call", "call_id": f"call_{len(outputs)}",
                        "name": "schedule_appointment", "arguments": arguments, "status": "completed"}
                await send({"type": "response.created", "response": {"id": "resp_call", "status": "in_progress"}})
                await send({"type": "response.function_call_arguments.done", "response_id": "resp_call",
                            "item_id": "item_call", "output_index": 0, "call_id": call["call_id"],
                            "name": "schedule_appointment", "arguments": arguments})
                await send({"type": "response.done", "response": {"id": "resp_call", "status": "completed",
                                                                  "output": [call]}})
                if committed:
                    later = asyncio.create_task(transcript_later())
                    committed = False
        if later is not None:
            later.cancel()

    async def run():  # noqa: ANN202
        port = free_port()
        async with websockets.serve(handler, "127.0.0.1", port):
            yield f"ws://127.0.0.1:{port}/v1", outputs

    return run


async def test_a_realtime_models_booking_waits_for_the_callers_yes(booking_model, tmp_path):
    """A tool declared ``confirm = true`` runs on a Realtime model's call only after the caller's yes
    to the agent's question, as in the cascade; the yes may be transcribed after the call comes."""
    settings = load_settings(forge_api_key=KEY, forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'b.db'}")
    engine = Engine(settings)
    engine.ensure_mock_data()
    async for url, outputs in booking_model():
        session = RealtimeClient(engine, "customer_service", sdk=sdk(url), model="gpt-realtime", server_vad=False)
        async with session:
            asked = await session.say("Book me a repair on Friday at 1 pm, I'm customer 6.")
            assert outputs[-1]["result"]["needs_confirmation"] is True and asked.reply.startswith("Shall I book")
            assert scheduled_appointments(engine.business_db, 6)[1] == []  # nothing was booked
            await session.send_audio(b"\x00\x00" * 24000)  # push to talk: the words come as a late transcript
            await session.commit()
            booked = await session.next_turn(timeout_s=10)
    assert booked.user_text == "Yes, please." and booked.reply.startswith("You're booked")
    assert outputs[-1].get("result", {}).get("service") == "repair", outputs[-1]
    (appointment,) = scheduled_appointments(engine.business_db, 6)[1]
    assert appointment["service"] == "repair" and appointment["starts_at"].endswith("T13:00")
    assert booked.tool_calls[0]["name"] == "schedule_appointment" and booked.tool_calls[0]["error"] is None
