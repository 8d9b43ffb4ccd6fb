"""A phone caller as Twilio would be, written from Twilio's documentation alone (not Forge's simulator).

- The voice webhook: ``POST`` form fields (CallSid, AccountSid, From, To, CallStatus, Direction)
  signed with ``X-Twilio-Signature`` (HMAC-SHA1 of the URL and sorted fields, computed with the
  twilio SDK's ``RequestValidator``); the TwiML answer is parsed for
  ``<Connect><Stream url=…><Parameter name=… value=…/></Stream></Connect>``.
- The media stream (Twilio "Media Streams - WebSocket Messages"): the upgrade carries the
  signature of the ``wss`` URL; Twilio sends ``connected``, ``start`` (streamSid, callSid,
  customParameters, mediaFormat audio/x-mulaw 8000 Hz mono), then ``media`` with 20 ms of
  base64 μ-law per message, ``dtmf``, ``mark`` echoes when playback reaches a mark, and ``stop``.
  It plays what it receives in real time, drops its buffer on ``clear`` and echoes at once the
  marks the clear flushed.

Times are taken where the caller is: the first agent audio it *received*, and the last voiced
frame it *sent*.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import httpx
import websockets
from twilio.request_validator import RequestValidator

FRAME = 160  # 20 ms of μ-law at 8 kHz, bytes


def ulaw(pcm16_8k: bytes) -> bytes:
    """PCM16 at 8 kHz → G.711 μ-law (the standard library's codec, not Forge's)."""
    import audioop  # noqa: PLC0415 - deprecated module, imported where used

    return audioop.lin2ulaw(pcm16_8k, 2)


@dataclass
class Heard:
    """What the caller received: (arrival time, μ-law bytes) per media message, marks, clears."""

    media: list[tuple[float, bytes]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)


class TwilioCaller:
    """One call into a sidecar at ``base`` (``http://127.0.0.1:port``) with Twilio's auth token ``token``."""

    def __init__(self, base: str, token: str, persona: str | None = None, caller: str = "+15551230001",
                 account_sid: str = "AC" + "0" * 32) -> None:
        self.base, self.token, self.persona, self.caller = base, token, persona, caller
        self.account_sid = account_sid
        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.heard = Heard()
        self.started_at = 0.0
        self._ws = None
        self._seq = 0
        self._chunk = 0
        self._sent_ms = 0
        self._reader: asyncio.Task | None = None
        self._playing_until = 0.0
        self.sent_at: list[float] = []
        """``time.perf_counter()`` at which each 20 ms frame of the last :meth:`send_audio` was sent."""

    def _sign(self, url: str, params: dict[str, str]) -> str:
        return RequestValidator(self.token).compute_signature(url, params)

    async def dial(self, webhook_via: str | None = None, stream_via: str | None = None) -> None:
        """The voice webhook, then the media stream's ``connected`` and ``start``.

        ``webhook_via`` and ``stream_via`` (``http://host:port``) send the webhook or open the
        stream's socket there instead of at ``base`` (the public URL), as a load balancer routes
        them to its instances; Twilio still signs the public URLs.
        """
        path = "/twilio/voice" + (f"?persona={self.persona}" if self.persona else "")
        url = self.base + path
        form = {"CallSid": self.call_sid, "AccountSid": self.account_sid, "From": self.caller,
                "To": "+15005550006", "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post((webhook_via or self.base) + path, data=form,
                                    headers={"X-Twilio-Signature": self._sign(url, form)})
        reply.raise_for_status()
        stream = ET.fromstring(reply.text).find("./Connect/Stream")
        assert stream is not None, reply.text
        ws_url = stream.get("url")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        target = ws_url
        if stream_via:
            path = ws_url.split("://", 1)[1].split("/", 1)[1]
            target = stream_via.replace("http://", "ws://", 1) + "/" + path
        self._ws = await websockets.connect(target, additional_headers={"X-Twilio-Signature": self._sign(ws_url, {})},
                                            max_size=2**20)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send({"event": "start", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                          "start": {"accountSid": form["AccountSid"], "streamSid": self.stream_sid,
                                    "callSid": self.call_sid, "tracks": ["inbound"],
                                    "customParameters": parameters,
                                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                    "channels": 1}}})
        self.started_at = time.perf_counter()
        self._reader = asyncio.create_task(self._read())

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send(self, message: dict) -> None:
        await self._ws.send(json.dumps(message))

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                message = json.loads(raw)
                now = time.perf_counter()
                if message["event"] == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    self.heard.media.append((now, audio))
                    self._playing_until = max(self._playing_until, now) + len(audio) / 8000
                elif message["event"] == "mark":
                    name = message["mark"]["name"]
                    asyncio.get_running_loop().call_later(max(0.0, self._playing_until - now),
                                                          lambda n=name: asyncio.ensure_future(self._echo(n)))
                elif message["event"] == "clear":
                    self.heard.clears.append(now)
                    self._playing_until = now

    async def _echo(self, name: str) -> None:
        self.heard.marks.append((time.perf_counter(), name))
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send({"event": "mark", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                              "mark": {"name": name}})

    async def send_audio(self, pcm16_8k: bytes) -> None:
        """Stream caller audio (PCM16 at 8 kHz) as μ-law, 20 ms per message, in real time; stops
        quietly when the sidecar hangs up."""
        data = ulaw(pcm16_8k)
        start = time.perf_counter()
        self.sent_at = []
        for i in range(0, len(data), FRAME):
            if self.closed_by_server:
                return
            self._chunk += 1
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._send({"event": "media", "sequenceNumber": self._next(),
                                  "streamSid": self.stream_sid,
                                  "media": {"track": "inbound", "chunk": str(self._chunk),
                                            "timestamp": str(self._sent_ms),
                                            "payload": base64.b64encode(data[i:i + FRAME]).decode()}})
            self._sent_ms += 20
            self.sent_at.append(time.perf_counter())
            await asyncio.sleep(max(0.0, start + (i // FRAME + 1) * 0.02 - time.perf_counter()))

    async def press(self, digit: str) -> None:
        """A keypad key, as Twilio's ``dtmf`` message."""
        await self._send({"event": "dtmf", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                          "dtmf": {"track": "inbound_track", "digit": digit}})

    async def hang_up(self) -> None:
        """Twilio's ``stop``, then the socket closes."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                              "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
            await self._ws.close()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=5)

    async def heard_after(self, since: float, timeout_s: float) -> float:
        """Seconds of agent audio received after ``since`` (``perf_counter``), once it stops coming
        (nothing new for 0.7 s) or ``timeout_s`` passes."""
        deadline = time.perf_counter() + timeout_s
        last = -1.0
        while time.perf_counter() < deadline:
            heard = sum(len(a) for t, a in self.heard.media if t > since) / 8000
            if heard > 0 and heard == last:
                return heard
            last = heard
            await asyncio.sleep(0.7)
        return max(last, 0.0)

    @property
    def closed_by_server(self) -> bool:
        """The sidecar ended the stream (hung up)."""
        return self._reader is not None and self._reader.done()
