"""Billing of a finished run: audit, price, split, reimburse, reward, and the site's bill.

Issue 8, items 2, 4, 5 and 8 wired into runs. :func:`bill_run` reads a run folder (twin
or bench, the format is shared) and bills it under a :class:`twin.scenario_billing.Billing`
section:

1. **Sessions** from ``events.parquet``: the CSMS's ``transaction.started`` /
   ``transaction.ended`` events (station, EVSE, transaction, id token, energy register at
   start and stop in Wh, first and last SoC the vehicle reported over OCPP). A twin run's
   ``session.arrived`` event at the same EVSE and instant gives the session id and the
   vehicle's battery capacity (kWh); without it (a bench) the id is
   ``{station}/{evse}/{transaction}`` and the capacity comes from the section's
   ``vehicle_capacity_kwh`` by id token, else from the bench's emulated vehicle on that
   EVSE (``emulated_stations.vehicles``), else the session is unverifiable.
   Transactions still open at the end of the run are not billed (counted).
2. **Telemetry** (:class:`controllers.billing.audit.SessionTelemetry`): energy = stop -
   start register; register samples = start, every ``reported_energy_kwh`` trace sample
   of the EVSE inside the session (the register the CSMS received, recorded by the twin
   when billing is on; a run without them falls back to ``energy_kwh``), stop. Registers
   are taken at 1 Wh (the resolution of OCPP 1.6 ``meterStart``/``meterStop``), so an
   honest register never "goes back" by a rounding.
3. **Audit** (:func:`controllers.billing.audit.audit`, threshold and efficiency from the
   section).
4. **Pricing**: the session's CDR periods are the intervals between register samples
   merged into clock-aligned 15-min blocks (energy of each, negative steps of a
   rolled-back register counted as 0; time = block length), priced with the OCPI
   tariff (:meth:`Cdr.build`) in the site's time zone; the invoice is split with the
   section's rule (:func:`split`). A session at a ``home_stations`` station is priced
   at the home price (a one-component tariff ``HOME-{fleet_id}``), paid by the fleet,
   and reimbursed to the driver only when verified (:func:`reimburse_home`). Flagged
   sessions are still priced (the CDR carries the audit status) and reported as
   disputed in ``billing.json``.
5. **Rewards** (:func:`controllers.ledger.rewards.process_stream`): one interval per
   15-min block, priced at the utility tariff's first-tier energy rate in force at its
   start, ``peak`` when its period is a peak period, with the V2G export, the grid-event
   flag and the ASAP baseline of :mod:`twin.billing_rewards` (so deferred charging, V2G
   export, demand response and kWh shifted are all measured); only verified sessions are minted
   (flagged / unverifiable ones are ``failed`` / ``pending``); idempotent on the event id
   ``reward:{session_id}:{rule_id}``.
6. **Site bill** (:func:`controllers.billing.tariffs.utility.bill`): the ``site/import_kw``
   trace (mean kW over the step ending at each sample time, so the interval starts one
   step earlier) under the utility tariff.

Everything is stored in the run folder's ``ledger.sqlite`` (or the database given) through
:class:`controllers.billing.store.BillingStore` and the token ledger; every write is
idempotent, so re-running (also after a SIGKILL mid-way) stores nothing twice and loses
nothing. ``billing.json`` (the summary) and the billing KPIs in ``kpis.json`` are written
atomically at the end. Money is ``Decimal`` throughout; JSON carries it as strings.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from controllers.billing.audit import AuditResult, AuditStatus, SessionTelemetry, audit
from controllers.billing.invoice import (
    Cdr,
    FleetPaysShare,
    Invoice,
    Payer,
    Reimbursement,
    reimburse_home,
    split,
)
from controllers.billing.store import BillingStore, SessionRecord
from controllers.billing.tariffs.ocpi import ChargingPeriod, ChargingSession, Tariff
from controllers.billing.tariffs.utility import Bill, UtilityTariff, bill
from controllers.ledger import Ledger, LedgerDb, Verification, open_ledger
from controllers.ledger.rewards import Award, SessionActivity, process_stream
from twin import kpis as kpi_doc
from twin.billing_rewards import RateClock, RunSignals, read_signals, session_intervals
from twin.scenario_billing import Billing

__all__ = ["RunBilling", "SessionBilling", "SessionData", "bill_run", "load_billing",
           "read_sessions"]

_WH = Decimal("0.001")
_H = Decimal(3600)


class BillingRunError(ValueError):
    """A run folder that cannot be billed (no events, no billing section ...)."""


@dataclass(frozen=True)
class SessionData:
    """One finished transaction as read from a run folder.

    ``registers_wh``: (time, register in whole Wh) from start to stop, strictly
    increasing times; ``soc_*`` as reported over OCPP (0..1); ``capacity_kwh`` of the
    vehicle (None unknown).
    """

    session_id: str
    station_id: str
    evse_id: int
    transaction_id: str
    id_token: str
    start: datetime
    end: datetime
    start_wh: int
    stop_wh: int
    soc_start: float | None
    soc_end: float | None
    capacity_kwh: float | None
    registers_wh: tuple[tuple[datetime, int], ...]

    @property
    def energy_kwh(self) -> Decimal:
        """Energy dispensed per the reported register, stop - start (kWh, 1 Wh)."""
        return Decimal(self.stop_wh - self.start_wh) * _WH


@dataclass(frozen=True)
class SessionBilling:
    """Everything billing produced for one session."""

    data: SessionData
    at_home: bool
    audit: AuditResult
    cdr: Cdr
    invoice: Invoice
    reimbursement: Reimbursement | None
    awards: tuple[Award, ...] = ()

    @property
    def tokens(self) -> Decimal:
        """Tokens minted for the session (this pass or an earlier one)."""
        return sum((a.tokens for a in self.awards if a.status in ("minted", "replayed")),
                   Decimal(0))


@dataclass(frozen=True)
class RunBilling:
    """The billing of one run (see :func:`bill_run`); ``summary`` is ``billing.json``."""

    run_id: str
    currency: str
    sessions: tuple[SessionBilling, ...]
    open_at_end: int
    site_bill: Bill
    utility_tariff_id: str
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ reading the run


def _raw_scenario(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "scenario.yaml"
    if not path.exists():
        return {}
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


def load_billing(run_dir: Path, file: Path | None = None) -> Billing:
    """The billing section to use for ``run_dir``.

    ``file``: a YAML file holding a ``billing:`` mapping (or the mapping itself), its
    relative paths taken from its folder; else the ``billing:`` of the run's resolved
    ``scenario.yaml``.

    Raises:
        BillingRunError: none found, or an invalid section (``billing.<path>: reason``
            lines, as for scenarios).
    """
    from pydantic import ValidationError

    from twin.scenario import format_errors

    if file is not None:
        doc = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        section = doc.get("billing", doc) if isinstance(doc, dict) else None
        base = Path(file).parent
        source = str(file)
    else:
        section = _raw_scenario(run_dir).get("billing")
        base = run_dir
        source = str(run_dir / "scenario.yaml")
    if not isinstance(section, dict):
        raise BillingRunError(f"{source}: no billing section")
    try:
        return Billing.model_validate(section, context={"base_dir": str(base)})
    except ValidationError as err:
        raise BillingRunError(
            f"{source}: invalid billing section\n{format_errors(err, ('billing',))}") from None


def _payloads(events: pd.DataFrame, kind: str, source: str | None = None) -> pd.DataFrame:
    sel = events[events["kind"] == kind]
    if source is not None:
        sel = sel[sel["source"] == source]
    rows = [{"time": t.to_pydatetime(), **json.loads(p)}
            for t, p in zip(sel["time"], sel["payload"], strict=True)]
    return pd.DataFrame(rows)


def _wh(x: float) -> int:
    return round(float(x))


def _fleet_capacities(raw: dict[str, Any]) -> dict[str, float]:
    fleet = (raw.get("vehicles") or {}).get("fleet") or []
    return {str(m["name"]): float(m["battery_capacity_kwh"]) for m in fleet
            if isinstance(m, dict) and "name" in m and "battery_capacity_kwh" in m}


def _bench_capacities(raw: dict[str, Any]) -> dict[str, float]:
    """Battery capacity per EVSE of a bench's emulated vehicles (EVSEs with one capacity)."""
    plugs = (raw.get("emulated_stations") or {}).get("vehicles") or []
    seen: dict[str, set[float]] = {}
    for p in plugs:
        if isinstance(p, dict) and "evse" in p:
            seen.setdefault(str(p["evse"]), set()).add(float(p.get("battery_kwh", 60.0)))
    return {evse: caps.pop() for evse, caps in seen.items() if len(caps) == 1}


def read_sessions(run_dir: Path, capacities: dict[str, float] | None = None
                  ) -> tuple[list[SessionData], int]:
    """The finished transactions of a run folder, and how many were open at its end.

    Sessions are sorted by (start, session id). See the module docstring for sources;
    ``capacities`` (kWh per id token) is the last resort for the battery capacity.

    Raises:
        BillingRunError: no ``events.parquet``.
    """
    path = run_dir / "events.parquet"
    if not path.exists():
        raise BillingRunError(f"{run_dir}: no events.parquet (not a finished run folder)")
    events = pd.read_parquet(path, filters=[("kind", "in", [
        "transaction.started", "transaction.ended", "session.arrived"])])
    started = _payloads(events, "transaction.started", "csms")
    ended = _payloads(events, "transaction.ended", "csms")
    arrived = _payloads(events, "session.arrived", "twin")
    raw = _raw_scenario(run_dir)
    caps = _fleet_capacities(raw)
    bench_caps = _bench_capacities(raw)
    twin_sessions: dict[tuple[str, datetime], dict[str, Any]] = {}
    for rec in _records(arrived):
        twin_sessions[(str(rec["evse"]), rec["time"])] = rec
    starts: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in _records(started):
        starts[(str(rec["station"]), str(rec["transaction"]))] = rec
    registers = _register_samples(run_dir)
    out: list[SessionData] = []
    done: set[tuple[str, str]] = set()
    for rec in _records(ended):
        station, tx = str(rec["station"]), str(rec["transaction"])
        st = starts.get((station, tx))
        if st is None:
            continue  # started before the recording began: nothing to bill it on
        done.add((station, tx))
        evse = int(rec["evse"])
        start, end = st["time"], rec["time"]
        meter_start = st.get("meter_start_wh", rec.get("meter_start_wh"))
        meter_stop = rec.get("meter_stop_wh")
        if meter_start is None or meter_stop is None:
            continue
        name = f"{station}/{evse}"
        twin = twin_sessions.get((name, start))
        session_id = str(twin["session_id"]) if twin else f"{station}/{evse}/{tx}"
        cap = twin.get("battery_capacity_kwh") if twin else None
        if cap is None and twin is not None:
            cap = caps.get(str(twin.get("vehicle")))
        token = str(rec.get("id_token") or st.get("id_token") or "")
        if cap is None:
            cap = (capacities or {}).get(token, bench_caps.get(name))
        start_wh, stop_wh = _wh(meter_start), _wh(meter_stop)
        points: list[tuple[datetime, int]] = [(start, start_wh)]
        series = registers.get(name)
        if series is not None:
            lo = series.index.searchsorted(pd.Timestamp(start), side="right")
            hi = series.index.searchsorted(pd.Timestamp(end), side="left")
            times = pd.DatetimeIndex(series.index[lo:hi]).to_pydatetime()
            values = series.to_numpy()[lo:hi]
            points.extend((t, _wh(v * 1000.0)) for t, v in zip(times, values, strict=True))
        if end > points[-1][0]:
            points.append((end, stop_wh))
        else:  # the stop at the instant of the last sample: the stop wins
            points[-1] = (points[-1][0], stop_wh)
        out.append(SessionData(
            session_id=session_id, station_id=station, evse_id=evse, transaction_id=tx,
            id_token=token,
            start=start, end=end, start_wh=start_wh, stop_wh=stop_wh,
            soc_start=_opt_float(rec.get("soc_start")), soc_end=_opt_float(rec.get("soc_end")),
            capacity_kwh=_opt_float(cap), registers_wh=tuple(points)))
    open_at_end = len(set(starts) - done)
    out.sort(key=lambda s: (s.start, s.session_id))
    return out, open_at_end


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in df.to_dict("records")] if len(df) else []


def _opt_float(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def _register_samples(run_dir: Path) -> dict[str, pd.Series]:
    """Per EVSE, the reported energy register samples (kWh) by time."""
    path = run_dir / "traces.parquet"
    if not path.exists():
        return {}
    t = pd.read_parquet(path, columns=["time", "entity", "quantity", "value"],
                        filters=[("quantity", "==", "reported_energy_kwh")])
    if not len(t):
        t = pd.read_parquet(path, columns=["time", "entity", "quantity", "value"],
                            filters=[("quantity", "==", "energy_kwh")])
    return {str(e): g.set_index("time")["value"].sort_index()
            for e, g in t.groupby("entity", sort=True)}


def site_import_series(run_dir: Path) -> pd.Series:
    """Site import [kW] indexed by the UTC *start* of evenly spaced intervals.

    The recorder stamps a step's mean import at the step's end. A twin run's steps are
    even: the series is the trace shifted back one step. A bench's wall-clock steps are
    not: each sample's energy (kW x its own step, the first one taking the median step)
    is summed into a regular grid of the median step (whole seconds, at least 1 s) from
    the first interval start, and the mean kW of each grid interval is returned (energy
    preserved exactly; a peak is smeared over at most one grid step).

    Raises:
        BillingRunError: no ``site/import_kw`` trace, or a single sample.
    """
    t = pd.read_parquet(run_dir / "traces.parquet", columns=["time", "value"],
                        filters=[("entity", "==", "site"), ("quantity", "==", "import_kw")])
    if not len(t):
        raise BillingRunError(f"{run_dir}: no site/import_kw trace to bill the site on")
    s = t.set_index("time")["value"].sort_index()
    if len(s) < 2:
        raise BillingRunError(f"{run_dir}: one site/import_kw sample is not a series")
    idx = pd.DatetimeIndex(s.index).tz_convert("UTC")
    diffs = pd.Series(idx).diff().dropna()
    if diffs.nunique() == 1:
        return pd.Series(s.to_numpy(), index=idx - diffs.iloc[0], name="value")
    step = max(pd.Timedelta(seconds=1), diffs.median().round("1s"))
    d = pd.Series(idx).diff().fillna(diffs.median()).to_numpy()
    starts = idx - pd.TimedeltaIndex(d)
    kwh = s.to_numpy() * (pd.TimedeltaIndex(d).total_seconds().to_numpy() / 3600.0)
    origin = starts[0]
    bins = ((starts - origin) // step).astype(int)
    energy = pd.Series(kwh).groupby(bins).sum()
    n = int(bins.max()) + 1
    energy = energy.reindex(range(n), fill_value=0.0)
    grid = pd.DatetimeIndex([origin + i * step for i in range(n)])
    return pd.Series(energy.to_numpy() * 3600.0 / step.total_seconds(), index=grid,
                     name="value")


# ------------------------------------------------------------------ billing one session


def telemetry(s: SessionData, efficiency: float) -> SessionTelemetry:
    """The audit's view of a session (kWh floats from whole-Wh registers)."""
    return SessionTelemetry(
        session_id=s.session_id, energy_kwh=(s.stop_wh - s.start_wh) / 1000.0,
        soc_start=s.soc_start, soc_end=s.soc_end, capacity_kwh=s.capacity_kwh,
        efficiency=efficiency, register_kwh=tuple(w / 1000.0 for _, w in s.registers_wh))


#: CDR periods and reward intervals: register steps merged into clock-aligned blocks [s].
PERIOD_S = 900
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def blocks(s: SessionData) -> list[tuple[datetime, datetime, int]]:
    """Register steps merged into clock-aligned 15-min blocks: (start, end, Wh >= 0).

    A step belongs to the block of its start; negative steps (a rolled-back register)
    count 0. Blocks never straddle a quarter hour when the samples are at most 15 min
    apart, so TOU restrictions on quarter hours (all OCPI and URDB ones in practice)
    price them exactly; it keeps the pricing cost at about 100 periods a day.
    """
    out: list[tuple[datetime, datetime, int]] = []
    key = None
    for (t0, w0), (t1, w1) in pairwise(s.registers_wh):
        k = (t0 - _EPOCH) // timedelta(seconds=PERIOD_S)
        if out and k == key:
            a, _, wh = out[-1]
            out[-1] = (a, t1, wh + max(w1 - w0, 0))
        else:
            out.append((t0, t1, max(w1 - w0, 0)))
            key = k
    return out


def charging_session(s: SessionData, time_zone: str) -> ChargingSession:
    """The OCPI session to price: one period per 15-min block (see :func:`blocks`)."""
    periods = []
    for t0, t1, wh in blocks(s):
        hours = Decimal(int((t1 - t0) / timedelta(microseconds=1))) / Decimal(3_600_000_000)
        periods.append(ChargingPeriod(start_date_time=t0, energy_kwh=Decimal(wh) * _WH,
                                      time_h=hours))
    end = s.end
    if not periods:  # start == stop instant: one empty period of 1 s
        end = s.start + timedelta(seconds=1)
        periods.append(ChargingPeriod(start_date_time=s.start))
    return ChargingSession(start_date_time=s.start, end_date_time=end, time_zone=time_zone,
                           charging_periods=periods)


def home_tariff(config: Billing) -> Tariff:
    """The home price as a one-component OCPI tariff (ENERGY, 1 Wh steps, no VAT)."""
    assert config.home_price_per_kwh is not None
    return Tariff.model_validate({
        "id": f"HOME-{config.fleet_id}", "currency": config.currency,
        "elements": [{"price_components": [{"type": "ENERGY", "step_size": 1,
                                            "price": str(config.home_price_per_kwh)}]}]})


def _verification(a: AuditResult) -> Verification:
    if a.status is AuditStatus.VERIFIED:
        return Verification.VERIFIED
    return Verification.FAILED if a.status is AuditStatus.FLAGGED else Verification.PENDING


def activity(s: SessionBilling, clock: RateClock, currency: str,
             signals: RunSignals | None = None) -> SessionActivity:
    """The reward rules' view of a session: one interval per 15-min block.

    Each with its export, grid-event flag and ASAP baseline
    (:func:`twin.billing_rewards.session_intervals`).
    """
    ivs = session_intervals(blocks(s.data), s.data.registers_wh,
                            f"{s.data.station_id}/{s.data.evse_id}", clock,
                            signals or RunSignals())
    return SessionActivity(session_id=s.data.session_id, driver_id=s.data.id_token or "unknown",
                           currency=currency, verification=_verification(s.audit),
                           ended_at=s.data.end, intervals=ivs)


# ------------------------------------------------------------------ the run


def bill_run(run_dir: Path, config: Billing | None = None, *,
             ledger: str | Path | None = None) -> RunBilling:
    """Bill the run in ``run_dir`` (see the module docstring) and store everything.

    Args:
        run_dir: a finished run folder (twin or bench).
        config: the billing section; default: the ``billing:`` of its ``scenario.yaml``.
        ledger: database of the ledger and billing records; default: the run folder
            (``ledger.sqlite``), or the ``ledger:`` URL of ``scenario.yaml`` when given.

    Returns:
        The run's billing; also written to ``billing.json`` and ``kpis.json``
        (``billing_*`` KPIs, money as strings with the currency as unit).

    Raises:
        BillingRunError: not a billable run folder or no billing section.
        controllers.billing.store.BillingConflictError: the database holds different
            records for the same sessions (e.g. billed under another tariff before).
    """
    run_dir = Path(run_dir)
    config = config if config is not None else load_billing(run_dir)
    raw = _raw_scenario(run_dir)
    site_tz = str((raw.get("site") or {}).get("timezone", "UTC"))
    run_id = run_dir.name
    tariff = config.tariff()
    utility = config.utility(site_tz)
    utility_id = config.utility_tariff_id()
    home = home_tariff(config) if config.home_stations else None
    rule = config.split.rule(config.currency)
    sessions, open_at_end = read_sessions(run_dir, config.vehicle_capacity_kwh)
    run_start = _run_start(raw, sessions)

    billed: list[SessionBilling] = []
    for s in sessions:
        at_home = s.station_id in config.home_stations
        result = audit(telemetry(s, config.efficiency), config.audit_threshold)
        cdr = Cdr.build(session_id=s.session_id, station_id=s.station_id,
                        evse_id=str(s.evse_id), id_token=s.id_token,
                        session=charging_session(s, site_tz),
                        tariff=home if at_home and home is not None else tariff,
                        audit_status=result.status, at_home=at_home)
        reimb = None
        if at_home:
            invoice = split(cdr, FleetPaysShare(Decimal(100)))
            if result.verified and config.home_price_per_kwh is not None:
                reimb = reimburse_home(cdr, config.home_price_per_kwh, config.currency)
        else:
            invoice = split(cdr, rule)
        billed.append(SessionBilling(s, at_home, result, cdr, invoice, reimb))

    site_bill = bill(utility, site_import_series(run_dir), kind="kw")

    db = open_ledger(ledger if ledger is not None else raw.get("ledger") or run_dir)
    try:
        billed = _store(db, config, tariff, home, billed, run_id, run_start, utility,
                        site_bill, utility_id, read_signals(run_dir))
    finally:
        db.close()
    out = RunBilling(run_id, config.currency, tuple(billed), open_at_end, site_bill,
                     utility_id)
    summary = summarise(out, config, tariff.id)
    out = RunBilling(run_id, config.currency, tuple(billed), open_at_end, site_bill,
                     utility_id, summary)
    _write_atomic(run_dir / "billing.json", json.dumps(summary, indent=2, sort_keys=True)
                  + "\n")
    _update_kpis(run_dir, summary)
    return out


def _run_start(raw: dict[str, Any], sessions: list[SessionData]) -> datetime:
    start = (raw.get("run") or {}).get("start")
    if isinstance(start, datetime):
        return start if start.tzinfo else start.replace(tzinfo=UTC)
    if isinstance(start, str):
        return datetime.fromisoformat(start.replace("Z", "+00:00"))
    return sessions[0].start if sessions else datetime(1970, 1, 1, tzinfo=UTC)


def _store(db: LedgerDb, config: Billing, tariff: Tariff, home: Tariff | None,
           billed: list[SessionBilling], run_id: str, run_start: datetime,
           utility: UtilityTariff, site_bill: Bill, utility_id: str,
           signals: RunSignals) -> list[SessionBilling]:
    """Write every record (idempotent) and mint the rewards; returns sessions with awards."""
    store = BillingStore(db)
    store.put_tariff(tariff, at=run_start)
    if home is not None:
        store.put_tariff(home, at=run_start)
    if config.rewards is not None:
        for r in config.rewards.rules:
            store.put_reward_rule(r, at=run_start)
    for b in billed:
        s = b.data
        store.save_session(SessionRecord(
            session_id=s.session_id, station_id=s.station_id, evse_id=str(s.evse_id),
            id_token=s.id_token, fleet_id=config.fleet_id, start=s.start, end=s.end,
            energy_kwh=s.energy_kwh, soc_start=s.soc_start, soc_end=s.soc_end,
            capacity_kwh=s.capacity_kwh, at_home=b.at_home, run_id=run_id))
        store.save_audit(b.audit, at=s.end)
        store.save_cdr(b.cdr)
        store.save_invoice(b.invoice)
    store.save_site_bill(run_id, site_bill, tariff_id=utility_id)
    if config.rewards is None:
        return billed
    clock = RateClock(utility, config.peak_periods)
    acts = [activity(b, clock, config.currency, signals) for b in billed]
    awards = process_stream(Ledger(db), config.rewards, acts)
    by_session: dict[str, list[Award]] = {}
    for a in awards:
        by_session.setdefault(a.session_id, []).append(a)
    return [SessionBilling(b.data, b.at_home, b.audit, b.cdr, b.invoice, b.reimbursement,
                           tuple(by_session.get(b.data.session_id, ())))
            for b in billed]


# ------------------------------------------------------------------ summary and KPIs


def reason_key(reason: str) -> str:
    """A reason without its figures, to count reasons over sessions.

    ``"variance 0.310 at or above 0.15"`` -> ``"variance at or above threshold"``;
    ``"register span 1.000 kWh differs from energy dispensed 2.000 kWh"`` ->
    ``"register span differs from energy dispensed"``.
    """
    if reason.startswith("variance "):
        return "variance at or above threshold"
    return re.sub(r"\s+", " ", re.sub(r"-?\d+(\.\d+)?( kWh)?", "", reason)).strip()


def _quantiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    a = np.asarray(xs)
    return {"n": len(xs), "min": float(a.min()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max()),
            "mean": float(a.mean())}


def summarise(rb: RunBilling, config: Billing, tariff_id: str) -> dict[str, Any]:
    """The ``billing.json`` document (money as Decimal strings in ``currency``)."""
    cur = rb.currency
    status = Counter(b.audit.status.value for b in rb.sessions)
    reasons: dict[str, Counter[str]] = {"flagged": Counter(), "unverifiable": Counter()}
    for b in rb.sessions:
        if b.audit.status is not AuditStatus.VERIFIED:
            for r in set(map(reason_key, b.audit.reasons)):
                reasons[b.audit.status.value][r] += 1
    zero = Decimal(0)
    total_incl = sum((b.cdr.total_incl_vat for b in rb.sessions), zero)
    total_excl = sum((b.cdr.total_excl_vat for b in rb.sessions), zero)
    driver = sum((b.invoice.driver_total for b in rb.sessions), zero)
    fleet = sum((b.invoice.fleet_total for b in rb.sessions), zero)
    disputed = sum((b.cdr.total_incl_vat for b in rb.sessions
                    if b.audit.status is AuditStatus.FLAGGED), zero)
    reimbursed = sum((b.reimbursement.amount for b in rb.sessions if b.reimbursement), zero)
    tokens = sum((b.tokens for b in rb.sessions), zero)
    energy = sum((b.cdr.energy_kwh for b in rb.sessions), zero)
    token = config.rewards.token if config.rewards is not None else None
    return {
        "run_id": rb.run_id,
        "currency": cur,
        "ocpi_tariff_id": tariff_id,
        "utility_tariff_id": rb.utility_tariff_id,
        "sessions": len(rb.sessions),
        "sessions_open_at_end": rb.open_at_end,
        "energy_kwh": str(energy),
        "audit": {
            "threshold": config.audit_threshold,
            "efficiency": config.efficiency,
            "verified": status.get("verified", 0),
            "flagged": status.get("flagged", 0),
            "unverifiable": status.get("unverifiable", 0),
            "flagged_reasons": dict(sorted(reasons["flagged"].items())),
            "unverifiable_reasons": dict(sorted(reasons["unverifiable"].items())),
            "variance_verified": _quantiles([b.audit.variance for b in rb.sessions
                                             if b.audit.verified
                                             and b.audit.variance is not None]),
        },
        "totals": {
            "cdr_excl_vat": str(total_excl),
            "cdr_incl_vat": str(total_incl),
            "driver": str(driver),
            "fleet": str(fleet),
            "disputed_flagged": str(disputed),
            "home_reimbursed_to_drivers": str(reimbursed),
        },
        "tokens": {"code": token, "minted": str(tokens),
                   "sessions_rewarded": sum(1 for b in rb.sessions if b.tokens > 0)},
        "site_bill": {
            "tariff_id": rb.utility_tariff_id,
            "total": str(rb.site_bill.total),
            "months": [{"month": m.month, "total": str(m.total),
                        "energy_kwh": str(m.energy_kwh.quantize(_WH)),
                        "peak_kw": str(m.peak_kw.quantize(_WH)),
                        "lines": [{"kind": x.kind, "description": x.description,
                                   "quantity": str(x.quantity.quantize(_WH)),
                                   "unit": x.unit, "rate": str(x.rate),
                                   "amount": str(x.amount)} for x in m.lines]}
                       for m in rb.site_bill.months],
        },
        "per_session": [{
            "session_id": b.data.session_id,
            "evse": f"{b.data.station_id}/{b.data.evse_id}",
            "id_token": b.data.id_token,
            "at_home": b.at_home,
            "status": b.audit.status.value,
            "variance": b.audit.variance,
            "reasons": list(b.audit.reasons),
            "energy_kwh": str(b.cdr.energy_kwh),
            "total": str(b.cdr.total_incl_vat),
            "driver": str(b.invoice.total(Payer.DRIVER)),
            "fleet": str(b.invoice.total(Payer.FLEET)),
            "reimbursed": str(b.reimbursement.amount) if b.reimbursement else "0",
            "tokens": str(b.tokens),
        } for b in rb.sessions],
    }


def billing_kpis(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``billing_*`` KPIs of a summary (counts unit "1", money strings with currency)."""
    cur = summary["currency"]
    a, t = summary["audit"], summary["totals"]
    n = summary["sessions"]
    out: dict[str, dict[str, Any]] = {
        "billing_sessions": {"value": n, "unit": "1"},
        "billing_verified": {"value": a["verified"], "unit": "1"},
        "billing_flagged": {"value": a["flagged"], "unit": "1"},
        "billing_unverifiable": {"value": a["unverifiable"], "unit": "1"},
        "billing_verified_share": {"value": round(a["verified"] / n, 6) if n else 1.0,
                                   "unit": "1"},
        "billing_revenue": {"value": t["cdr_incl_vat"], "unit": cur},
        "billing_driver_total": {"value": t["driver"], "unit": cur},
        "billing_fleet_total": {"value": t["fleet"], "unit": cur},
        "billing_disputed": {"value": t["disputed_flagged"], "unit": cur},
        "billing_home_reimbursed": {"value": t["home_reimbursed_to_drivers"], "unit": cur},
        "site_bill_total": {"value": summary["site_bill"]["total"], "unit": cur},
    }
    if summary["tokens"]["code"] is not None:
        out["billing_tokens_minted"] = {"value": summary["tokens"]["minted"],
                                        "unit": summary["tokens"]["code"]}
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _update_kpis(run_dir: Path, summary: dict[str, Any]) -> None:
    path = run_dir / "kpis.json"
    doc: dict[str, Any] = {}
    if path.exists():
        doc = json.loads(path.read_text(encoding="utf-8"))
    doc.setdefault("kpis", {}).update(billing_kpis(summary))
    _write_atomic(path, kpi_doc.dumps(doc))
