"""SQLAlchemy 2 models of everything Forge stores.

Conversations, turns and tool calls; calls and SMS; mock business data; push-to-talk devices
and the per-child memory of the storyteller (profiles, interests, progress).

The same models serve SQLite (default) and PostgreSQL; Alembic migrations live in `db/`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    """Timezone-aware UTC now (stored as UTC)."""
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | dt.date | None) -> str | None:
    """ISO 8601 text of a date or time, or None."""
    return value.isoformat() if value else None


class Base(DeclarativeBase):
    """Declarative base of every Forge table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


STAGES = (
    "speech_end",
    "stt_final",
    "llm_first_token",
    "first_sentence",
    "tts_first_audio",
    "first_frame_sent",
    "playback_confirmed",
)
"""The stage timestamps stored per turn, as ms after ``speech_end`` (DESIGN.md)."""


class Conversation(Base):
    """One conversation over any channel: chat, voice, phone, sms, device, realtime, cli."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    channel: Mapped[str] = mapped_column(String(20), default="chat")
    persona: Mapped[str] = mapped_column(String(64), default="customer_service")
    persona_version: Mapped[int | None] = mapped_column(Integer)
    """The persona version the conversation ran on (voiceforge/agent/versions.py); None before versions."""
    title: Mapped[str] = mapped_column(String(200), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    child_id: Mapped[int | None] = mapped_column(ForeignKey("child_profiles.id", ondelete="CASCADE"), index=True)

    turns: Mapped[list[Turn]] = relationship(
        back_populates="conversation", order_by="Turn.index", cascade="all, delete-orphan"
    )


class Turn(Base):
    """One exchange: what the user said and what the assistant answered, with stage timings.

    ``timings_ms`` maps stage names (``STAGES`` plus provider-specific extras such as
    ``stt_ms``) to milliseconds; ``interrupted`` marks a reply cut short by barge-in, in which
    case ``assistant_text`` is only what was played. ``usage`` is what the providers consumed
    (audio seconds, tokens, characters) and ``cost_usd`` its price (voiceforge/cost.py).
    ``answered`` is False from the moment the caller's words are stored (once transcribed) until
    the reply has played; a turn left unanswered was cut off by a crash or a hang-up.
    """

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_text: Mapped[str] = mapped_column(Text, default="")
    assistant_text: Mapped[str] = mapped_column(Text, default="")
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    timings_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    providers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    answered: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    user_audio_path: Mapped[str | None] = mapped_column(String(500))
    reply_audio_path: Mapped[str | None] = mapped_column(String(500))

    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    tool_calls: Mapped[list[ToolCallRecord]] = relationship(
        back_populates="turn", order_by="ToolCallRecord.id", cascade="all, delete-orphan"
    )


class ToolCallRecord(Base):
    """A tool call made during a turn, with its arguments, result or error, and duration."""

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)

    turn: Mapped[Turn] = relationship(back_populates="tool_calls")


class Call(Base):
    """A phone call through Twilio (or the local simulator), keyed by its call SID."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16), default="outbound")
    from_number: Mapped[str] = mapped_column(String(20), default="")
    to_number: Mapped[str] = mapped_column(String(20), default="")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    persona: Mapped[str] = mapped_column(String(64), default="customer_service")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    dtmf: Mapped[str] = mapped_column(String(200), default="")
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    owner: Mapped[str | None] = mapped_column(String(128))
    """The sidecar instance (``FORGE_INSTANCE``) that placed, answered or streamed the call."""
    end_reason: Mapped[str | None] = mapped_column(Text)
    """Why Forge closed the call itself (a sidecar that stopped mid-call, a call that never connected)."""
    billed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Twilio bills it: placed through Twilio's API, or its webhook came from this account
    (``AccountSid`` = ``TWILIO_ACCOUNT_SID``). A simulated call is not billed."""

    events: Mapped[list[CallEvent]] = relationship(
        back_populates="call", order_by="CallEvent.id", cascade="all, delete-orphan"
    )


class CallEvent(Base):
    """One status change of a call (queued, ringing, in-progress, completed, ...)."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    sequence: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    call: Mapped[Call] = relationship(back_populates="events")


class SmsMessage(Base):
    """An SMS sent or received through Twilio, keyed by its message SID."""

    __tablename__ = "sms_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str] = mapped_column(String(20))
    to_number: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    billed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Twilio bills it: an outbound text Twilio's API accepted, or a reply to a webhook from this account."""


class Customer(Base):
    """A mock customer. ``zip_code`` is the verification secret for lookups by phone or id."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    email: Mapped[str] = mapped_column(String(120))
    zip_code: Mapped[str] = mapped_column(String(10))
    tier: Mapped[str] = mapped_column(String(20), default="standard")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    orders: Mapped[list[Order]] = relationship(back_populates="customer", order_by="Order.placed_at")
    appointments: Mapped[list[Appointment]] = relationship(
        back_populates="customer", order_by="Appointment.starts_at"
    )


class Order(Base):
    """A mock order: item, total in cents, status (processing, shipped, delivered, returned)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    item: Mapped[str] = mapped_column(String(100))
    total_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    placed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    customer: Mapped[Customer] = relationship(back_populates="orders")


class Appointment(Base):
    """A mock appointment: service, start time (UTC), length in minutes, status."""

    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    service: Mapped[str] = mapped_column(String(60))
    starts_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    duration_min: Mapped[int] = mapped_column(Integer, default=30)
    status: Mapped[str] = mapped_column(String(20), default="scheduled")

    customer: Mapped[Customer] = relationship(back_populates="appointments")


class Child(Base):
    """A child's profile on a storyteller device (the seed's ``profiles`` table).

    Nothing about the child is stored (no turns, progress or interactions) until ``consent``
    is given by a parent; ``version`` goes up on every change, so a device can cache the
    context and ask only whether it is stale (ETag).
    """

    __tablename__ = "child_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    dob: Mapped[dt.date | None] = mapped_column(Date)
    parents: Mapped[str] = mapped_column(Text, default="")
    preferred_language: Mapped[str] = mapped_column(String(16), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Interest(Base):
    """A weighted interest tag of a child ("animals", "space"); the weight goes up with use."""

    __tablename__ = "interests"
    __table_args__ = (UniqueConstraint("child_id", "tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child_profiles.id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(40))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChalisaProgress(Base):
    """How far a child is with one verse of the Hanuman Chalisa: exposures, attempts, mastery 0–5."""

    __tablename__ = "chalisa_progress"
    __table_args__ = (UniqueConstraint("child_id", "verse_index"),
                      CheckConstraint("mastery BETWEEN 0 AND 5", name="mastery_0_to_5"))

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child_profiles.id", ondelete="CASCADE"), index=True)
    verse_index: Mapped[int] = mapped_column(Integer)
    exposure_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    mastery: Mapped[int] = mapped_column(Integer, default=0)
    last_practice: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class StoryProgress(Base):
    """A story a child has heard: started, completed or favorite, how often, where they stopped."""

    __tablename__ = "story_progress"
    __table_args__ = (UniqueConstraint("child_id", "topic"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child_profiles.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(12), default="started")
    times_heard: Mapped[int] = mapped_column(Integer, default=0)
    last_heard: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    position: Mapped[int] = mapped_column(Integer, default=0)


class Interaction(Base):
    """One press-to-reply exchange of a child with a device: when, how long (s), about what."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child_profiles.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    topic: Mapped[str] = mapped_column(String(60), default="")
    notes: Mapped[str] = mapped_column(Text, default="")


class Device(Base):
    """A push-to-talk device (ESP32-S3). Its token is stored only as a SHA-256 hash.

    ``settings`` (persona voice, volume, language, VAD and post-roll) is what the device pulls;
    ``settings_version`` goes up with each change. ``conversation_id`` is the device's running
    conversation, continued on every press.
    """

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(80), default="")
    persona: Mapped[str] = mapped_column(String(64), default="hanuman_storyteller")
    child_id: Mapped[int | None] = mapped_column(ForeignKey("child_profiles.id", ondelete="SET NULL"))
    token_hash: Mapped[str] = mapped_column(String(64))
    token_hint: Mapped[str] = mapped_column(String(12), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    firmware: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings_version: Mapped[int] = mapped_column(Integer, default=1)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
