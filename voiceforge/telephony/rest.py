"""Twilio REST through the official SDK: outbound calls, SMS, hang-up.

The SDK's client is blocking, so each call runs in a worker thread; one Client is built per
service (building it is not free). Every request has a connect and a read timeout
(``TWILIO_CONNECT_TIMEOUT_S``, ``TWILIO_READ_TIMEOUT_S``): a Twilio that hangs costs a bounded
wait, never a frozen call. ``TWILIO_API_BASE`` points the client at a local Twilio-compatible
server. Tests pass an ``http_client`` (a ``twilio.http.HttpClient`` subclass) that records and
answers requests locally.
"""

from __future__ import annotations

import asyncio
import logging

from requests import RequestException
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from voiceforge.config import Settings
from voiceforge.telephony.numbers import mask_number, normalize_e164

log = logging.getLogger(__name__)


class TelephonyError(Exception):
    """A Twilio request failed; the message is safe to show (no tokens)."""


class TwilioService:
    """Calls and SMS for one Twilio account.

    Raises:
        ConfigError: at construction, when a Twilio setting is missing.
    """

    def __init__(self, settings: Settings, http_client: HttpClient | None = None) -> None:
        settings.require_twilio()
        self.settings = settings
        self.from_number = settings.twilio_phone_number
        if http_client is None:
            http_client = TwilioHttpClient(timeout=settings.twilio_read_timeout_s)
            # requests takes (connect, read) seconds and the SDK hands its timeout straight to it;
            # only the SDK's constructor insists on a number, so the pair is set afterwards.
            http_client.timeout = (settings.twilio_connect_timeout_s, settings.twilio_read_timeout_s)
        self.client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http_client)
        if settings.twilio_api_base:
            self.client.api.base_url = settings.twilio_api_base

    async def place_call(self, to: str, voice_url: str, status_url: str) -> tuple[str, str]:
        """Start an outbound call that fetches TwiML from ``voice_url``.

        Returns:
            (call SID, initial status).

        Raises:
            ValueError: ``to`` is not E.164.
            TelephonyError: Twilio refused or could not be reached.
        """
        to = normalize_e164(to)

        def create():  # noqa: ANN202
            return self.client.calls.create(
                to=to, from_=self.from_number, url=voice_url, method="POST",
                status_callback=status_url, status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
            )

        call = await self._run(create, f"call to {mask_number(to)}")
        log.info("placed call %s to %s", call.sid, mask_number(to))
        return call.sid, call.status

    async def send_sms(self, to: str, body: str, status_url: str | None = None) -> tuple[str, str]:
        """Send an SMS from TWILIO_PHONE_NUMBER; returns (message SID, status)."""
        to = normalize_e164(to)
        if not body.strip():
            raise ValueError("the SMS body is empty")
        kwargs = {"status_callback": status_url} if status_url else {}
        msg = await self._run(lambda: self.client.messages.create(to=to, from_=self.from_number, body=body, **kwargs),
                              f"SMS to {mask_number(to)}")
        return msg.sid, msg.status

    async def hangup(self, call_sid: str) -> None:
        """End a live call (``status=completed``)."""
        await self._run(lambda: self.client.calls(call_sid).update(status="completed"), f"hang-up of {call_sid}")

    @staticmethod
    async def _run(fn, what: str):  # noqa: ANN001, ANN205
        try:
            return await asyncio.to_thread(fn)
        except TwilioRestException as exc:
            raise TelephonyError(f"Twilio refused the {what}: HTTP {exc.status} {exc.msg}") from None
        except (TwilioException, OSError, RequestException) as exc:
            raise TelephonyError(f"Twilio could not be reached for the {what}: {type(exc).__name__}") from None
