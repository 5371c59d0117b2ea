"""A small fleet of every kind with random readings, stored like ingest stores them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from cityops import catalog, registry
from cityops.catalog import Kind

AREAS = ("CY-JW", "CY-CW", "CY-SJ")
# 2026-01-31 08:00 UTC (16:00 local, before dusk) to 2026-02-01 04:00 UTC (12:00 local):
# covers switch-on, local midnight, the UTC month boundary, switch-off and morning daylight.
START = datetime(2026, 1, 31, 8, tzinfo=UTC)
END = datetime(2026, 2, 1, 4, tzinfo=UTC)

Row = tuple[str, int, int, Mapping[str, Any]]


def devices_csv() -> str:
    """Registry rows: lamps (mains and solar), room sensors, connectors, covers in 3 areas."""
    lines = [
        "device_id,kind,area_code,lat,lon,status,schedule_class,owner_unit,site_id,public,"
        "heated_area_m2"
    ]
    for a, area in enumerate(AREAS):
        for i in range(4):
            cls = "solar" if i == 3 else "mains"
            status = "maintenance" if (a, i) == (2, 2) else ""
            lines.append(f"SL-{a}-{i},streetlight,{area},39.9,116.4,{status},{cls},,,,")
        for i in range(3):
            lines.append(f"HT-{a}-{i},heating,{area},39.9,116.4,,,,,,80")
        for i in range(3):
            lines.append(f"CH-{a}-{i},charger,{area},39.9,116.4,,,,SITE-{a},true,")
        for i in range(2):
            lines.append(f"MH-{a}-{i},manhole,{area},39.9,116.4,,,telecom,,,")
    return "\n".join(lines) + "\n"


def register(conn: psycopg.Connection[Any]) -> None:
    """Import the fleet into the registry."""
    report = registry.import_devices(conn, list(registry.parse_records(devices_csv(), "csv")), "t")
    assert not report.errors, report.errors


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def random_rows(seed: int) -> dict[Kind, list[Row]]:
    """Readings every few minutes with random gaps and states, per device, in time order."""
    rng = np.random.default_rng(seed)
    out: dict[Kind, list[Row]] = {k: [] for k in Kind}
    span = _ms(END) - _ms(START)

    def times(step_min: float) -> list[int]:
        t = _ms(START) + int(rng.integers(0, 60_000 * step_min))
        got = []
        while t < _ms(START) + span:
            if rng.random() > 0.12:  # random gaps
                got.append(t)
            t += int(rng.integers(30_000, int(2 * 60_000 * step_min)))
        return got

    for a in range(len(AREAS)):
        for i in range(4):
            for t in times(8):
                state = str(rng.choice(["on", "off", "dimmed"], p=[0.6, 0.3, 0.1]))
                fault = str(rng.choice(["none", "lamp_failure"], p=[0.9, 0.1]))
                out[Kind.STREETLIGHT].append(
                    (f"SL-{a}-{i}", t, t, {"power_state": state, "fault": fault, "power_w": 90.0})
                )
        for i in range(3):
            for t in times(20):
                temp = float(np.round(rng.normal(18.5, 1.5), 1))
                out[Kind.HEATING].append((f"HT-{a}-{i}", t, t, {"temperature_c": temp}))
        for i in range(3):
            for t in times(6):
                status = str(rng.choice(["Available", "Charging", "Faulted", "Unavailable"]))
                out[Kind.CHARGER].append((f"CH-{a}-{i}", t, t, {"status": status}))
        for i in range(2):
            for t in times(25):
                event = str(rng.choice(["heartbeat", "open", "displacement", "overflow"]))
                out[Kind.MANHOLE].append(
                    (
                        f"MH-{a}-{i}",
                        t,
                        t,
                        {
                            "event": event,
                            "cover_open": bool(rng.random() < 0.1),
                            "displacement_mm": float(rng.uniform(0, 30)),
                            "water_level_cm": float(rng.uniform(0, 100)),
                        },
                    )
                )
    for kind, rows in out.items():
        spec = catalog.KINDS[kind]
        out[kind] = [(d, t, r, spec.validate_values(v)) for d, t, r, v in rows]
    return out


def complaint_rows(seed: int) -> list[dict[str, Any]]:
    """Heating (and some other) complaints in the range."""
    rng = np.random.default_rng(seed)
    out = []
    for n in range(25):
        at = START + timedelta(minutes=int(rng.integers(0, (END - START).total_seconds() // 60)))
        out.append(
            {
                "complaint_id": f"C-{seed}-{n}",
                "received_at": at,
                "category": str(rng.choice(["heating", "heating", "other"])),
                "area_code": str(rng.choice(AREAS)),
            }
        )
    return out


def store(conn: psycopg.Connection[Any], kind: Kind, rows: Sequence[Row]) -> None:
    """Insert readings into the kind's table (ON CONFLICT DO NOTHING, like ingest)."""
    spec = catalog.KINDS[kind]
    names = [f.name for f in spec.readings]
    cols = ", ".join(["device_id", "ts", *names])
    marks = ", ".join(["%s"] * (2 + len(names)))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {spec.table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
            [
                (d, datetime.fromtimestamp(t / 1000, UTC), *[v.get(n) for n in names])
                for d, t, _, v in rows
            ],
        )
    conn.commit()


def store_complaints(conn: psycopg.Connection[Any], records: Sequence[Mapping[str, Any]]) -> None:
    """Insert complaint records."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO complaints (complaint_id, received_at, category, area_code)"
            " VALUES (%(complaint_id)s, %(received_at)s, %(category)s, %(area_code)s)",
            list(records),
        )
    conn.commit()


def rates_table(
    conn: psycopg.Connection[Any],
) -> dict[tuple[str, str, str, datetime], tuple[float, float, int]]:
    """Everything in rates_hourly keyed by (area, kind, metric, hour)."""
    rows = conn.execute(
        "SELECT area_code, kind, metric, hour, numerator, denominator, samples FROM rates_hourly"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6]) for r in rows}
