"""Twilio: REST calls and SMS, TwiML, the media-stream codec, signature checks, numbers."""
