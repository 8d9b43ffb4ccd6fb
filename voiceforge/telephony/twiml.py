"""TwiML built with the twilio SDK."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Connect, VoiceResponse


def connect_stream(stream_url: str, parameters: Mapping[str, str]) -> str:
    """``<Response><Connect><Stream url=…><Parameter …/></Stream></Connect></Response>``.

    Raises:
        ValueError: ``stream_url`` is not ``wss://`` or has a query string (Twilio refuses
            query strings on Stream URLs; values go in ``<Parameter>`` instead).
    """
    if not stream_url.startswith(("wss://", "ws://")) or "?" in stream_url:
        raise ValueError("the Stream URL must be wss:// with no query string")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return response.to_xml()


def message(text: str) -> str:
    """``<Response><Message>text</Message></Response>`` (an SMS reply)."""
    response = MessagingResponse()
    response.message(text)
    return response.to_xml()


def empty() -> str:
    """``<Response/>``: acknowledged, nothing to send (a repeated SMS webhook)."""
    return MessagingResponse().to_xml()


def hangup() -> str:
    """``<Response><Hangup/></Response>``."""
    response = VoiceResponse()
    response.hangup()
    return response.to_xml()


def say_and_hang_up(text: str) -> str:
    """``<Response><Say>text</Say><Hangup/></Response>`` (a call this instance cannot take)."""
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return response.to_xml()


def redirect(url: str) -> str:
    """``<Response><Redirect method="POST">url</Redirect></Response>``.

    Twilio then asks ``url`` for the call's TwiML instead (https://www.twilio.com/docs/voice/twiml/redirect).
    """
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return response.to_xml()
