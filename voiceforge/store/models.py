"""SQLAlchemy 2 models: conversations, turns and tool calls; calls and SMS; mock business data.

The same models serve SQLite (default) and PostgreSQL; Alembic migrations live in `db/`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    """Timezone-aware UTC now (stored as UTC)."""
    return dt.datetime.now(dt.UTC)


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
    title: Mapped[str] = mapped_column(String(200), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    turns: Mapped[list[Turn]] = relationship(
        back_populates="conversation", order_by="Turn.index", cascade="all, delete-orphan"
    )


class Turn(Base):
    """One exchange: what the user said and what the assistant answered, with stage timings.

    ``timings_ms`` maps stage names (``STAGES`` plus provider-specific extras such as
    ``stt_ms``) to milliseconds; ``interrupted`` marks a reply cut short by barge-in, in which
    case ``assistant_text`` is only what was played.
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
