"""The Twilio media stream as a transport: μ-law 8 kHz JSON frames in and out, clear, marks.

Source: Twilio docs, "Media Streams - WebSocket Messages" (bidirectional streams). Inbound
``media`` on the ``inbound`` track becomes :class:`AudioIn` at 8000 Hz (other tracks are the
agent's own audio and are ignored), ``mark`` becomes :class:`MarkPlayed`, ``dtmf`` becomes
:class:`DtmfIn`, ``stop`` ends the stream, unknown events are skipped. Outbound frames are
20 ms of μ-law (160 bytes), base64 in a ``media`` message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import WebSocket

from server.transports import close, send
from voiceforge.audio.codecs import ulaw_to_pcm16
from voiceforge.telephony import media
from voiceforge.transport import AudioIn, DtmfIn, InboundEvent, MarkPlayed, Transport

log = logging.getLogger("forge.sidecar.twilio")

TWILIO_RATE = 8000
"""Media streams carry μ-law at 8000 Hz (Twilio Media Streams docs)."""


async def _receive_text(ws: WebSocket) -> str | None:
    """The next message (text, or bytes for the codec to refuse), or None when the socket closed."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    return message["text"] if message.get("text") is not None else message.get("bytes", b"")


async def receive_start(ws: WebSocket) -> media.Start | None:
    """Read up to and including ``start`` (``connected`` and unknown events are skipped).

    Returns:
        The Start event, or None when the socket closed first.

    Raises:
        MediaStreamError: a malformed message, or media, mark, dtmf or stop before start.
    """
    while (raw := await _receive_text(ws)) is not None:
        event = media.parse(raw)
        if isinstance(event, media.Start):
            return event
        if event is None or isinstance(event, media.Connected):
            continue
        raise media.MediaStreamError(f"{type(event).__name__.lower()} before start")
    return None


class TwilioMediaStream(Transport):
    """One call's bidirectional media stream.

    Args:
        ws: the accepted websocket.
        stream_sid: Twilio's stream SID (every outbound message names it).
        on_hang_up: started (not awaited) when the agent ends the call: the REST hang-up.
    """

    output_rate = TWILIO_RATE
    output_encoding = "ulaw"
    frame_ms = 20
    paced = True
    confirms_playback = True

    def __init__(self, ws: WebSocket, stream_sid: str, on_hang_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.ws, self.stream_sid = ws, stream_sid
        self._on_hang_up = on_hang_up

    async def _send(self, text: str) -> None:
        await send(self.ws, text)

    async def send_audio(self, frame: bytes, sample_rate: int) -> None:
        """Send 20 ms of μ-law at 8000 Hz (160 bytes) as a ``media`` message."""
        await self._send(media.media_message(self.stream_sid, frame))

    async def clear(self) -> None:
        """``clear``: Twilio drops its buffered audio and echoes every pending mark."""
        await self._send(media.clear_message(self.stream_sid))

    async def mark(self, name: str) -> None:
        """``mark``: Twilio echoes it once the audio sent before it has played."""
        await self._send(media.mark_message(self.stream_sid, name))

    async def hang_up(self) -> None:
        """End the call: close the stream now (the call ends with it) and update it over REST."""
        if self._on_hang_up is not None:
            await self._on_hang_up()
        await close(self.ws)  # nothing when the caller hung up first

    async def events(self) -> AsyncIterator[InboundEvent]:
        """Inbound events after ``start``, until ``stop`` or the socket closes.

        Raises:
            MediaStreamError: a malformed message, or a second ``start``.
        """
        while (raw := await _receive_text(self.ws)) is not None:
            event = media.parse(raw)
            if isinstance(event, media.Media):
                if event.track == "inbound":
                    yield AudioIn(ulaw_to_pcm16(event.payload), TWILIO_RATE)
            elif isinstance(event, media.Mark):
                yield MarkPlayed(event.name)
            elif isinstance(event, media.Dtmf):
                yield DtmfIn(event.digit)
            elif isinstance(event, media.Stop):
                return
            elif isinstance(event, media.Start):
                raise media.MediaStreamError("second start on one stream")
