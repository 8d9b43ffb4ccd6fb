"""Per-process telephony state: the Twilio client, stream tokens and the live calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from voiceforge.config import ConfigError, Settings
from voiceforge.telephony.security import StreamTokens

if TYPE_CHECKING:
    from twilio.http import HttpClient

    from voiceforge.session import PhoneCall
    from voiceforge.telephony.rest import TwilioService


class TelephonyState:
    """What the Twilio routers share within one sidecar process."""

    def __init__(self, settings: Settings, http_client: HttpClient | None = None) -> None:
        self.settings = settings
        self.tokens = StreamTokens(ttl_s=60)
        self.calls: dict[str, PhoneCall] = {}
        self.http_client = http_client
        self._twilio: TwilioService | None = None

    @property
    def twilio(self) -> TwilioService:
        """The Twilio REST service (built once).

        Raises:
            ConfigError: Twilio is not configured; the message names what is missing.
        """
        if self._twilio is None:
            from voiceforge.telephony.rest import TwilioService

            self._twilio = TwilioService(self.settings, http_client=self.http_client)
        return self._twilio

    def public_url(self, path: str) -> str:
        """``PUBLIC_BASE_URL + path``.

        Raises:
            ConfigError: PUBLIC_BASE_URL is not set.
        """
        if not self.settings.public_base_url:
            raise ConfigError("PUBLIC_BASE_URL is not set: Twilio needs a public https URL for this sidecar")
        return self.settings.public_base_url + path

    def stream_url(self) -> str:
        """The media-stream websocket URL Twilio connects to (wss:// for https://)."""
        base = self.public_url("/twilio/stream")
        return "wss://" + base[len("https://"):] if base.startswith("https://") else "ws://" + base[len("http://"):]

    async def aclose(self) -> None:
        """Stop every live call loop."""
        for call in list(self.calls.values()):
            await call.stop()
        self.calls.clear()
