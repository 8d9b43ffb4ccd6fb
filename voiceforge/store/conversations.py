"""Repository functions for conversations, turns and their tool calls.

The one place a turn is written (:func:`save_turn`), and the queries that pages, routers and
the CLI read conversations with. Every function is blocking (SQLAlchemy); async callers run
them in a worker thread.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from voiceforge.audio.codecs import wrap_wav
from voiceforge.cost import PriceTable
from voiceforge.records import FIRST_AUDIO_MARKS, TurnRecord
from voiceforge.store.db import Database
from voiceforge.store.models import Call, Conversation, Customer, SmsMessage, ToolCallRecord, Turn


def create_conversation(db: Database, channel: str, persona: str, title: str = "",
                        persona_version: int | None = None) -> int:
    """Store a new conversation and return its id (``persona_version``: the persona version it runs on)."""
    with db.db_session() as s:
        conv = Conversation(channel=channel, persona=persona, title=title[:200], persona_version=persona_version)
        s.add(conv)
        s.flush()
        return conv.id


def save_turn(db: Database, conversation_id: int, turn: TurnRecord, recordings: Path | None = None,
              summary: str | None = None) -> int:
    """Store one turn with its tool calls; with ``recordings`` also its audio as WAV files.

    A turn whose ``turn_id`` is set was stored before (its caller's words, as soon as they were
    transcribed, or an earlier attempt of this write): that row is brought up to date instead
    of a second one added, so writing the same record twice stores it once.

    Args:
        db: the database.
        conversation_id: an existing conversation.
        turn: the turn (its ``reply`` is stored as what the assistant said: what was heard).
        recordings: folder for ``<conversation>/<index>-user.wav`` and ``-reply.wav``
            (``ENABLE_RECORDINGS``); None keeps no audio.
        summary: the memory's rolling summary of older turns, stored with the conversation.

    Returns:
        The new turn's id.

    Raises:
        LookupError: no conversation ``conversation_id``.
    """
    with db.db_session() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            raise LookupError(f"no conversation {conversation_id}")
        row = s.get(Turn, turn.turn_id) if turn.turn_id else None
        if row is None or row.conversation_id != conversation_id:
            index = s.scalar(select(func.count(Turn.id)).where(Turn.conversation_id == conversation_id)) or 0
            row = Turn(conversation_id=conversation_id, index=index)
            s.add(row)
        else:
            row.tool_calls.clear()
        row.user_text, row.assistant_text, row.interrupted, row.error = (turn.user_text, turn.reply, turn.interrupted,
                                                                         turn.error)
        row.timings_ms, row.providers, row.usage = dict(turn.timings_ms), turn.providers, turn.usage.to_json()
        row.cost_usd, row.answered = turn.cost_usd, turn.answered
        if not conv.title and turn.user_text:
            conv.title = turn.user_text[:200]
        if summary is not None:
            conv.summary = summary
        s.flush()
        index = row.index
        for call in turn.tool_calls:
            s.add(ToolCallRecord(turn_id=row.id, name=call["name"], arguments=call["arguments"],
                                 result=call["result"], error=call["error"], duration_ms=call["duration_ms"]))
        if recordings is not None:
            folder = recordings / str(conversation_id)
            row.user_audio_path = _save_wav(folder / f"{index:03d}-user.wav", turn.user_audio) or row.user_audio_path
            row.reply_audio_path = _save_wav(folder / f"{index:03d}-reply.wav", turn.reply_audio) or row.reply_audio_path
        return row.id


def _save_wav(path: Path, audio: tuple[bytes, int] | None) -> str | None:
    if not audio or not audio[0]:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wrap_wav(audio[0], audio[1]))
    return str(path)


@dataclass
class History:
    """A stored conversation's persona, channel, rolling summary and recent (user, assistant) turns.

    ``tool_calls[i]`` are turn i's tool calls (name, arguments, result, error), oldest first.
    """

    persona: str
    channel: str
    turns: list[tuple[str, str]]
    summary: str = ""
    child_id: int | None = None
    tool_calls: list[list[dict[str, Any]]] = field(default_factory=list)


def history(db: Database, conversation_id: int, last: int | None = None) -> History | None:
    """A conversation's persona, summary, turn texts and tool calls (only the ``last`` turns), or None."""
    with db.read_session() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            return None
        query = select(Turn).where(Turn.conversation_id == conversation_id)
        if last is not None:
            rows = list(reversed(s.scalars(query.order_by(Turn.index.desc()).limit(last)).all()))
        else:
            rows = list(s.scalars(query.order_by(Turn.index)).all())
        calls = [[{"name": c.name, "arguments": c.arguments, "result": c.result, "error": c.error}
                  for c in t.tool_calls] for t in rows]
        return History(conv.persona, conv.channel, [(t.user_text, t.assistant_text) for t in rows], conv.summary,
                       conv.child_id, calls)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def turn_dict(turn: Turn) -> dict[str, Any]:
    """A stored turn as JSON: texts, interruption, error, timings, tool calls, audio paths."""
    return {
        "index": turn.index, "user_text": turn.user_text, "assistant_text": turn.assistant_text,
        "interrupted": turn.interrupted, "error": turn.error, "timings_ms": turn.timings_ms,
        "providers": turn.providers, "usage": turn.usage or {}, "cost_usd": turn.cost_usd or 0.0,
        "created_at": _iso(turn.created_at), "answered": turn.answered,
        "user_audio_path": turn.user_audio_path, "reply_audio_path": turn.reply_audio_path,
        "tool_calls": [{"name": c.name, "arguments": c.arguments, "result": c.result, "error": c.error,
                        "duration_ms": c.duration_ms} for c in turn.tool_calls],
    }


def turns_of(db: Database, conversation_id: int) -> list[dict[str, Any]]:
    """Every turn of a conversation (see :func:`turn_dict`), oldest first."""
    with db.read_session() as s:
        conv = s.get(Conversation, conversation_id)
        return [turn_dict(t) for t in conv.turns] if conv else []


def list_conversations(db: Database, limit: int = 500) -> list[dict[str, Any]]:
    """Recent conversations, newest first: id, created_at, channel, persona, title, turns, cost_usd."""
    with db.read_session() as s:
        rows = s.execute(
            select(Conversation.id, Conversation.created_at, Conversation.channel, Conversation.persona,
                   Conversation.title, func.count(Turn.id), func.coalesce(func.sum(Turn.cost_usd), 0.0))
            .outerjoin(Turn).group_by(Conversation.id).order_by(Conversation.id.desc()).limit(limit)
        ).all()
    return [{"id": r[0], "created_at": r[1], "channel": r[2], "persona": r[3], "title": r[4], "turns": r[5],
             "cost_usd": float(r[6] or 0.0)} for r in rows]


"""A turn's voice-to-voice mark, best first (as the app's waterfall reads it)."""


def billed_usage(db: Database, conversation_ids: list[int] | None = None) -> tuple[dict[int | None, list[float]],
                                                                                   dict[int | None, int]]:
    """What Twilio bills, per conversation: ({id: [seconds of each ended billed call]}, {id: billed texts sent}).

    ``conversation_ids`` None: every call and text (under their conversation id, None when unlinked).
    """
    calls = select(Call.conversation_id, Call.created_at, Call.ended_at).where(Call.billed, Call.ended_at.is_not(None))
    texts = (select(SmsMessage.conversation_id, func.count(SmsMessage.id))
             .where(SmsMessage.billed, SmsMessage.direction == "outbound").group_by(SmsMessage.conversation_id))
    if conversation_ids is not None:
        calls = calls.where(Call.conversation_id.in_(conversation_ids))
        texts = texts.where(SmsMessage.conversation_id.in_(conversation_ids))
    seconds: dict[int | None, list[float]] = {}
    with db.read_session() as s:
        for conv, start, end in s.execute(calls):
            if start and end:
                seconds.setdefault(conv, []).append(max(0.0, (end - start).total_seconds()))
        sent = {conv: int(n) for conv, n in s.execute(texts)}
    return seconds, sent


def call_log(db: Database, limit: int = 500, prices: PriceTable | None = None) -> list[dict[str, Any]]:
    """Recent conversations as a call log, newest first.

    Each row: id, started (datetime), channel, persona, title (the first thing said), turns,
    duration_s (first to last turn), median_latency_ms (voice-to-voice over spoken turns, None
    when none), errors, interruptions, cost_usd (with ``prices``, :meth:`PriceTable.spent`:
    the providers plus the Twilio minutes and texts it was billed; without, the providers only).
    """
    rows = list_conversations(db, limit)
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    billed_seconds, billed_texts = billed_usage(db, ids) if prices is not None else ({}, {})
    with db.read_session() as s:
        turns = s.execute(select(Turn.conversation_id, Turn.created_at, Turn.timings_ms, Turn.error, Turn.interrupted)
                          .where(Turn.conversation_id.in_(ids))).all()
    by_conv: dict[int, list[Any]] = {}
    for t in turns:
        by_conv.setdefault(t[0], []).append(t)
    out = []
    for r in rows:
        own = by_conv.get(r["id"], [])
        latencies = sorted(float(v) for _, _, timings, _, _ in own
                           if (v := next(((timings or {}).get(m) for m in FIRST_AUDIO_MARKS
                                          if m in (timings or {})), None)) is not None)
        stamps = [created for _, created, _, _, _ in own if created]
        out.append({
            "id": r["id"], "started": r["created_at"], "channel": r["channel"], "persona": r["persona"],
            "title": r["title"] or "(nothing said)", "turns": r["turns"],
            "duration_s": round((max(stamps) - r["created_at"]).total_seconds(), 1) if stamps and r["created_at"] else 0.0,
            "median_latency_ms": latencies[len(latencies) // 2] if latencies else None,
            "errors": sum(1 for t in own if t[3]), "interruptions": sum(1 for t in own if t[4]),
            "cost_usd": r["cost_usd"] if prices is None else prices.spent(
                r["cost_usd"], billed_seconds.get(r["id"], []), billed_texts.get(r["id"], 0)).total,
        })
    return out


def get_conversation(db: Database, conversation_id: int) -> dict[str, Any] | None:
    """One conversation with its turns, or None."""
    with db.read_session() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            return None
        return {"id": conv.id, "created_at": conv.created_at, "channel": conv.channel, "persona": conv.persona,
                "persona_version": conv.persona_version, "title": conv.title,
                "turns": [turn_dict(t) for t in conv.turns]}


def spend(db: Database) -> dict[str, Any]:
    """What the stored conversations consumed, for the Home totals (priced by :meth:`PriceTable.spent`).

    Returns:
        ``{"turn_cost_usd": float, "turns": int, "call_seconds": [float per ended billed call],
        "sms_sent": int (billed texts), "simulated_calls": int}``: the providers' cost of every
        turn, and the phone usage Twilio bills (simulated calls and texts are not billed).
    """
    seconds, texts = billed_usage(db)
    with db.read_session() as s:
        cost, turns = s.execute(select(func.coalesce(func.sum(Turn.cost_usd), 0.0), func.count(Turn.id))).one()
        simulated = s.scalar(select(func.count(Call.id)).where(~Call.billed)) or 0
    return {"turn_cost_usd": float(cost or 0.0), "turns": int(turns),
            "call_seconds": [x for per in seconds.values() for x in per], "sms_sent": sum(texts.values()),
            "simulated_calls": int(simulated)}


def recordings_of(data_dir: Path, conversation_id: int) -> list[Path]:
    """The conversation's recordings (per-turn and whole-call WAVs), sorted by name."""
    folder = data_dir / "recordings" / str(int(conversation_id))
    return sorted(folder.glob("*.wav")) if folder.is_dir() else []


def prune_recordings(data_dir: Path, older_than_days: int, now: float | None = None) -> int:
    """Delete kept replies and recordings older than ``older_than_days`` (by file time); how many.

    The rows keep their paths; a page finds the file gone and shows no player. ``0`` days
    keeps everything. Empty conversation folders are removed too.
    """
    import time

    folder = data_dir / "recordings"
    if older_than_days <= 0 or not folder.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - older_than_days * 86400
    removed = 0
    for path in folder.glob("*/*.wav"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # deleted meanwhile (a conversation's delete)
            continue
    for sub in folder.iterdir():
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    return removed


def delete_conversation(db: Database, conversation_id: int, data_dir: Path) -> bool:
    """Delete a conversation, its turns and tool calls, and its recordings; False when there was none.

    Calls and SMS keep their rows (their link to the conversation is cleared by the database).
    """
    import shutil

    with db.db_session() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            return False
        s.delete(conv)
    shutil.rmtree(data_dir / "recordings" / str(int(conversation_id)), ignore_errors=True)
    return True


def counts(db: Database, business: Database | None = None) -> dict[str, int]:
    """How many conversations, turns, calls (in ``db``) and customers (in ``business``, default ``db``)."""
    with db.read_session() as s:
        found = {name: s.scalar(select(func.count(model.id))) or 0
                 for name, model in (("conversations", Conversation), ("turns", Turn), ("calls", Call))}
    with (business or db).read_session() as s:
        found["customers"] = s.scalar(select(func.count(Customer.id))) or 0
    return found
