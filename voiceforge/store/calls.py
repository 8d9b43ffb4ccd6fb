"""Repository functions for calls, call status history and SMS messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from voiceforge.store.conversations import turn_dict
from voiceforge.store.db import Database
from voiceforge.store.models import Call, CallEvent, Conversation, SmsMessage, utcnow

FINAL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
NOT_CONNECTED = {"queued", "initiated", "ringing"}
"""Statuses of a call not yet answered (Twilio's call resource: queued, initiated, ringing)."""
RING_TIMEOUT_S = 300.0
"""A call still not connected after this long is closed as failed (Twilio gives up ringing after
60 s by default, and its final status callback may never reach a sidecar that was down)."""


def record_call(db: Database, call_sid: str, direction: str, from_number: str, to_number: str,
                persona: str, status: str = "queued", owner: str | None = None, billed: bool = False) -> None:
    """Store a new call (idempotent on the call SID); ``owner`` is the sidecar that placed it.

    ``billed``: Twilio bills it (see :func:`voiceforge.cost.twilio_bills`); a simulated call is not.
    """
    try:
        with db.db_session() as s:
            call = Call(call_sid=call_sid, direction=direction, from_number=from_number, to_number=to_number,
                        persona=persona, status=status, owner=owner, billed=billed)
            call.events.append(CallEvent(status=status))
            s.add(call)
    except IntegrityError:
        pass


def add_status(db: Database, call_sid: str, status: str, sequence: int | None = None, **create: Any) -> bool:
    """Record a status callback once (idempotent).

    A repeated (status, sequence), or a second final status of the same kind, is ignored.

    Unknown calls (inbound, or placed elsewhere) are created from ``create`` fields.

    Returns:
        True when the event was new.
    """
    with db.db_session() as s:
        call = s.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()
        if call is None:
            call = Call(call_sid=call_sid, status=status, **create)
            s.add(call)
        else:
            if create.get("billed"):
                call.billed = True  # a call placed elsewhere on this account, its webhook reaching us
            if any(e.status == status and (status in FINAL_STATUSES or e.sequence in (sequence, None))
                   for e in call.events):
                return False  # a repeat, or what this sidecar saw first; a call ends once, whoever reported it
        call.events.append(CallEvent(status=status, sequence=sequence))
        if call.status not in FINAL_STATUSES:  # a late "ringing" never reopens a finished call
            call.status = status
        if status in FINAL_STATUSES and call.ended_at is None:
            call.ended_at = utcnow()
        return True


def attach_stream(db: Database, call_sid: str, stream_sid: str, conversation_id: int | None,
                  owner: str | None = None) -> None:
    """Link a call to its media stream and conversation; ``owner``, the sidecar serving the stream, owns it now.

    A call still queued, initiated or ringing becomes ``in-progress``: its stream started, so it was
    answered (Twilio sends no status callback for that unless asked to).
    """
    with db.db_session() as s:
        call = s.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()
        if call is None:
            call = Call(call_sid=call_sid, direction="inbound", status="in-progress")
            s.add(call)
        call.stream_sid = stream_sid
        if call.status in NOT_CONNECTED:  # the stream started: the call was answered
            call.status = "in-progress"
            call.events.append(CallEvent(status="in-progress"))
        if owner:
            call.owner = owner
        if conversation_id:
            call.conversation_id = conversation_id


def end_stream(db: Database, call_sid: str) -> None:
    """The media stream closed, and with it the call: stamp ``ended_at`` and mark it completed.

    Twilio's own ``completed`` status callback may follow; it is then a repeat and ignored. A
    call with no REST side (the simulator) ends here.
    """
    with db.db_session() as s:
        call = s.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()
        if call is None:
            return
        if call.ended_at is None:
            call.ended_at = utcnow()
        if call.status not in FINAL_STATUSES:
            call.status = "completed"
            call.events.append(CallEvent(status="completed"))


def close_stale_calls(db: Database, owner: str, at_start: bool, ring_timeout_s: float = RING_TIMEOUT_S,
                      now: dt.datetime | None = None) -> list[str]:
    """Close, as failed with a reason, the calls of ``owner`` that can no longer be live.

    - ``at_start``: every call ``owner`` left in progress (its media stream died with the
      process that served it);
    - always: calls of ``owner`` not connected ``ring_timeout_s`` after they were created.

    Each gets status ``failed``, ``ended_at`` and ``end_reason``; a later status callback from
    Twilio is recorded in the history but does not reopen it. Calls of other sidecars are left
    alone (``FORGE_INSTANCE`` names each).

    Returns:
        The call SIDs closed.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=ring_timeout_s)
    closed = []
    with db.db_session() as s:
        open_calls = s.scalars(select(Call).where(Call.owner == owner, Call.ended_at.is_(None),
                                                  Call.status.not_in(FINAL_STATUSES))).all()
        for call in open_calls:
            created = call.created_at if call.created_at.tzinfo else call.created_at.replace(tzinfo=dt.UTC)
            connected = call.status not in NOT_CONNECTED or call.stream_sid is not None
            if at_start and connected:
                reason = f"the sidecar ({owner}) stopped during the call"
            elif not connected and created < cutoff:
                reason = f"never connected: still {call.status} after {ring_timeout_s:.0f} s"
            else:
                continue
            call.status, call.ended_at, call.end_reason = "failed", now, reason
            call.events.append(CallEvent(status="failed"))
            closed.append(call.call_sid)
    return closed


def close_orphaned_calls(db: Database, owner: str, reason: str, now: dt.datetime | None = None) -> list[str]:
    """Close, as failed with ``reason``, the calls whose media stream ``owner`` held when it died.

    Only connected calls (a stream attached) are closed: a call still ringing may yet reach
    another instance, and :func:`close_stale_calls` ends it if it never does.

    Returns:
        The call SIDs closed.
    """
    now = now or utcnow()
    with db.db_session() as s:
        open_calls = s.scalars(select(Call).where(Call.owner == owner, Call.ended_at.is_(None),
                                                  Call.stream_sid.is_not(None),
                                                  Call.status.not_in(FINAL_STATUSES))).all()
        for call in open_calls:
            call.status, call.ended_at, call.end_reason = "failed", now, reason[:200]
            call.events.append(CallEvent(status="failed"))
        return [c.call_sid for c in open_calls]


def add_dtmf(db: Database, call_sid: str, digit: str) -> None:
    """Append a keypad digit to the call's record."""
    with db.db_session() as s:
        call = s.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()
        if call is not None:
            call.dtmf = (call.dtmf + digit)[-200:]


def record_sms(db: Database, direction: str, from_number: str, to_number: str, body: str,
               message_sid: str | None, status: str, conversation_id: int | None = None, billed: bool = False) -> int:
    """Store an SMS; returns its row id (an existing message SID is updated instead).

    ``billed``: Twilio bills it (sent through its API, or a reply to a webhook from this account).
    """
    with db.db_session() as s:
        existing = s.scalars(select(SmsMessage).where(SmsMessage.message_sid == message_sid)).one_or_none() if message_sid else None
        if existing:
            existing.status = status
            return existing.id
        msg = SmsMessage(direction=direction, from_number=from_number, to_number=to_number, body=body,
                         message_sid=message_sid, status=status, conversation_id=conversation_id, billed=billed)
        s.add(msg)
        s.flush()
        return msg.id


def record_inbound_sms(db: Database, from_number: str, to_number: str, body: str, message_sid: str | None,
                       conversation_id: int | None) -> int | None:
    """Store an inbound SMS once; None when its MessageSid was stored before (a replayed webhook).

    The database's unique constraint decides, so two deliveries of one message that arrive at
    once store (and are answered) only once.
    """
    try:
        with db.db_session() as s:
            msg = SmsMessage(direction="inbound", from_number=from_number, to_number=to_number, body=body,
                             message_sid=message_sid, status="received", conversation_id=conversation_id)
            s.add(msg)
            s.flush()
            return msg.id
    except IntegrityError:
        if message_sid is None:
            raise
        return None


def sms_conversation(db: Database, number: str, persona: str) -> int:
    """The conversation of the SMS thread with ``number`` (created on the first message)."""
    with db.db_session() as s:
        row = s.scalars(
            select(SmsMessage).where((SmsMessage.from_number == number) | (SmsMessage.to_number == number),
                                     SmsMessage.conversation_id.is_not(None)).order_by(SmsMessage.id.desc())
        ).first()
        if row is not None:
            return row.conversation_id
        conv = Conversation(channel="sms", persona=persona, title=f"SMS {number[-4:]}")
        s.add(conv)
        s.flush()
        return conv.id


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def call_dict(call: Call) -> dict[str, Any]:
    """A call as JSON: SIDs, numbers, status, timestamps, status history."""
    out = {
        "call_sid": call.call_sid, "stream_sid": call.stream_sid, "direction": call.direction,
        "from": call.from_number, "to": call.to_number, "status": call.status, "persona": call.persona,
        "created_at": _iso(call.created_at), "ended_at": _iso(call.ended_at), "dtmf": call.dtmf,
        "conversation_id": call.conversation_id, "end_reason": call.end_reason, "owner": call.owner,
        "history": [{"status": e.status, "sequence": e.sequence, "at": _iso(e.at)} for e in call.events],
    }
    return out


def list_calls(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """Recent calls, newest first."""
    with db.read_session() as s:
        return [call_dict(c) for c in s.scalars(select(Call).order_by(Call.id.desc()).limit(limit))]


def get_call(db: Database, call_sid: str) -> dict[str, Any] | None:
    """One call with its status history and conversation turns (``conversations.turn_dict``), or None."""
    with db.read_session() as s:
        call = s.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()
        if call is None:
            return None
        out = call_dict(call)
        out["turns"] = []
        if call.conversation_id:
            conv = s.get(Conversation, call.conversation_id)
            out["turns"] = [turn_dict(t) for t in conv.turns]  # the same shape as every stored turn
        return out


def list_sms(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    """Recent SMS messages, newest first."""
    with db.read_session() as s:
        return [
            {"message_sid": m.message_sid, "direction": m.direction, "from": m.from_number, "to": m.to_number,
             "body": m.body, "status": m.status, "created_at": _iso(m.created_at),
             "conversation_id": m.conversation_id}
            for m in s.scalars(select(SmsMessage).order_by(SmsMessage.id.desc()).limit(limit))
        ]
