"""``migrid replay RUN_DIR``: a recorded field day as a scenario for ``migrid run``.

:func:`replay_run` reads a field run folder written by ``migrid bench`` (``scenario.yaml``
with ``kind: field``, ``traces.parquet``, ``events.parquet``; files only, no :mod:`hil`
import) and writes ``<out>/<name>.yaml``, ``<name>_sessions.csv`` and
``<name>_base_load.csv``, so that a field day becomes a regression case.

Replay rules:

* **Stations**: ids, kind, EVSE count, OCPP version and meter interval from the field
  file, as ``StationGroup(ids=[...])`` (stations of one layout share a group). The
  bench's per-station ``phase_rotation`` is not kept (the twin rotates by station order).
* **Sessions** (``<name>_sessions.csv``, :mod:`twin.inputs.recorded`): one per
  transaction the **CSMS** recorded (``transaction.started`` / ``transaction.ended``
  events of source ``csms``): arrival and departure are the CSMS's times of the start and
  end events, the EVSE is the one the CSMS names, the id token the transaction's. Energy:
  the end event's ``energy_wh`` (meter values, stop register minus start register); a
  transaction still open when the field run stopped ends at the field run's end, its
  energy from the last ``energy_kwh`` trace of the EVSE minus the start register, plus
  the last power seen times the time since that register last changed (meter values lag
  by up to their interval). Its
  need (``needed_kwh``) is that energy plus one control step at the last power the CSMS
  saw, when the vehicle was still drawing power (> 50 W): it had not finished, so the
  replayed vehicle must not stop before the run end either. ``arrival_soc``: the first
  SoC the CSMS saw in the session (blank without SoC meter values); ``battery_kwh``:
  energy x 0.92 / SoC gained, when the session gained at least 5 % SoC (else blank);
  ``max_power_kw``: the highest power the CSMS saw in the session (a lower bound of the
  vehicle's capability: the DLM may have held it back; blank when it never drew power).
* **Non-EV load** (``<name>_base_load.csv``, ``site.base_load.kind: series``): the site
  import the field recorded (``site/import_kw``: the meter as the site controller read it)
  minus the EV power the CSMS saw (``site/ev_power_kw``); with an **emulated** meter the
  emulated PV and BESS powers are added back (the replay emulates them again), with a
  physical meter they never reached it. Clipped at 0, averaged over each control step
  ``(t_k, t_k+1]`` and written at ``t_k`` (the twin uses the value at a step's start);
  steps without a sample hold the previous value.
* **Site devices**: every physical binding becomes an emulated device of the same
  ratings (addresses dropped; a meter reads import positive). The emulated **building is
  dropped**: its load, and a physical meter's whole non-EV reading, is in the base-load
  series. A physical PV or BESS's real power is in a physical meter's reading as well, so
  its emulated stand-in counts it a second time: the summary notes it.
* **Grid**: the field's ``grid`` section (programs, events with their ``publish_at``
  times, price program, response) is copied, so the replay's VTN publishes the same
  events at the same times. The VEN records only event ids (``ven.event_received``), so
  a field run without a ``grid`` section has no events to rebuild (noted when the VEN
  received some).
* **Run**: start = field start (``bench.started``) floored to the step; step = the field
  step rounded to whole seconds (at least 1 s); duration = from that start to the field
  end (``bench.stopped``, else the last trace) in whole steps; the field seed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from twin.scenario import Scenario, ScenarioError, parse_scenario, read_yaml

__all__ = ["ReplayError", "ReplaySummary", "replay_run", "replay_with_summary", "summarize"]

#: grid-to-battery efficiency assumed when estimating a battery from SoC gained
ASSUMED_EFFICIENCY = 0.92
#: a vehicle drawing more than this at the field's end was still charging [kW]
STILL_CHARGING_KW = 0.05
#: least SoC gain from which a battery capacity is estimated
MIN_SOC_GAIN = 0.05
#: a vehicle drawing less than this share of its set-point was limited by itself
VEHICLE_LIMITED_SHARE = 0.9


class ReplayError(ScenarioError):
    """A run folder that cannot be replayed (not a field run, or files missing)."""


@dataclass
class ReplaySummary:
    """What a replay wrote: scenario path, sessions, energy [kWh], duration [h], notes."""

    scenario: Path
    sessions: int
    open_at_end: int
    energy_kwh: float
    duration_h: float
    step_s: int
    notes: list[str] = field(default_factory=list)


def _read_field(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise ReplayError(f"{run_dir}: not a run folder")
    doc = read_yaml(run_dir / "scenario.yaml", "run folder's scenario.yaml")
    if not isinstance(doc, dict):
        raise ReplayError(f"{run_dir}/scenario.yaml: not a mapping")
    kind = doc.get("kind")
    if kind != "field":
        raise ReplayError(
            f"{run_dir}: a {kind or 'unknown'} run folder; replay takes a field run "
            "recorded by `migrid bench` (scenario.yaml kind: field)")
    for name in ("events.parquet", "traces.parquet"):
        if not (run_dir / name).is_file():
            live = (run_dir / f"{name}.parts").exists()
            raise ReplayError(f"{run_dir}: no {name}" + (
                " (the bench is still running: replay a finished run)" if live else ""))
    return doc


def _series(traces: pd.DataFrame, entity: str, quantity: str) -> pd.Series:
    rows = traces[(traces.entity == entity) & (traces.quantity == quantity)]
    return rows.set_index("time")["value"].sort_index()


def _payloads(
    events: pd.DataFrame, kind: str, source: str = "csms"
) -> list[tuple[Any, dict[str, Any]]]:
    rows = events[(events.kind == kind) & (events.source == source)]
    return [(t, json.loads(p)) for t, p in zip(rows.time, rows.payload, strict=True)]


def _setpoint_kw(
    traces: pd.DataFrame, evse: str, window: slice, voltage_v: float
) -> pd.Series:
    """The DLM's set-point of an EVSE as power [kW] (AC: A per phase x 3 phases x V)."""
    amps = _series(traces, evse, "setpoint_a").loc[window]
    watts = _series(traces, evse, "setpoint_w").loc[window]
    both: pd.Series = pd.concat([amps * 3 * voltage_v / 1000.0, watts / 1000.0])
    return both.sort_index()


def _vehicle_peak_kw(power: pd.Series, setpoint_kw: pd.Series) -> float | None:
    """The vehicle's power limit as the field showed it, or None when unknown.

    Known when in at least one sample the vehicle drew power clearly below (< 90 %) the
    set-point in force (the lower of the set-points at that sample and the one before,
    as meter values lag a new set-point), i.e. the vehicle, not the DLM, was the limit:
    then the highest
    power seen in the session. A vehicle always at its set-point shows nothing of its
    own limit (the replay then uses the EVSE's rating).
    """
    drawing = power[power > STILL_CHARGING_KW]
    if drawing.empty:
        return None
    sp = setpoint_kw.groupby(level=0).last()
    # the power seen at a sample may still follow the set-point of the sample before
    sp = sp.where(~(sp.shift(1) < sp), sp.shift(1)).reindex(drawing.index, method="ffill")
    own_limit = drawing[sp.isna() | (drawing < VEHICLE_LIMITED_SHARE * sp)]
    return float(drawing.max()) if len(own_limit) else None


def _field_sessions(
    events: pd.DataFrame, traces: pd.DataFrame, stations: dict[str, int], end: pd.Timestamp,
    step_s: int, voltage_v: float, notes: list[str],
) -> pd.DataFrame:
    """Recorded sessions (module docstring) from the CSMS's transaction events."""
    ended = {(p["station"], str(p["transaction"])): (t, p)
             for t, p in _payloads(events, "transaction.ended")}
    rows: list[dict[str, Any]] = []
    for t0, p in _payloads(events, "transaction.started"):
        key = (p["station"], str(p["transaction"]))
        stop = ended.get(key)
        evse_id = int((stop[1] if stop else p).get("evse") or 0)
        if p["station"] not in stations or not 1 <= evse_id <= stations[p["station"]]:
            notes.append(f"transaction {key[1]} of {p['station']} on EVSE {evse_id} is not on "
                         "a known EVSE: left out")
            continue
        evse = f"{p['station']}/{evse_id}"
        t1 = stop[0] if stop else end
        window = slice(t0, t1)
        energy = _series(traces, evse, "energy_kwh").loc[window]
        power = _series(traces, evse, "power_kw").loc[window]
        soc = _series(traces, evse, "soc").loc[window]
        start_wh = p.get("meter_start_wh")
        if stop is not None and stop[1].get("energy_wh") is not None:
            kwh = float(stop[1]["energy_wh"]) / 1000.0
        elif len(energy):
            first = float(start_wh) / 1000.0 if start_wh is not None else float(energy.iloc[0])
            kwh = max(float(energy.iloc[-1]) - first, 0.0)
            # the register lags by up to a meter interval: extrapolate at the last power
            changed = energy.index[energy.diff().fillna(1.0) != 0][-1]
            since_h = max((pd.Timestamp(t1) - changed).total_seconds(), 0.0) / 3600.0
            kwh += (float(power.iloc[-1]) if len(power) else 0.0) * since_h
        else:
            kwh = 0.0
        needed: float | None = None
        last_kw = float(power.iloc[-1]) if len(power) else 0.0
        if stop is None and last_kw > STILL_CHARGING_KW:
            needed = kwh + last_kw * step_s / 3600.0
        arrival_soc = float(soc.iloc[0]) if len(soc) else None
        battery = None
        if len(soc) and float(soc.iloc[-1]) - float(soc.iloc[0]) >= MIN_SOC_GAIN:
            battery = kwh * ASSUMED_EFFICIENCY / (float(soc.iloc[-1]) - float(soc.iloc[0]))
        peak = _vehicle_peak_kw(power, _setpoint_kw(traces, evse, window, voltage_v))
        rows.append({
            "session_id": key[1] if key[1].startswith(p["station"]) else f"{p['station']}-{key[1]}",
            "evse": evse,
            "arrival": t0.isoformat(),
            "departure": pd.Timestamp(t1).isoformat(),
            "energy_kwh": round(kwh, 6),
            "id_token": p.get("id_token") or (stop[1].get("id_token") if stop else "") or "",
            "needed_kwh": round(needed, 6) if needed is not None else None,
            "arrival_soc": round(arrival_soc, 6) if arrival_soc is not None else None,
            "battery_kwh": round(battery, 3) if battery is not None else None,
            "max_power_kw": math.ceil(round(peak, 3) * 10) / 10 if peak else None,
            "open_at_end": stop is None,
        })
    columns = ["session_id", "evse", "arrival", "departure", "energy_kwh", "id_token",
               "needed_kwh", "arrival_soc", "battery_kwh", "max_power_kw", "open_at_end"]
    return pd.DataFrame(rows, columns=columns)


def _non_ev_load(
    traces: pd.DataFrame, meter_emulated: bool, start: datetime, steps: int, step_s: int
) -> pd.DataFrame:
    """Measured non-EV load per control step (module docstring): ``time``, ``power_kw``."""
    imp = _series(traces, "site", "import_kw")
    if imp.empty:
        raise ReplayError("traces.parquet has no site import_kw: nothing to take the "
                          "non-EV load from")
    load = imp - _series(traces, "site", "ev_power_kw").reindex(imp.index).fillna(0.0)
    if meter_emulated:
        for entity in ("pv", "bess"):
            load = load + _series(traces, entity, "power_kw").reindex(imp.index).fillna(0.0)
    load = load.clip(lower=0.0)
    edges = pd.date_range(start, periods=steps + 1, freq=timedelta(seconds=step_s))
    # sample at time t belongs to the step (t_k, t_k+1] that ends at or after it
    sample_ns = pd.DatetimeIndex(load.index).as_unit("ns").asi8
    k = np.searchsorted(edges.as_unit("ns").asi8, sample_ns, side="left") - 1
    binned = pd.Series(load.to_numpy(), index=np.clip(k, 0, steps - 1)).groupby(level=0).mean()
    values = binned.reindex(range(steps)).ffill().bfill()
    return pd.DataFrame({"time": [t.isoformat() for t in edges[:-1]],
                         "power_kw": values.round(4).to_numpy()})


def _emulated_devices(devices: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Field ``site_devices`` with physical bindings emulated, the building dropped."""
    out = dict(devices)
    if out.get("building") is not None:
        notes.append("the emulated building is dropped: its load is in the base-load series")
    out["building"] = None
    meter_physical = (out.get("meter") or {}).get("binding") == "physical"
    for name in ("meter", "pv", "bess", "transformer"):
        dev = out.get(name)
        if not isinstance(dev, dict) or dev.get("binding") != "physical":
            continue
        dev = {**dev, "binding": "emulated"}
        for key in ("host", "port", "base", "endpoint"):
            dev.pop(key, None)
        dev.pop("node_ids", None)
        if name == "meter":
            dev["import_positive"] = True
        out[name] = dev
        if name in ("pv", "bess") and meter_physical:
            notes.append(f"physical {name} replaced by an emulated one of the same ratings; "
                         "the physical meter's reading, and so the base-load series, "
                         f"already holds the real {name}'s power")
    return out


def _station_groups(stations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in stations:
        key = (s.get("kind", "ac_22kw"), int(s.get("evses", 1)),
               str(s.get("ocpp_version", "2.0.1")), int(s.get("meter_interval_s", 10)))
        group = groups.setdefault(key, {
            "ids": [], "kind": key[0], "evses": key[1], "ocpp_version": key[2],
            "meter_interval_s": key[3]})
        group["ids"].append(str(s["id"]))
    return list(groups.values())


def _name(run_dir: Path, doc: dict[str, Any]) -> str:
    base = run_dir.resolve().name or str(doc.get("name", "field"))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) + "-replay"


def replay_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the scenario of a field run folder (module docstring); returns its path.

    Writes ``<out_dir>/<name>.yaml``, ``<name>_sessions.csv``, ``<name>_base_load.csv``
    with ``<name>`` = the run folder's name + ``-replay``; the scenario refers to the
    CSV files relative to itself and is checked with the normal loader before returning.

    Raises:
        ReplayError: not a field run folder (a twin run, no ``events.parquet`` ...).
        ScenarioError: the field file's sections do not form a valid scenario.
    """
    return replay_with_summary(run_dir, out_dir).scenario


def replay_with_summary(run_dir: str | Path, out_dir: str | Path) -> ReplaySummary:
    """:func:`replay_run`, returning what was written (for the CLI's summary)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    doc = _read_field(run_dir)
    events = pd.read_parquet(run_dir / "events.parquet")
    traces = pd.read_parquet(run_dir / "traces.parquet")
    if events.empty:
        raise ReplayError(f"{run_dir}: events.parquet holds no events")
    notes: list[str] = []
    started = events[events.kind == "bench.started"].time
    t_start = started.min() if len(started) else (
        traces.time.min() if len(traces) else events.time.min())
    stopped = events[events.kind == "bench.stopped"].time
    t_end = stopped.max() if len(stopped) else (
        traces.time.max() if len(traces) else events.time.max())
    run = doc.get("run") or {}
    step_s = max(1, round(float(run.get("step_s", 5.0))))
    epoch = pd.Timestamp(t_start).value // 1_000_000_000
    start = datetime.fromtimestamp(epoch - epoch % step_s, UTC)
    steps = max(1, math.ceil((pd.Timestamp(t_end) - pd.Timestamp(start)).total_seconds()
                             / step_s))
    duration_h = steps * step_s / 3600.0

    stations = list(doc.get("stations") or [])
    layout = {str(s["id"]): int(s.get("evses", 1)) for s in stations}
    voltage_v = float((doc.get("site") or {}).get("voltage_v", 230.0))
    sessions = _field_sessions(events, traces, layout, pd.Timestamp(t_end), step_s, voltage_v,
                               notes)
    devices = doc.get("site_devices")
    meter_emulated = devices is not None and (devices.get("meter") or {}).get(
        "binding", "emulated") == "emulated"
    base = _non_ev_load(traces, meter_emulated, start, steps, step_s)

    name = _name(run_dir, doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions_file = f"{name}_sessions.csv"
    base_file = f"{name}_base_load.csv"
    site = {**(doc.get("site") or {}),
            "base_load": {"kind": "series", "file": base_file}}
    scenario: dict[str, Any] = {
        "name": name,
        "description": (f"Replay of the field run {run_dir.name} ({doc.get('name')}) by "
                        "migrid replay: recorded sessions, measured non-EV load, the "
                        "field's grid events."),
        "site": site,
        "stations": _station_groups(stations),
        "sessions": {"dataset": "recorded", "file": sessions_file},
        "controllers": doc.get("controllers") or {},
        "run": {"start": start.isoformat().replace("+00:00", "Z"),
                "duration_h": duration_h, "step_s": step_s,
                "seed": int(run.get("seed", 0))},
    }
    if devices is not None:
        scenario["site_devices"] = _emulated_devices(devices, notes)
    if doc.get("grid") is not None:
        scenario["grid"] = doc["grid"]
    elif (events.kind == "ven.event_received").any():
        notes.append("the VEN received events but the field file has no grid section: "
                     "events.parquet holds only their ids, so the replay has no grid events")
    if "regression" in Scenario.model_fields:
        scenario["regression"] = True
    sessions.drop(columns=["open_at_end"]).to_csv(out_dir / sessions_file, index=False)
    base.to_csv(out_dir / base_file, index=False)
    path = out_dir / f"{name}.yaml"
    parse_scenario(scenario, str(path), out_dir)  # the normal loader's checks
    path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
    return ReplaySummary(
        scenario=path, sessions=len(sessions), open_at_end=int(sessions.open_at_end.sum()),
        energy_kwh=float(sessions.energy_kwh.sum()), duration_h=duration_h, step_s=step_s,
        notes=notes)


def summarize(summary: ReplaySummary) -> str:
    """One line: sessions (open at the end), energy [kWh], duration and step."""
    return (f"{summary.sessions} sessions ({summary.open_at_end} open at the end), "
            f"{summary.energy_kwh:.3f} kWh delivered, "
            f"{summary.duration_h * 3600:.0f} s at {summary.step_s} s steps")
