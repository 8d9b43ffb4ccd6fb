"""Repository functions over the mock business data: customers, orders, appointments.

The tools in ``voiceforge/tools/business.py`` phrase and validate; these functions only read
and write rows, returning plain dicts. Times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any

from sqlalchemy import or_, select

from voiceforge.store.db import Database
from voiceforge.store.models import Appointment, Customer, Order


class SlotTaken(ValueError):
    """The requested appointment time overlaps a scheduled appointment."""


def _customer(c: Customer) -> dict[str, Any]:
    return {"customer_id": c.id, "name": c.name, "tier": c.tier, "phone": c.phone, "email": c.email,
            "zip_code": c.zip_code}


def _by_name(session, name: str) -> list[Customer]:  # noqa: ANN001
    """Exact (case-insensitive) match first, then the closest spelling with a clear lead.

    Speech recognizers mishear first names ("Lord Garcia" for "Laura Garcia"), so a fuzzy
    match is accepted when it scores at least 0.7 and leads the runner-up by 0.05.
    """
    wanted = " ".join(name.strip().lower().split())
    exact = session.scalars(select(Customer).where(Customer.name.ilike(wanted))).all()
    if exact:
        return list(exact)
    people = session.scalars(select(Customer)).all()
    parts = wanted.split()
    if len(parts) == 1:
        return [c for c in people if parts[0] in c.name.lower().split()]
    scored = sorted(
        ((difflib.SequenceMatcher(None, wanted, c.name.lower()).ratio(), c) for c in people),
        key=lambda sc: -sc[0],
    )
    if not scored or scored[0][0] < 0.7:
        return []
    if len(scored) == 1 or scored[0][0] - scored[1][0] >= 0.05:
        return [scored[0][1]]
    return [c for score, c in scored[:3] if score >= 0.7]


def find_customers(db: Database, name: str | None = None, phone: str | None = None,
                   customer_id: int | None = None) -> list[dict[str, Any]]:
    """Customers matching an id, else a phone number (E.164 or digits), else a spoken name.

    Returns:
        Dicts with customer_id, name, tier, phone, email, zip_code; [] when none match.
    """
    with db.read_session() as s:
        if customer_id:
            found = [c for c in [s.get(Customer, customer_id)] if c]
        elif phone:
            digits = "".join(ch for ch in phone if ch.isdigit())
            found = list(s.scalars(select(Customer).where(or_(Customer.phone == phone,
                                                               Customer.phone == "+" + digits))))
        else:
            found = _by_name(s, name or "")
        return [_customer(c) for c in found]


def customer_by_phone(db: Database, phone: str) -> dict[str, Any] | None:
    """The customer whose phone is exactly ``phone`` (E.164), or None."""
    with db.read_session() as s:
        c = s.scalars(select(Customer).where(Customer.phone == phone)).first()
        return _customer(c) if c else None


def recent_orders(db: Database, customer_id: int, limit: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A customer and their ``limit`` most recent orders, newest first.

    Returns:
        (customer dict, orders: order_id, item, total ("$12.50"), status, placed_on (ISO date)).

    Raises:
        LookupError: no such customer.
    """
    with db.read_session() as s:
        customer = s.get(Customer, customer_id)
        if customer is None:
            raise LookupError(customer_id)
        orders = s.scalars(
            select(Order).where(Order.customer_id == customer_id).order_by(Order.placed_at.desc()).limit(limit)
        ).all()
        return _customer(customer), [
            {"order_id": o.id, "item": o.item, "total": f"${o.total_cents / 100:.2f}", "status": o.status,
             "placed_on": o.placed_at.date().isoformat()}
            for o in orders
        ]


def _appointment(a: Appointment) -> dict[str, Any]:
    return {"appointment_id": a.id, "service": a.service, "starts_at": a.starts_at.strftime("%Y-%m-%dT%H:%M"),
            "duration_min": a.duration_min, "status": a.status}


def scheduled_appointments(db: Database, customer_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A customer and their scheduled appointments, soonest first.

    Raises:
        LookupError: no such customer.
    """
    with db.read_session() as s:
        customer = s.get(Customer, customer_id)
        if customer is None:
            raise LookupError(customer_id)
        rows = s.scalars(
            select(Appointment)
            .where(Appointment.customer_id == customer_id, Appointment.status == "scheduled")
            .order_by(Appointment.starts_at)
        )
        return _customer(customer), [_appointment(a) for a in rows]


def _check_free(s, when: dt.datetime, minutes: int, skip_id: int | None = None) -> None:  # noqa: ANN001
    for a in s.scalars(select(Appointment).where(Appointment.status == "scheduled")):
        start = a.starts_at if a.starts_at.tzinfo else a.starts_at.replace(tzinfo=dt.UTC)
        end = start + dt.timedelta(minutes=a.duration_min)
        if a.id != skip_id and start < when + dt.timedelta(minutes=minutes) and when < end:
            raise SlotTaken(a.id)


def book_appointment(db: Database, customer_id: int, service: str, when: dt.datetime,
                     minutes: int) -> dict[str, Any]:
    """Book an appointment starting at ``when`` (UTC) for ``minutes``.

    Raises:
        LookupError: no such customer.
        SlotTaken: the time overlaps a scheduled appointment.
    """
    with db.db_session() as s:
        if s.get(Customer, customer_id) is None:
            raise LookupError(customer_id)
        _check_free(s, when, minutes)
        a = Appointment(customer_id=customer_id, service=service.lower(), starts_at=when, duration_min=minutes)
        s.add(a)
        s.flush()
        return _appointment(a)


def move_appointment(db: Database, appointment_id: int, when: dt.datetime) -> dict[str, Any]:
    """Move a scheduled appointment to ``when`` (UTC).

    Raises:
        LookupError: no scheduled appointment with that id.
        SlotTaken: the new time overlaps another scheduled appointment.
    """
    with db.db_session() as s:
        a = s.get(Appointment, appointment_id)
        if a is None or a.status != "scheduled":
            raise LookupError(appointment_id)
        _check_free(s, when, a.duration_min, skip_id=a.id)
        a.starts_at = when
        s.flush()
        return _appointment(a)


def cancel_appointment(db: Database, appointment_id: int) -> dict[str, Any]:
    """Cancel a scheduled appointment.

    Raises:
        LookupError: no scheduled appointment with that id.
    """
    with db.db_session() as s:
        a = s.get(Appointment, appointment_id)
        if a is None or a.status != "scheduled":
            raise LookupError(appointment_id)
        a.status = "cancelled"
        return _appointment(a)
