"""Customer-service tools over the mock database: customers, orders, appointments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from voiceforge import clock
from voiceforge.store import business as data
from voiceforge.tools import spoken
from voiceforge.tools.declaration import load_declarations
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry


def _public(c: dict[str, Any], verified: bool) -> dict[str, Any]:
    out = {"customer_id": c["customer_id"], "name": c["name"], "tier": c["tier"], "verified": verified}
    if verified:
        out.update(phone=c["phone"], email=c["email"])
    return out


def lookup_customer(
    ctx: ToolContext,
    name: str | None = None,
    phone: str | None = None,
    customer_id: int | None = None,
    zip_code: str | None = None,
) -> dict[str, Any]:
    """Find a customer by name, phone number or customer id, and verify them by ZIP code.

    Phone and email are returned only once the caller is verified (ZIP code matches, or they
    were looked up by their own phone number).

    Args:
        name: the customer's full name, as spoken.
        phone: the phone number in E.164 form, like +15550000001.
        customer_id: the numeric customer id.
        zip_code: the ZIP code the caller gives to verify their identity.
    """
    if not (name or phone or customer_id):
        raise ToolError("give a name, phone number or customer id to look up")
    found = data.find_customers(ctx.business, name=name, phone=phone, customer_id=customer_id)
    if not found:
        raise ToolError("no customer matches that; please check the spelling or number")
    if len(found) > 1:
        return {"matches": [{"customer_id": c["customer_id"], "name": c["name"]} for c in found[:5]],
                "summary": f"I found {len(found)} customers with that name. Which one are you?"}
    c = found[0]
    if zip_code and zip_code.strip() != c["zip_code"]:
        raise ToolError("that ZIP code does not match our records, so I cannot verify the account")
    verified = bool(zip_code) or bool(phone)
    ctx.state["customer_id"] = c["customer_id"]
    out = _public(c, verified)
    out["summary"] = f"I found {c['name']}, customer number {c['customer_id']}, a {c['tier']} member."
    return out


def get_order_history(ctx: ToolContext, customer_id: int, limit: int = 5) -> dict[str, Any]:
    """List a customer's most recent orders with item, total, status and date.

    Args:
        customer_id: the numeric customer id (from lookup_customer).
        limit: how many recent orders to return, 1 to 20.
    """
    try:
        customer, rows = data.recent_orders(ctx.business, customer_id, max(1, min(limit, 20)))
    except LookupError:
        raise ToolError(f"there is no customer number {customer_id}") from None
    ctx.state["customer_id"] = customer_id
    if not rows:
        summary = f"{customer['name']} has no orders yet."
    else:
        latest = rows[0]
        summary = (
            f"{customer['name']} has {len(rows)} recent order{'s' if len(rows) != 1 else ''}. "
            f"The latest is the {latest['item']}, order {latest['order_id']}, which is {latest['status']}."
        )
    return {"customer_id": customer_id, "name": customer["name"], "orders": rows, "summary": summary}


def _say_when(iso: str) -> str:
    return spoken.say_when(iso)


def list_appointments(ctx: ToolContext, customer_id: int) -> dict[str, Any]:
    """List a customer's scheduled appointments, soonest first.

    Args:
        customer_id: the numeric customer id (from lookup_customer).
    """
    try:
        customer, rows = data.scheduled_appointments(ctx.business, customer_id)
    except LookupError:
        raise ToolError(f"there is no customer number {customer_id}") from None
    ctx.state["customer_id"] = customer_id
    if not rows:
        summary = f"{customer['name']} has no upcoming appointments."
    else:
        first = rows[0]
        summary = (
            f"{customer['name']} has {len(rows)} upcoming appointment{'s' if len(rows) != 1 else ''}. "
            f"The next is a {first['service']} on {_say_when(first['starts_at'])}, appointment {first['appointment_id']}."
        )
    return {"customer_id": customer_id, "appointments": rows, "summary": summary}


def _parse_start(starts_at: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(starts_at)
    except ValueError:
        raise ToolError("starts_at must be a date and time like 2026-12-03T10:00") from None
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    if when < clock.now():
        raise ToolError("that time is in the past; please pick a future date")
    return when


SLOT_TAKEN = "that slot is already taken; please choose another time"


def schedule_appointment(
    ctx: ToolContext, customer_id: int, service: str, starts_at: str, duration_min: int = 30
) -> dict[str, Any]:
    """Book a new appointment for a customer.

    Args:
        customer_id: the numeric customer id (from lookup_customer).
        service: what the appointment is for: consultation, cleaning, checkup, repair or installation.
        starts_at: the start as ISO 8601 local time, like 2026-12-03T10:00.
        duration_min: the length in minutes, 15 to 180.
    """
    when = _parse_start(starts_at)
    if not 15 <= duration_min <= 180:
        raise ToolError("duration_min must be between 15 and 180")
    try:
        out = data.book_appointment(ctx.business, customer_id, service, when, duration_min)
    except LookupError:
        raise ToolError(f"there is no customer number {customer_id}") from None
    except data.SlotTaken:
        raise ToolError(SLOT_TAKEN) from None
    ctx.state["customer_id"] = customer_id
    out["summary"] = f"You're booked for a {out['service']} on {_say_when(out['starts_at'])}. It's appointment {out['appointment_id']}."
    return out


def reschedule_appointment(ctx: ToolContext, appointment_id: int, starts_at: str) -> dict[str, Any]:
    """Move an existing appointment to a new start time.

    Args:
        appointment_id: the numeric appointment id.
        starts_at: the new start as ISO 8601 local time, like 2026-12-03T14:30.
    """
    when = _parse_start(starts_at)
    try:
        out = data.move_appointment(ctx.business, appointment_id, when)
    except LookupError:
        raise ToolError(f"there is no scheduled appointment number {appointment_id}") from None
    except data.SlotTaken:
        raise ToolError(SLOT_TAKEN) from None
    out["summary"] = f"Done. Appointment {appointment_id} is now on {_say_when(out['starts_at'])}."
    return out


def cancel_appointment(ctx: ToolContext, appointment_id: int) -> dict[str, Any]:
    """Cancel a scheduled appointment.

    Args:
        appointment_id: the numeric appointment id.
    """
    try:
        out = data.cancel_appointment(ctx.business, appointment_id)
    except LookupError:
        raise ToolError(f"there is no scheduled appointment number {appointment_id}") from None
    out["summary"] = f"Appointment {appointment_id}, the {out['service']}, is cancelled."
    return out


DECLARATIONS = Path(__file__).with_suffix(".toml")
"""How the offline brain reaches these tools: phrasings, examples, slots (business.toml)."""


def register(registry: ToolRegistry) -> None:
    """Add the customer, order and appointment tools to ``registry``, in the declarations' order.

    Order matters to the offline brain, which takes the first tool whose triggers match:
    specific intents come before the broad lookup.
    """
    functions = {f.__name__: f for f in (get_order_history, reschedule_appointment, cancel_appointment,
                                         schedule_appointment, list_appointments, lookup_customer)}
    for name, declaration in load_declarations(DECLARATIONS).items():
        registry.add(functions[name], declaration)
