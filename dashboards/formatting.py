"""How numbers, KPIs and times are written on the dashboard.

Money (a KPI whose value is a decimal string, unit an ISO 4217 code) is shown as the
string itself or as an exact ``Decimal``, never through a float.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

#: Names shown for the KPIs of ``kpis.json`` (others are shown by their key).
KPI_LABELS = {
    "peak_import_kw": "Peak grid import",
    "peak_ev_power_kw": "Peak EV load",
    "site_import_kwh": "Grid import",
    "energy_delivered_kwh": "Energy delivered",
    "energy_requested_kwh": "Energy requested",
    "energy_unmet_kwh": "Energy unmet",
    "energy_met_share": "Energy met",
    "energy_cost": "Energy cost",
    "limit_violations": "Limit violations",
    "limit_violation_kwh": "Energy over limit",
    "limit_violation_max_kw": "Largest violation",
    "sessions_completed": "Sessions completed",
    "sessions_open_at_end": "Sessions open at end",
    "sessions_refused": "Sessions refused",
}

#: KPIs shown in the run list, in order.
HEADLINE_KPIS = (
    "peak_import_kw",
    "energy_delivered_kwh",
    "energy_met_share",
    "limit_violations",
    "energy_cost",
)


def kpi_label(name: str) -> str:
    """Human name of a KPI key."""
    return KPI_LABELS.get(name, name.replace("_", " "))


def number(value: float | int | Decimal | None, digits: int = 4) -> str:
    """A number for reading: ints as they are, floats to ``digits`` significant digits."""
    if value is None:
        return "\N{EN DASH}"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "\N{EN DASH}"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:,.{digits}g}"


def exact(value: float | int | Decimal | None) -> str:
    """A number written so that reading it back gives the same decimal value.

    Decimals as their string, ints as they are, floats with 12 significant digits (which
    undoes binary rounding such as ``0.1 + 0.2``); None as an empty string.
    """
    if value is None:
        return ""
    if isinstance(value, Decimal | int):
        return str(value)
    text = f"{value:.12g}"
    return "0" if text == "-0" else text


def kpi_value(value: Any, unit: str) -> str:
    """One KPI value with its unit, for a card or a table cell."""
    if value is None:
        return "\N{EN DASH}"
    if isinstance(value, str):  # money: a decimal string
        return f"{value} {unit}".strip()
    if unit == "1":
        return number(value)
    return f"{number(value)} {unit}"


def share_or_value(name: str, value: Any, unit: str) -> str:
    """A KPI value; a ``*_share`` KPI (unit 1) as a percentage."""
    if name.endswith("_share") and unit == "1" and isinstance(value, int | float):
        return f"{float(value) * 100:.1f} %"
    return kpi_value(value, unit)


def when(t: datetime | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM`` (empty for None)."""
    if t is None:
        return ""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
