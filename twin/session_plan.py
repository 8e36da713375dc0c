"""Turn recorded charging sessions into the arrivals and departures of a run.

Pure planning, no I/O: recorded station ids are mapped to the scenario's EVSEs, each
session gets an EV model, an arrival SoC, an id token and the driver's app input. The
plan is a deterministic function of the sessions, the layout and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class EvModel:
    """An EV model as far as charging is concerned (ev2gym ``ev_specs.json`` fields)."""

    name: str
    battery_capacity_kwh: float
    ac_max_power_kw: float
    ac_phases: int
    dc_max_power_kw: float
    v2g: bool = False
    ac_max_discharge_kw: float = 0.0
    dc_max_discharge_kw: float = 0.0


@dataclass(frozen=True)
class PlannedSession:
    """One replayed session.

    ``needed_kwh`` is the energy the driver needs at the EVSE meter; ``arrival_soc`` and
    ``target_soc`` bound the vehicle's battery (0..1). ``driver_departure`` and
    ``driver_energy_kwh`` are what the driver typed into the app (ACN ``claimed``
    sessions), else None.
    """

    session_id: str
    recorded_station_id: str
    evse: str
    arrival: datetime
    departure: datetime
    model: EvModel
    arrival_soc: float
    target_soc: float
    needed_kwh: float
    id_token: str
    driver_departure: datetime | None
    driver_energy_kwh: float | None


@dataclass(frozen=True)
class SessionPlan:
    """All sessions of a run in arrival order, and the ones refused for want of an EVSE."""

    sessions: tuple[PlannedSession, ...]
    refused: tuple[str, ...]


def assign_evses(
    recorded_ids: Sequence[str], evses: Sequence[str], explicit: dict[str, str]
) -> dict[str, str]:
    """Map recorded station ids to EVSE names.

    Explicit entries win. The other ids, sorted, are spread evenly over ``evses`` when
    there are fewer ids than EVSEs (so that every station group, e.g. both OCPP versions,
    gets sessions), and go round-robin over ``evses`` when there are more.
    """
    mapping = dict(explicit)
    rest = sorted(set(recorded_ids) - set(explicit))
    n, m = len(rest), len(evses)
    for i, rid in enumerate(rest):
        mapping[rid] = evses[i * m // n] if n <= m else evses[i % m]
    return mapping


def plan_sessions(
    sessions: pd.DataFrame,
    evses: Sequence[str],
    models: Sequence[EvModel],
    weights: Sequence[float],
    *,
    seed: int,
    target_soc: float,
    min_arrival_soc: float,
    charge_efficiency: float,
    station_map: dict[str, str] | None = None,
) -> SessionPlan:
    """Plan the replay of ``sessions`` on ``evses``.

    Args:
        sessions: frame from ``twin.inputs.acn_sessions.load_acn_sessions`` (columns
            session_id, station_id, arrival, departure, estimated_departure,
            requested_energy_kwh, delivered_energy_kwh, claimed; UTC times), in arrival
            order.
        evses: EVSE names ``"<station>/<evse>"`` in a fixed order.
        models: EV models to draw from.
        weights: draw weight of each model (its registrations).
        seed: scenario seed; session i draws its model from ``default_rng([seed, i])``.
        target_soc: state of charge (0..1) at which each vehicle stops charging.
        min_arrival_soc: lowest arrival state of charge (0..1); a larger need is capped.
        charge_efficiency: grid-to-battery efficiency; the need is metered at the EVSE,
            the battery gains need * efficiency.
        station_map: explicit recorded-id → EVSE entries.

    Returns:
        the plan; a session whose EVSE is busy takes the first free EVSE in ``evses``
        order, and is refused when none is free at its arrival.
    """
    if len(evses) == 0:
        raise ValueError("no EVSEs to replay sessions on")
    mapping = assign_evses(sessions["station_id"].tolist(), evses, station_map or {})
    p = np.asarray(weights, dtype=float)
    p = p / p.sum()
    busy_until: dict[str, datetime] = {}
    planned: list[PlannedSession] = []
    refused: list[str] = []
    records: list[dict[Any, Any]] = sessions.to_dict("records")
    for i, row in enumerate(records):
        arrival: datetime = row["arrival"].to_pydatetime()
        departure: datetime = row["departure"].to_pydatetime()
        evse = mapping[row["station_id"]]
        if busy_until.get(evse, arrival) > arrival:
            free = [e for e in evses if busy_until.get(e, arrival) <= arrival]
            if not free:
                refused.append(str(row["session_id"]))
                continue
            evse = free[0]
        busy_until[evse] = departure
        rng = np.random.default_rng([seed, i])
        model = models[int(rng.choice(len(models), p=p))]
        claimed = bool(row["claimed"])
        need = float(row["requested_energy_kwh"] if claimed else row["delivered_energy_kwh"])
        window = (target_soc - min_arrival_soc) * model.battery_capacity_kwh / charge_efficiency
        need = min(max(need, 0.0), window)
        arrival_soc = target_soc - need * charge_efficiency / model.battery_capacity_kwh
        est = row["estimated_departure"]
        planned.append(
            PlannedSession(
                session_id=str(row["session_id"]),
                recorded_station_id=str(row["station_id"]),
                evse=evse,
                arrival=arrival,
                departure=departure,
                model=model,
                arrival_soc=arrival_soc,
                target_soc=target_soc,
                needed_kwh=need,
                id_token=f"ACN{i:06d}",
                driver_departure=est.to_pydatetime() if claimed and not pd.isna(est) else None,
                driver_energy_kwh=float(row["requested_energy_kwh"]) if claimed else None,
            )
        )
    return SessionPlan(tuple(planned), tuple(refused))
