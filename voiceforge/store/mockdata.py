"""Deterministic mock business data (customers, orders, appointments) and its JSON export."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from sqlalchemy import delete, select

from voiceforge.store.db import Database
from voiceforge.store.models import Appointment, Customer, Order

# Common, unambiguous names: speech recognizers spell them one way.
FIRST_NAMES = [
    "Alice", "Brian", "Carmen", "David", "Emma", "Frank", "Grace", "Henry", "Isabel", "James",
    "Karen", "Lucas", "Maria", "Nathan", "Olivia", "Peter", "Rachel", "Samuel", "Sophia", "Thomas",
    "Victor", "William", "Laura", "Daniel", "Hannah",
]
LAST_NAMES = [
    "Johnson", "Smith", "Garcia", "Miller", "Brown", "Wilson", "Taylor", "Anderson", "Thomas",
    "Moore", "Martin", "Jackson", "White", "Harris", "Clark", "Lewis", "Walker", "Young", "Allen",
    "King",
]
ITEMS = [
    "wireless headphones", "coffee maker", "running shoes", "desk lamp", "backpack",
    "water bottle", "phone case", "yoga mat", "bluetooth speaker", "electric kettle",
]
ORDER_STATUSES = ["processing", "shipped", "delivered", "delivered", "returned"]
SERVICES = ["consultation", "cleaning", "checkup", "repair", "installation"]


def generate(db: Database, customers: int = 40, seed: int = 7, today: dt.date | None = None) -> dict[str, int]:
    """Replace the mock data with a fresh, seeded set.

    Customer ``i`` (1-based) is named ``FIRST_NAMES[(i-1) % 25] + LAST_NAMES[...]`` in a fixed,
    seed-shuffled order, so tests can find people by id. Each customer gets 1 to 4 orders and 0
    to 2 appointments in the 30 days after ``today`` (UTC; default: now).

    Returns:
        Row counts: {"customers": n, "orders": n, "appointments": n}.
    """
    rng = random.Random(seed)
    today = today or dt.datetime.now(dt.UTC).date()
    start = dt.datetime.combine(today, dt.time(0, 0), tzinfo=dt.UTC)
    pairs = [(f, last) for last in LAST_NAMES for f in FIRST_NAMES]
    rng.shuffle(pairs)
    if customers > len(pairs):
        pairs += [(f"{f}", f"{last} {i}") for i in range(2, customers // len(pairs) + 2) for f, last in pairs]
    counts = {"customers": 0, "orders": 0, "appointments": 0}
    if db.dialect == "duckdb":  # DuckDB has no setval: new tables restart every id sequence at 1
        db.reset()
    with db.db_session() as s:
        s.execute(delete(Appointment))
        s.execute(delete(Order))
        s.execute(delete(Customer))
        for i in range(1, customers + 1):
            first, last = pairs[i - 1]
            customer = Customer(
                id=i,
                name=f"{first} {last}",
                phone=f"+1555{i:07d}",
                email=f"{first.lower()}.{last.lower().replace(' ', '')}@example.com",
                zip_code=f"{rng.randint(10000, 99999)}",
                tier=rng.choice(["standard", "standard", "gold", "platinum"]),
                created_at=start - dt.timedelta(days=rng.randint(30, 900)),
            )
            s.add(customer)
            counts["customers"] += 1
            for _ in range(rng.randint(1, 4)):
                s.add(
                    Order(
                        customer_id=i,
                        item=rng.choice(ITEMS),
                        total_cents=rng.randint(900, 25000),
                        status=rng.choice(ORDER_STATUSES),
                        placed_at=start - dt.timedelta(days=rng.randint(1, 120), hours=rng.randint(0, 23)),
                    )
                )
                counts["orders"] += 1
            for _ in range(rng.randint(0, 2)):
                s.add(
                    Appointment(
                        customer_id=i,
                        service=rng.choice(SERVICES),
                        starts_at=start + dt.timedelta(days=rng.randint(1, 30), hours=rng.choice([9, 10, 11, 14, 15, 16])),
                        duration_min=rng.choice([30, 45, 60]),
                        status="scheduled",
                    )
                )
                counts["appointments"] += 1
        s.flush()
        if db.dialect == "postgresql":  # explicit ids leave the sequence behind
            for table in ("customers", "orders", "appointments"):
                s.connection().exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
                )
        if db.dialect == "duckdb":  # the customers' ids were explicit: move their sequence past them
            s.connection().exec_driver_sql(f"SELECT max(nextval('customers_id_seq')) FROM range({customers})")
    return counts


def export_json(db: Database, folder: Path) -> Path:
    """Write customers, orders and appointments to ``folder/mockdata-YYYYmmddTHHMMSSZ.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"mockdata-{stamp}.json"
    with db.read_session() as s:
        data = {
            "exported_at": stamp,
            "customers": [
                {"id": c.id, "name": c.name, "phone": c.phone, "email": c.email, "zip_code": c.zip_code, "tier": c.tier}
                for c in s.scalars(select(Customer).order_by(Customer.id))
            ],
            "orders": [
                {"id": o.id, "customer_id": o.customer_id, "item": o.item, "total_cents": o.total_cents,
                 "status": o.status, "placed_at": o.placed_at.isoformat()}
                for o in s.scalars(select(Order).order_by(Order.id))
            ],
            "appointments": [
                {"id": a.id, "customer_id": a.customer_id, "service": a.service,
                 "starts_at": a.starts_at.isoformat(), "duration_min": a.duration_min, "status": a.status}
                for a in s.scalars(select(Appointment).order_by(Appointment.id))
            ],
        }
    path.write_text(json.dumps(data, indent=2))
    return path
