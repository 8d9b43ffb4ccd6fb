"""Fuzzing the inputs the internet controls: no exception escapes but the typed ones.

Bounded in time (a fixed number of examples each, no per-example deadline) so that CI stays fast;
``HYPOTHESIS_PROFILE=deep`` runs many more.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.transports.browser import BrowserProtocolError, BrowserSocket
from tests.support.fakes import FakeSTT, RecordingTransport, ScriptedLLM, ToneTTS
from voiceforge.audio.codecs import AudioFormatError, ulaw_to_pcm16, unwrap_wav, wrap_wav
from voiceforge.config import load_settings
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.store.db import Database
from voiceforge.telephony import media
from voiceforge.tools import build_registry
from voiceforge.tools.registry import ToolError, _validate

pytestmark = pytest.mark.unit
settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
EVENTS = ["connected", "start", "media", "dtmf", "mark", "stop", "clear", "teleport", ""]
twilio_messages = st.builds(
    lambda event, body, extra: {"event": event, **({event: body} if event else {}), **extra},
    st.sampled_from(EVENTS), json_values,
    st.dictionaries(st.sampled_from(["streamSid", "sequenceNumber", "media", "start", "mark"]), json_values, max_size=3),
)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), twilio_messages.map(json.dumps),
                 st.integers(1, 400).map(lambda n: "[" * n + "]" * n)))
def test_media_parse_raises_only_media_stream_errors(message):
    try:
        event = media.parse(message)
    except media.MediaStreamError:
        return
    assert event is None or isinstance(event, media.Connected | media.Start | media.Media | media.Dtmf | media.Mark
                                       | media.Stop)


@given(st.binary(max_size=2000), st.sampled_from(["inbound", "outbound", 7, None]))
def test_inbound_media_reaches_the_loop_without_error(payload, track):
    message = json.dumps({"event": "media", "media": {"payload": base64.b64encode(payload).decode(), "track": track}})
    event = media.parse(message)
    asyncio.run(_feed(ulaw_to_pcm16(event.payload)))


_loop_db = None


async def _feed(pcm16: bytes) -> None:
    global _loop_db
    if _loop_db is None:
        import tempfile

        _loop_db = Database(f"sqlite:///{tempfile.mkdtemp()}/fuzz.db")
        _loop_db.migrate()
    engine = Engine(load_settings(), stt=FakeSTT(default=""), llm=ScriptedLLM(), tts=ToneTTS(), db=_loop_db)
    loop = ConversationLoop(engine.pipeline("friendly_guide"), RecordingTransport(), greet=False)
    await loop.on_audio(pcm16, 8000)
    await loop.stop()


def _wav_variants(data: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=6).map(
        lambda edits: bytes(_apply(bytearray(data), edits)))


def _apply(data: bytearray, edits) -> bytearray:  # noqa: ANN001
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    return data


VALID = wrap_wav(b"\x01\x02" * 400, 16000)


@given(st.one_of(st.binary(max_size=200), _wav_variants(VALID),
                 st.integers(0, 2**32 - 1).map(lambda rate: VALID[:24] + struct.pack("<I", rate) + VALID[28:])))
def test_the_wav_reader_raises_only_audio_format_errors(data):
    try:
        pcm, rate = unwrap_wav(data, max_seconds=60, strict=True)
    except AudioFormatError:
        return
    assert 8000 <= rate <= 48000 and len(pcm) % 2 == 0


class _Socket:
    """What BrowserSocket needs of a websocket, for driving its parser directly."""

    application_state = None

    async def send_text(self, text: str) -> None:
        pass


ws_messages = st.one_of(
    st.builds(lambda b: {"type": "websocket.receive", "bytes": b}, st.binary(max_size=400)),
    st.builds(lambda t: {"type": "websocket.receive", "text": t}, st.text(max_size=200)),
    st.builds(lambda v: {"type": "websocket.receive", "text": json.dumps(v)},
              st.dictionaries(st.sampled_from(["type", "data", "text", "name", "sample_rate"]),
                              json_values | st.sampled_from(["audio_chunk", "text_input", "mark", "stop", "start"]),
                              max_size=4)),
)


@given(ws_messages)
def test_browser_messages_raise_only_protocol_errors(message):
    transport = BrowserSocket(_Socket(), 16000)
    try:
        asyncio.run(transport._event(message))
    except (BrowserProtocolError, StopAsyncIteration):
        pass


_registry = build_registry()


@given(st.sampled_from(_registry.names()), st.dictionaries(st.text(max_size=15), json_values, max_size=5))
def test_tool_arguments_are_validated_with_tool_errors_only(name, arguments):
    tool = _registry.get(name)
    for key in list(tool.parameters["properties"])[:2]:
        arguments.setdefault(key, "7")
    try:
        _validate(tool, arguments)
    except ToolError:
        pass
