"""What the grid asks of the site now: limits, prices, shed levels, emergencies.

:func:`grid_signal` turns the OpenADR 3 event intervals in force (as
:class:`GridInterval`, one payload value each, from the VEN's interval expansion) into one
:class:`GridSignal` that the site controls apply. Payload types and their meaning are the
OpenADR 3.1.0 enumerations (``docs/enumerations/event-interval-payloads.schema.yaml``):

* ``IMPORT_CAPACITY_LIMIT`` — the site's maximum import (units from the event's payload
  descriptor; ``KW`` assumed, ``W`` and ``MW`` converted); several in force: the lowest
  (the most restrictive wins);
* ``PRICE`` / ``EXPORT_PRICE`` — energy prices (currency and units from the descriptor;
  ``USD/MWh`` style per MWh assumed, per kWh converted); several: the highest;
* ``SIMPLE`` — level 0..3 ("normal, moderate, high, emergency shed"); several: the highest;
  mapped to a share of the EVs' headroom by :class:`GridResponse` ``simple_shares``;
* ``ALERT_GRID_EMERGENCY`` — any in force sheds every EV to its minimum current and lets a
  BESS discharge to cover the site (never below its SoC floor);
* ``GHG`` — recorded (g/kWh), not acted on.

Pure logic; time injected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

_POWER_TO_KW = {"KW": 1.0, "W": 0.001, "MW": 1000.0}


@dataclass(frozen=True)
class GridInterval:
    """One payload value of an event interval in force over ``[start, end)``.

    ``end`` None: indefinite. ``units`` from the event's payload descriptor (None: the
    payload type's default). ``priority``: the event's (lower number = higher priority).
    """

    event_id: str
    payload_type: str
    value: float | int | str | bool | None
    start: datetime
    end: datetime | None
    units: str | None = None
    priority: int | None = None


@dataclass(frozen=True)
class GridResponse:
    """How the site answers the grid (operator's configuration).

    ``simple_shares``: share of the EVs' headroom kept at each SIMPLE level (0 keeps only
    the EVSEs' minimum current); ``price_ceiling_per_mwh``: above this import price the
    EVs charge at their minimum only (None: prices are not acted on).
    """

    simple_shares: Mapping[int, float] = field(
        default_factory=lambda: {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.0}
    )
    price_ceiling_per_mwh: float | None = None


@dataclass(frozen=True)
class GridSignal:
    """The grid's requests in force at one time (see the module docstring).

    ``import_limit_kw``: None when no limit event is in force; ``ev_share``: share of the
    EVs' headroom they may use (1 = all, 0 = minimum current only); ``emergency``: an
    ALERT_GRID_EMERGENCY is in force; ``reasons``: the events behind it, for the log.
    """

    import_limit_kw: float | None = None
    price_per_mwh: float | None = None
    export_price_per_mwh: float | None = None
    simple_level: int | None = None
    emergency: bool = False
    ghg_g_per_kwh: float | None = None
    ev_share: float = 1.0
    events: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _per_mwh(value: float, units: str | None) -> float:
    u = (units or "").upper()
    return value * 1000.0 if u.endswith("KWH") and not u.endswith("MWH") else value


def in_force(intervals: Iterable[GridInterval], now: datetime) -> list[GridInterval]:
    """The intervals containing ``now`` (start inclusive, end exclusive)."""
    return [i for i in intervals if i.start <= now and (i.end is None or now < i.end)]


def grid_signal(
    intervals: Iterable[GridInterval], now: datetime, response: GridResponse | None = None
) -> GridSignal:
    """The :class:`GridSignal` in force at ``now``; conflicts resolve to the most restrictive.

    Raises nothing: a value that is not a number where one is needed is skipped (and named
    in ``reasons``).
    """
    resp = response or GridResponse()
    active = in_force(intervals, now)
    limit: float | None = None
    price: float | None = None
    export: float | None = None
    level: int | None = None
    ghg: float | None = None
    emergency = False
    reasons: list[str] = []
    for i in sorted(active, key=lambda a: (a.event_id, a.payload_type, a.start)):
        t = i.payload_type.upper()
        if t == "ALERT_GRID_EMERGENCY":
            emergency = True
            reasons.append(f"{i.event_id}: grid emergency ({i.value})")
            continue
        x = _number(i.value)
        if x is None:
            reasons.append(f"{i.event_id}: {t} value {i.value!r} is not a number; ignored")
            continue
        if t == "IMPORT_CAPACITY_LIMIT":
            kw = x * _POWER_TO_KW.get((i.units or "KW").upper(), 1.0)
            limit = kw if limit is None else min(limit, kw)
        elif t == "PRICE":
            p = _per_mwh(x, i.units)
            price = p if price is None else max(price, p)
        elif t == "EXPORT_PRICE":
            p = _per_mwh(x, i.units)
            export = p if export is None else max(export, p)
        elif t == "SIMPLE":
            lv = max(0, min(3, int(x)))
            level = lv if level is None else max(level, lv)
        elif t == "GHG":
            ghg = x if ghg is None else max(ghg, x)
    share = 1.0
    if level is not None:
        share = min(share, float(resp.simple_shares.get(level, 1.0)))
        if level:
            reasons.append(f"SIMPLE level {level}: EVs keep {share:.0%} of their headroom")
    ceiling = resp.price_ceiling_per_mwh
    if ceiling is not None and price is not None and price > ceiling:
        share = 0.0
        reasons.append(f"price {price:.2f}/MWh above the ceiling {ceiling:.2f}: EVs at minimum")
    if emergency:
        share = 0.0
    if limit is not None:
        reasons.append(f"import capacity limit {limit:.1f} kW")
    return GridSignal(
        import_limit_kw=limit,
        price_per_mwh=price,
        export_price_per_mwh=export,
        simple_level=level,
        emergency=emergency,
        ghg_g_per_kwh=ghg,
        ev_share=share,
        events=tuple(sorted({i.event_id for i in active})),
        reasons=tuple(reasons),
    )


def ev_limit_kw(
    signal: GridSignal, site_limit_kw: float, non_ev_kw: float, ev_minimum_kw: float
) -> float:
    """Import limit [kW] for the DLM under a grid signal.

    ``min(site limit, import capacity limit)``, then the EVs' headroom above their
    minimum power is scaled by ``signal.ev_share``: ``non_ev + ev_min + share x (limit -
    non_ev - ev_min)``; never above the limit. With share 0 the DLM can give each EVSE its
    minimum and no more (or pause it when even that does not fit).
    """
    limit = site_limit_kw
    if signal.import_limit_kw is not None:
        limit = min(limit, signal.import_limit_kw)
    floor = non_ev_kw + ev_minimum_kw
    if signal.ev_share >= 1.0 or limit <= floor:
        return limit
    return min(limit, floor + max(0.0, signal.ev_share) * (limit - floor))
