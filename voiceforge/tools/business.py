"""Customer-service tools over the mock database: customers, orders, appointments."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from voiceforge.store import business as data
from voiceforge.tools import spoken
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry

ASK_CUSTOMER = "Sure. Could you tell me your name or your customer number?"


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
    when = dt.datetime.fromisoformat(iso)
    return when.strftime("%A, %B ") + str(when.day) + when.strftime(" at %-I:%M %p").replace(":00 ", " ")


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
    if when < dt.datetime.now(dt.UTC):
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


# --- offline-brain extractors ---------------------------------------------------------------
def _extract_lookup(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str:
    ref = spoken.customer_ref(utterance, {})
    if not ref:
        return ASK_CUSTOMER
    zip_match = re.search(r"\bzip(?:\s*code)?\s*(?:is\s*)?(\d[\d\s]{3,8}\d)", utterance, re.I)
    if zip_match:
        ref["zip_code"] = zip_match.group(1).replace(" ", "")
    return ref


def _needs_customer(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str:
    ref = spoken.customer_ref(utterance, known)
    if not ref:
        return ASK_CUSTOMER
    return ref  # {"customer_id"} is final; {"name"}/{"phone"} first goes through lookup_customer


def _extract_schedule(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str:
    ref = _needs_customer(utterance, known)
    if isinstance(ref, str):
        return ref
    when = spoken.when_in(utterance)
    if when is None:
        return "Sure. What day and time would you like?"
    return {**ref, "service": spoken.service_in(utterance) or "consultation", "starts_at": when}


def _extract_appointment_id(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str:
    aid = spoken.number_after(utterance, "appointment", "booking", "reservation", "visit")
    if aid is None:
        return "Which appointment number is it?"
    return {"appointment_id": aid}


def _extract_reschedule(utterance: str, known: dict[str, Any]) -> dict[str, Any] | str:
    ref = _extract_appointment_id(utterance, known)
    if isinstance(ref, str):
        return ref
    when = spoken.when_in(utterance.split("appointment", 1)[-1])
    if when is None:
        return "Sure. What new day and time would you like?"
    return {**ref, "starts_at": when}


_VISIT = r"(appointment|booking|reservation|consultation|cleaning|check-?up|repair|installation)s?\b"
"""What a caller books, as trigger words (spoken.canonical already reads visit, slot, session as appointment)."""
_CANCEL = r"\b(cancel|scrap|scratch|call(ing)? (it |that )?off|drop(?!\s+(off|by|in)\b)|get rid of|delete|remove)\b"
"""Verbs that undo a booking ("drop" but not "drop off" or "drop by")."""
_WHEN = (rf"\b({'|'.join(spoken.WEEKDAYS)}|today|tomorrow|week|month|morning|afternoon|evening|noon|o'?clock"
         rf"|{'|'.join(spoken.HOURS[1:])}|\d+(st|nd|rd|th)?)\b")
"""A day or a time of day, as a caller says it ("one" left out: "this one instead" is no time)."""


def register(registry: ToolRegistry) -> None:
    """Add the customer, order and appointment tools to ``registry``.

    Order matters to the offline brain, which takes the first tool whose triggers match:
    specific intents come before the broad lookup.
    """
    registry.add(
        get_order_history,
        triggers=[r"\border(s)?\b.*\b(history|status|where|latest|recent|last(?!\s+(week|month|year|quarter)))",
                  # "what was the last thing customer 5 bought", but not a count or a top item over all orders
                  r"^(?!.*\b(most|how many|total|average|percent(age)?|share|proportion)\b).*\b(what|anything)\b.*"
                  r"\b(bought|buy|purchased|ordered)\b",
                  r"\b(where|status)\b.*\border", r"\b(orders?|purchases?)\b.*\bfor\b", r"\bmy orders?\b"],
        extract=_needs_customer,
        filler="Let me pull up those orders.",
        tags=("orders",),
        offer="check your orders",
        examples=["where's my order", "what's the status of my order", "has my order shipped",
                  "show me my recent orders", "what have I bought from you", "track my delivery",
                  "is my parcel on its way", "my order hasn't arrived", "list the orders for a customer",
                  "what did I purchase last month", "order history please", "when will my order be delivered",
                  "I'm calling about an order I placed", "can you see if my order went out", "did my order ship",
                  "what happened to the thing I ordered", "how is my order doing", "I ordered something last week",
                  "has the package left yet", "any word on my shipment", "show the purchases of customer 4",
                  "what orders does Mark Evans have", "the item I bought never turned up",
                  "I'm still waiting for my delivery", "still waiting on the thing I ordered"],
    )
    registry.add(
        reschedule_appointment,
        triggers=[r"\b(reschedule|move|change|push|shift|switch|postpone|rearrange)\b.*\b(appointment|booking)",
                  # "could we move it to friday": a move with a new day or time
                  rf"\b(move|change|shift|switch|push)\s+(it|that|this)\b.*\b(to|back|forward|until)\b.*{_WHEN}",
                  # "could I come at three instead of ten", "can we make it next week instead"
                  rf"{_WHEN}.*\binstead\b|\binstead of\b.*{_WHEN}",
                  rf"\b(change|move)\s+the\s+(date|day|time)\s+of\b.*\b{_VISIT}",
                  r"\b(new|different|another|later|earlier)\s+(date|day|time)\b",
                  r"\b(a|one|two|few|couple of)\s+(days?|weeks?|hours?)\s+(later|earlier)\b",
                  r"\b(bring|push|put|move)\s+(the|my|it|that|this)\b.*\b(forward|back|earlier|later)\b",
                  # "Tuesday doesn't work for me anymore, can we do Thursday": a day ruled out, another offered
                  rf"\b(doesn'?t|does not|won'?t|will not|no longer)\s+(work|suit)\b.*\b(can|could|shall)\s+(we|i|you)\b.*{_WHEN}"],
        extract=_extract_reschedule,
        tags=("appointments",),
        offer="move an appointment to another time",
        examples=["reschedule my appointment", "move my appointment to another day", "change the time of my booking",
                  "can I switch my appointment to the afternoon", "I need a different time for my visit",
                  "postpone my appointment", "bring my appointment forward", "push my booking back an hour",
                  "can we find another time for my appointment", "my appointment needs to be on a different date",
                  "could you make my appointment later in the day", "I have a conflict, can we rearrange my appointment",
                  "move appointment 7 to wednesday at 11", "I'd rather come in on a different day",
                  "change my visit to next week", "can my booking be an hour earlier"],
    )
    registry.add(
        cancel_appointment,
        triggers=[rf"{_CANCEL}.*\b{_VISIT}", rf"\b{_VISIT}.*{_CANCEL}",
                  rf"\b(won'?t|don'?t|do not|no longer)\s+(be\s+)?(need|require|want)(ing)?\b.*\b{_VISIT}",
                  # "I don't need anyone to come out after all"
                  r"\b(won'?t|don'?t|do not|no longer)\s+(be\s+)?(need|require|want)(ing)?\s+(anyone|anybody|someone"
                  r"|somebody|the \w+|an? \w+)\s+to come\b",
                  rf"\b{_VISIT}.*\b(isn'?t|is not|not)\s+needed\b",
                  rf"\b(not|n't)\s+go(ing)?\s+ahead\b.*\b{_VISIT}",
                  r"\btake\b.*\boff\s+(the|my|your)\s+(schedule|calendar|books|list)\b"],
        extract=_extract_appointment_id,
        tags=("appointments",),
        offer="cancel an appointment",
        examples=["cancel my appointment", "I don't need the appointment anymore", "please cancel the booking",
                  "I won't be coming in, cancel it", "remove my appointment", "delete my reservation",
                  "I have to cancel my visit", "take me off the schedule",
                  "I can't come to my appointment, please cancel", "forget about the appointment",
                  "I no longer want the appointment", "count me out of my appointment",
                  "cancel appointment 5", "scratch my visit on monday", "I won't make it, so drop the booking",
                  "please call off the technician's visit", "undo my booking"],
    )
    registry.add(
        schedule_appointment,
        # "make an appointment" books one; "make my appointment" is turning up to it
        triggers=[rf"\b(schedule|book|set up|arrange|organi[sz]e|make\s+(an?|another|new|one more))\b.*\b{_VISIT}",
                  # asking for one: "can I get a slot", "I'd like a repair" (not "do I have an appointment")
                  rf"\b(get|want|need|like|grab|request)\s+(an?|another|new)\s+(new\s+)?{_VISIT}",
                  rf"\b(free|open|available|spare)\s+{_VISIT}", rf"\b{_VISIT}\s+(left|free|open|available)\b",
                  r"\bany chance of\s+(an?|getting)\b",
                  # "put me down for Thursday", "pencil me in", "can you fit us in"
                  r"\b(put|pencil|fit|squeeze|book)\s+(me|us)\s+(down|in)\b"],
        extract=_extract_schedule,
        filler="Let me check the calendar.",
        tags=("appointments",),
        offer="book an appointment",
        examples=["book an appointment", "I'd like to make an appointment", "schedule a repair visit",
                  "can I come in on monday", "I need a technician to come out", "set up a consultation for next week",
                  "do you have any openings on friday", "get me an appointment for a cleaning",
                  "I want to book a time to see you", "is there availability tomorrow morning",
                  "I'd like someone to come and repair my boiler", "reserve an appointment for me",
                  "when could I come in for a checkup", "arrange a visit from a technician",
                  "book me in for tuesday at 2 pm", "I'd like an engineer to install it next week",
                  "can I get an appointment on the 12th", "I need to see someone about a repair"],
    )
    registry.add(
        list_appointments,
        triggers=[  # questions about a booking that exists
                  r"\bam i\s+(still\s+)?(down|booked|scheduled|pencill?ed)\b",
                  r"\b(engineer|technician|plumber|electrician|someone|somebody|appointment|visit|repair)\b.*"
                  r"\bstill\s+(coming|on|happening|going ahead)\b",
                  r"\b(do i have|have i got|is there)\s+(anything|something)\s+(coming up|booked|scheduled|planned)\b",
                  rf"\bconfirm\b.*\b{_VISIT}",
                  rf"\b(can'?t|don'?t|do not) remember\b.*\b{_VISIT}",
                  r"\bwhen\b.*\b(am i|i'?m)\s+(supposed|meant|due)\s+to\b"],
        broad_triggers=[r"\bappointments?\b"],
        extract=_needs_customer,
        tags=("appointments",),
        offer="check your appointments",
        examples=["what appointments do I have", "when is my appointment", "show my upcoming appointments",
                  "do I have a booking with you", "what's on my schedule", "list the appointments for a customer",
                  "when am I due to come in", "is my appointment still on",
                  "what day is my appointment", "do I have anything booked", "tell me about my upcoming appointments",
                  "check my appointments",
                  "what are customer 6's bookings", "when's my repair visit",
                  "have I got an appointment this week", "what time is my booking",
                  "what time is the engineer coming", "when will the technician get here"],
    )
    registry.add(
        lookup_customer,
        triggers=[r"\b(look ?up|find|pull up|search for)\b.*\b(customer|account|client|record)",
                  r"\b(look ?up|find|pull up)\s+(customer|account|client)?\s*\w+"],
        # A caller saying who they are ("I'm customer 2", "hi, it's Maria Gonzalez") names the
        # customer for whatever else they ask in the same breath; alone, it is a lookup.
        broad_triggers=[r"\b(my name is|this is|i am|i'm)\b.*\b(zip|customer|account)", r"\bmy name(?: is|'s)\b",
                        r"^\W*(hi|hello|hey)\W+(it'?s|this is)\s+[a-z'-]+(\s+[a-z'-]+)?\W*(here|speaking|calling)?\W*$"],
        extract=_extract_lookup,
        tags=("customers",),
        offer="look up your account",
        examples=["look up my account", "find a customer", "my name is John Smith", "this is Anna Lee speaking",
                  "can you find my details", "search for a client by name", "I'd like to check my account",
                  "I'm an existing customer", "pull up customer number 5",
                  "hi, it's David Brown here", "do you have my details on record", "who is customer 8",
                  "find the account for Sarah Jones",
                  "am I in your system", "look up the caller with phone number 555 0100", "you should have me as Chris Walker"],
    )
