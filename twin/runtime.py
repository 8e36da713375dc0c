"""Lock-step co-simulation of a depot: emulated stations and vehicles against the CSMS.

One control step k (DESIGN.md, "Data flow of one control step"):

1. exogenous events in (t_{k-1}, t_k] — vehicle arrivals and departures at their recorded
   times — come out of a simpy environment one by one; each is applied at its own time
   (the station integrates its physics up to it) and its OCPP exchange is awaited;
2. ``station.advance(t_k)`` for every station: physics over the rest of the interval with
   the set-points in force, then meter values over the wire;
3. ``quiesce()``; with ``site_devices`` (:mod:`twin.site_runtime`): the building, PV,
   BESS, site meter and transformer emulators advance, then the site energy controller
   reads them over Modbus TCP / OPC UA, writes BESS and PV set-points and hands the CSMS
   the measured non-EV load and the EVs' limit (without site devices the scenario's base
   load goes to the CSMS directly); ``csms.step(t_k)`` runs the DLM and sends charging
   profiles over the wire; ``quiesce()``;
4. the recorder samples every entity at t_k.

``quiesce()`` awaits every endpoint's ``drain()`` and repeats until one full pass finds
nothing in flight, so no request is in flight when time advances. Entities are visited in
sorted id order and every random draw comes from a generator seeded per entity from the
scenario seed: the same scenario and seed give the same traces and KPIs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import simpy

from controllers.csms import Csms, CsmsConfig, DlmConfig, EvseConfig, SiteConfig
from controllers.grid_signal import GridSignal, ev_limit_kw
from devices.charging_station import ChargingStation, EvseSpec, StationSpec
from devices.vehicle import VehicleSpec, VehicleState
from twin import ocpp_validation
from twin.grid_runtime import GridSide
from twin.kpis import KpiInputs, SessionOutcome, compute_kpis
from twin.kpis_grid import GridKpiInputs, grid_kpis
from twin.kpis_site import SiteKpiInputs, site_kpis
from twin.recorder import EventWriter, TraceWriter
from twin.run_inputs import RunInputs
from twin.scenario import STATION_KINDS, Scenario
from twin.scenario_billing import tamper_plan
from twin.scenario_faults import station_faults
from twin.session_plan import PlannedSession
from twin.site_runtime import SiteSide, worst_case_non_ev_kw

#: phaseRotation per station index: single-phase vehicles spread over L1, L2, L3.
PHASE_ROTATIONS = ("RST", "STR", "TRS")

ProgressCallback = Callable[[int, int, datetime], None]


@dataclass(frozen=True)
class PluggedEv:
    """A vehicle plugged in now.

    Its session, net energy at the EVSE meter since plug-in [kWh] (import - V2G export)
    and the vehicle's state of charge (0..1, None unknown).
    """

    session: PlannedSession
    net_kwh: float
    soc: float | None


class StepHook(Protocol):
    """An extra controller called at every control step, before the DLM runs.

    ``before_dlm`` gets the time, the step index, the CSMS (to set EVSE set-points with
    :meth:`~controllers.csms.Csms.set_evse_setpoint_kw`) and the vehicles plugged in now.
    """

    def before_dlm(  # noqa: D102
        self, now: datetime, k: int, csms: Csms, plugged: Sequence[PluggedEv]
    ) -> None: ...


class Endpoint(Protocol):
    """What the runtime needs of every protocol endpoint to quiesce it."""

    @property
    def busy(self) -> bool: ...  # noqa: D102

    async def drain(self) -> None: ...  # noqa: D102


@dataclass
class RunOutput:
    """What a finished run hands back to the CLI."""

    run_dir: Path
    kpis: dict[str, Any]


def station_specs(scenario: Scenario) -> list[StationSpec]:
    """Station specs of the scenario, in station-id order.

    AC EVSEs are 3-phase at the site voltage with rated current from the kind's power;
    their ``phase_rotation`` cycles RST, STR, TRS so that single-phase vehicles load the
    three site phases evenly.
    """
    specs: list[StationSpec] = []
    index = 0
    for group in scenario.stations:
        current_kind, power_kw = STATION_KINDS[group.kind]
        for station_id in group.station_ids():
            rotation = PHASE_ROTATIONS[index % 3]
            index += 1
            evses = tuple(
                EvseSpec(
                    evse_id=e,
                    kind=current_kind,
                    max_power_kw=power_kw,
                    phases=3,
                    voltage_v=scenario.site.voltage_v,
                    phase_rotation=rotation,
                    bidirectional=group.bidirectional and group.ocpp_version == "2.1",
                    # billing audits the SoC the vehicle reports (ISO 15118, AC too)
                    report_soc=scenario.billing is not None,
                )
                for e in range(1, group.evses + 1)
            )
            specs.append(
                StationSpec(
                    station_id=station_id,
                    ocpp_version=group.ocpp_version,
                    evses=evses,
                    meter_interval_s=group.meter_interval_s,
                )
            )
    return sorted(specs, key=lambda s: s.station_id)


def csms_config(scenario: Scenario, specs: Sequence[StationSpec]) -> CsmsConfig:
    """The CSMS's configuration: the operator's site and EVSE layout and DLM parameters."""
    site = scenario.site
    dlm = scenario.controllers.dlm
    return CsmsConfig(
        site=SiteConfig(
            grid_limit_kw=site.grid_limit_kw,
            phases=site.phases,
            voltage_v=site.voltage_v,
            safety_margin_kw=site.safety_margin_kw,
            non_ev_load_worst_case_kw=worst_case_non_ev_kw(scenario),
        ),
        dlm=DlmConfig(**dlm.model_dump()),
        known_stations=[s.station_id for s in specs],
        evses={
            s.station_id: [
                EvseConfig(
                    evse_id=e.evse_id,
                    kind=e.kind,
                    max_power_kw=e.max_power_kw,
                    phases=e.phases,
                    phase_rotation=e.phase_rotation,
                    bidirectional=e.bidirectional,
                )
                for e in s.evses
            ]
            for s in specs
        },
        response_timeout_s=scenario.run.ocpp_response_timeout_s,
        record_frames=scenario.run.record_frames,
        # a meter value judges a set-point once it covers a whole interval under it
        profile_violation_grace_s=float(
            max([scenario.run.step_s, *(g.meter_interval_s for g in scenario.stations)])
        ),
    )


class LockStepRuntime:
    """Runs a scenario to completion in virtual time and writes its run folder.

    Args:
        scenario: the validated scenario.
        inputs: its resolved real-data inputs (:class:`twin.run_inputs.RunInputs`).
        run_dir: the run folder to write (created by the caller).
        on_progress: called after each step with (step, steps, t_k).
        hook: an extra controller called at every step before the DLM (:class:`StepHook`),
            e.g. the market optimiser of :mod:`twin.market_control`.
    """

    def __init__(
        self,
        scenario: Scenario,
        inputs: RunInputs,
        run_dir: Path,
        on_progress: ProgressCallback | None = None,
        hook: StepHook | None = None,
    ) -> None:
        self.scenario = scenario
        self.hook = hook
        self.inputs = inputs
        self.run_dir = run_dir
        self.on_progress = on_progress
        self.events = EventWriter(run_dir / "events.parquet")
        self.traces = TraceWriter(run_dir / "traces.parquet")
        self._specs = station_specs(scenario)
        self._stations: dict[str, ChargingStation] = {}
        self._csms: Csms | None = None
        self._endpoints: list[Endpoint] = []
        self._outcomes: dict[str, SessionOutcome] = {}
        self._session_start_kwh: dict[str, float] = {}
        self._plugged: dict[str, tuple[PlannedSession, float]] = {}  # session, net start
        self._now = scenario.run.start
        self._tamper = tamper_plan(
            scenario.billing, [s.session_id for s in inputs.plan.sessions])

    # -- quiescence -----------------------------------------------------------------
    async def quiesce(self) -> None:
        """Return when no request, reply or spawned task is in flight on any endpoint."""
        while True:
            for endpoint in self._endpoints:
                await endpoint.drain()
            # frames already written to a socket are read by the peer's loop on the
            # next iterations: give the loop a few turns, then look again.
            for _ in range(3):
                await asyncio.sleep(0)
            if not any(e.busy for e in self._endpoints):
                return

    # -- exogenous events -----------------------------------------------------------
    def _arrivals(
        self, env: simpy.Environment, queue: list[tuple[str, Any]]
    ) -> Any:
        start = self.scenario.run.start
        for session in self.inputs.plan.sessions:
            delay = (session.arrival - start).total_seconds() - env.now
            if delay > 0:
                yield env.timeout(delay)
            env.process(self._departure_after_arrival(env, session, queue))

    def _departure_after_arrival(
        self, env: simpy.Environment, session: PlannedSession, queue: list[tuple[str, Any]]
    ) -> Any:
        queue.append(("arrive", session))
        yield env.timeout((session.departure - session.arrival).total_seconds())
        queue.append(("depart", session))

    async def _apply(self, action: str, session: PlannedSession, now: datetime) -> None:
        station_id, evse_text = session.evse.split("/")
        station = self._stations[station_id]
        evse_id = int(evse_text)
        assert self._csms is not None
        if action == "arrive":
            vc = self.scenario.vehicles
            spec = VehicleSpec(
                model=session.model.name,
                battery_capacity_kwh=session.model.battery_capacity_kwh,
                ac_max_power_kw=session.model.ac_max_power_kw,
                ac_phases=session.model.ac_phases,
                dc_max_power_kw=session.model.dc_max_power_kw,
                charge_efficiency=vc.charge_efficiency,
                taper_knee_soc=vc.taper_knee_soc,
                v2g=session.model.v2g,
                ac_max_discharge_kw=session.model.ac_max_discharge_kw,
                dc_max_discharge_kw=session.model.dc_max_discharge_kw,
            )
            state = VehicleState(soc=session.arrival_soc, target_soc=session.target_soc,
                                 min_soc=vc.v2g_min_soc)
            if session.driver_energy_kwh is not None or session.driver_departure is not None:
                self._csms.set_driver_input(
                    session.id_token, session.driver_energy_kwh, session.driver_departure
                )
            dishonest = self._tamper.get(session.session_id)
            if dishonest is not None:  # the twin's ground truth; billing never reads it
                self.events.sink(now, "twin", "session.dishonest", {
                    "session_id": session.session_id, "evse": session.evse,
                    "kinds": list(dishonest[0].kinds),
                    **dishonest[0].model_dump(exclude={"session", "fraction", "seed"},
                                              exclude_none=True),
                })
            await station.plug_in(evse_id, spec, state, session.id_token, now,
                                  tamper=dishonest[1] if dishonest is not None else None)
            reading = station.evse_state(evse_id)
            self._session_start_kwh[session.session_id] = reading.energy_register_kwh
            self._plugged[session.session_id] = (
                session, reading.energy_register_kwh - reading.export_register_kwh)
            self._outcomes[session.session_id] = SessionOutcome(
                session.session_id, session.evse, session.needed_kwh, 0.0, False
            )
            self.events.sink(now, "twin", "session.arrived", {
                "session_id": session.session_id, "evse": session.evse,
                "recorded_station_id": session.recorded_station_id,
                "vehicle": session.model.name, "arrival_soc": round(session.arrival_soc, 4),
                "battery_capacity_kwh": session.model.battery_capacity_kwh,
                "needed_kwh": round(session.needed_kwh, 3), "id_token": session.id_token,
            })
        else:
            await station.plug_out(evse_id, now)
            self._plugged.pop(session.session_id, None)
            delivered = station.evse_state(evse_id).energy_register_kwh - (
                self._session_start_kwh.pop(session.session_id)
            )
            self._outcomes[session.session_id] = SessionOutcome(
                session.session_id, session.evse, session.needed_kwh, delivered, True
            )
            self.events.sink(now, "twin", "session.departed", {
                "session_id": session.session_id, "evse": session.evse,
                "delivered_kwh": round(delivered, 4),
                "requested_kwh": round(session.needed_kwh, 4),
            })
        await self.quiesce()

    # -- recording ------------------------------------------------------------------
    def _ev_phase_kw(self) -> tuple[float, float, float]:
        """Mean EV power per site phase over the last step [kW] (EVSE currents x V)."""
        phases = [0.0, 0.0, 0.0]
        v = self.scenario.site.voltage_v
        for spec in self._specs:
            station = self._stations[spec.station_id]
            for evse in spec.evses:
                for i, current_a in enumerate(station.evse_state(evse.evse_id).current_a):
                    phases[i] += current_a * v / 1000.0
        return phases[0], phases[1], phases[2]

    def _sample(
        self,
        t: datetime,
        last_register: dict[str, float],
        dt_s: float,
        k: int,
        site_rows: list[tuple[str, str, float, str]] | None = None,
        site_import_kw: float | None = None,
    ) -> tuple[float, float, float]:
        assert self._csms is not None
        setpoints = self._csms.setpoints()
        rows: list[tuple[str, str, float, str]] = list(site_rows or [])
        ev_kw = 0.0
        for spec in self._specs:
            station = self._stations[spec.station_id]
            for evse in spec.evses:
                name = f"{spec.station_id}/{evse.evse_id}"
                reading = station.evse_state(evse.evse_id)
                register = reading.energy_register_kwh
                net = register - reading.export_register_kwh  # V2G export counts negative
                power_kw = (net - last_register.get(name, net)) * 3600.0 / dt_s
                last_register[name] = net
                ev_kw += power_kw
                rows.append((name, "power_kw", power_kw, "kW"))
                rows.append((name, "energy_kwh", register, "kWh"))
                rows.append((name, "offered_current_a", reading.offered_current_a, "A"))
                sp = setpoints.get((spec.station_id, evse.evse_id))
                if sp is not None:
                    unit = "A" if evse.kind == "AC" else "W"
                    rows.append((name, "setpoint_a" if unit == "A" else "setpoint_w", sp, unit))
                if reading.soc is not None:
                    rows.append((name, "soc", reading.soc, "1"))
        if self.scenario.billing is not None:
            rows += self._reported_rows()
        base_kw = self._base_kw[k - 1]
        import_kw = base_kw + ev_kw if site_import_kw is None else site_import_kw
        rows.append(("site", "import_kw", import_kw, "kW"))
        rows.append(("site", "ev_power_kw", ev_kw, "kW"))
        rows.append(("site", "base_load_kw", base_kw, "kW"))
        rows.append(("site", "limit_kw", self.scenario.site.grid_limit_kw, "kW"))
        rows.append(("site", "ev_available_kw", self._csms.available_power_kw(), "kW"))
        if self.inputs.price_per_mwh is not None:
            rows.append(("site", "price_per_mwh", float(self.inputs.price_per_mwh[k - 1]),
                         f"{self.inputs.currency}/MWh"))
        self.traces.add_many(t, rows)
        return import_kw, ev_kw, base_kw

    def _reported_rows(self) -> list[tuple[str, str, float, str]]:
        """The CSMS's view of every open transaction: what the stations reported over OCPP.

        ``reported_energy_kwh``: latest Energy.Active.Import.Register [kWh];
        ``reported_soc``: latest SoC measurand (0..1). Billing audits these, not the
        emulators' truth (``energy_kwh`` / ``soc``), which a dishonest station falsifies.
        """
        assert self._csms is not None
        rows: list[tuple[str, str, float, str]] = []
        registry = self._csms.registry
        for spec in self._specs:
            for evse in spec.evses:
                tx = registry.active_transaction_on(spec.station_id, evse.evse_id)
                if tx is None:
                    continue
                name = f"{spec.station_id}/{evse.evse_id}"
                if tx.energy_wh is not None:
                    rows.append((name, "reported_energy_kwh", tx.energy_wh / 1000.0, "kWh"))
                if tx.soc is not None:
                    rows.append((name, "reported_soc", tx.soc, "1"))
        return rows

    # -- main loop ------------------------------------------------------------------
    async def run(self) -> RunOutput:
        """Run the scenario; write traces, events and KPIs; return the KPI document."""
        sc = self.scenario
        ocpp_validation.install()
        wall_start = time.perf_counter()
        run = sc.run
        steps = run.steps
        dt = timedelta(seconds=run.step_s)
        grid = pd.date_range(run.start, periods=steps + 1, freq=dt, tz="UTC")
        self._base_kw = np.array([sc.site.base_load.power_kw_at(t) for t in grid[:-1]])

        def sink(t: datetime, source: str, kind: str, payload: dict[str, Any]) -> None:
            self.events.sink(t, source, kind, payload)

        self._csms = Csms(csms_config(sc, self._specs), on_event=sink,
                          perf_counter=time.perf_counter)
        port = await self._csms.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        self.events.alias(url, "ws://csms.twin")
        for i, spec in enumerate(self._specs):
            self._stations[spec.station_id] = ChargingStation(
                spec, url, on_event=sink, perf_counter=time.perf_counter,
                record_frames=run.record_frames,
                seed=int(np.random.default_rng([run.seed, i]).integers(2**31)),
                response_timeout_s=run.ocpp_response_timeout_s,
                faults=station_faults(sc.faults, spec.station_id),
            )
        self._endpoints = [self._csms, *self._stations.values()]
        import_kw = np.zeros(steps)
        ev_kw = np.zeros(steps)
        site = (
            SiteSide(sc, steps, sink) if sc.site_devices is not None else None
        )
        grid_side = (
            GridSide(sc.grid, run.start, run.step_s, run.seed, sink)
            if sc.grid is not None else None
        )
        event_limit = np.full(steps, np.nan)
        emergency = np.zeros(steps)
        try:
            self._csms.set_now(run.start)
            if site is not None:
                await site.start(run.start)
                self._endpoints += site.endpoints
            if grid_side is not None:
                await grid_side.start(run.start)
                self._endpoints += grid_side.endpoints
            await asyncio.gather(*(s.connect(run.start) for s in self._stations.values()))
            await self.quiesce()
            signal = await grid_side.step(run.start) if grid_side is not None else None
            await self._control(site, signal, run.start, 0)
            await self._csms.step(run.start)
            await self.quiesce()
            self.events.commit_step()

            env = simpy.Environment()
            queue: list[tuple[str, Any]] = []
            env.process(self._arrivals(env, queue))
            last_register: dict[str, float] = {}
            for k in range(1, steps + 1):
                t_k = grid[k].to_pydatetime()
                horizon = (t_k - run.start).total_seconds()
                while env.peek() <= horizon:
                    instant = env.peek()
                    while env.peek() == instant:
                        env.step()
                    if queue:
                        now = run.start + timedelta(seconds=env.now)
                        self._csms.set_now(now)
                        # at one instant, departures free their EVSE before arrivals
                        actions = sorted(queue, key=lambda a: a[0] != "depart")
                        queue.clear()
                        for action, session in actions:
                            await self._apply(action, session, now)
                self._now = t_k
                self._csms.set_now(t_k)
                await asyncio.gather(*(s.advance(t_k) for s in self._stations.values()))
                site_rows: list[tuple[str, str, float, str]] = []
                site_import = None
                truth = None
                if site is not None:
                    truth = await site.advance(
                        t_k, self._ev_phase_kw(), float(self._base_kw[k - 1]), k
                    )
                signal = None
                if grid_side is not None:
                    await grid_side.publish(t_k)
                await self.quiesce()
                if grid_side is not None:
                    signal = await grid_side.step(t_k)
                    await self.quiesce()
                    site_rows += self._grid_rows(signal)
                    if signal.import_limit_kw is not None:
                        event_limit[k - 1] = signal.import_limit_kw
                    emergency[k - 1] = float(signal.emergency)
                if site is not None and truth is not None:
                    site_import = truth.import_kw
                if grid_side is not None:
                    soc = truth.bess_soc if truth is not None else None
                    grid_side.record(t_k, self._import_now(site_import, k), soc)
                decision = await self._control(site, signal, t_k, k)
                if site is not None and truth is not None:
                    site_rows += site.rows(truth, decision)
                await self.quiesce()
                await self._csms.step(t_k)
                await self.quiesce()
                import_kw[k - 1], ev_kw[k - 1], _ = self._sample(
                    t_k, last_register, run.step_s, k, site_rows, site_import)
                self.events.commit_step()
                self.traces.maybe_flush()
                self.events.maybe_flush()
                if self.on_progress is not None:
                    self.on_progress(k, steps, t_k)
        finally:
            for station in self._stations.values():
                await station.close()
            if site is not None:
                await site.close()
            if grid_side is not None:
                await grid_side.close()
            await self._csms.stop()
            self.events.close()
            self.traces.close()
        wall = time.perf_counter() - wall_start
        rtt = [x for s in self._stations.values() for x in s.rtt_samples_s]
        rtt += self._csms.rtt_samples_s
        kpis = compute_kpis(
            KpiInputs(
                step_s=float(run.step_s),
                import_kw=import_kw,
                limit_kw=np.full(steps, sc.site.grid_limit_kw),
                ev_power_kw=ev_kw,
                price_per_mwh=self.inputs.price_per_mwh,
                currency=self.inputs.currency,
                sessions=[self._outcomes[k] for k in sorted(self._outcomes)],
                sessions_refused=len(self.inputs.plan.refused),
                rtt_s=rtt,
                wall_time_s=wall,
                simulated_s=run.duration_h * 3600.0,
            )
        )
        if grid_side is not None:
            kpis["kpis"].update(grid_kpis(GridKpiInputs(
                float(run.step_s), import_kw, ev_kw, event_limit, emergency)))
        if site is not None:
            kpis["kpis"].update(site_kpis(self._site_kpi_inputs(site, import_kw)))
            kpis["wall"]["fieldbus_exchanges"] = {"value": site.exchanges, "unit": "1"}
        return RunOutput(self.run_dir, kpis)

    async def _control(
        self, site: SiteSide | None, signal: GridSignal | None, now: datetime, k: int
    ) -> Any:
        """Hand the CSMS its site inputs for the coming step; returns the site decision.

        With site devices the site energy controller measures and decides (the grid signal
        included); without, the scenario's base load for the coming step is the non-EV
        load and the grid signal bounds the EVs' limit directly.
        """
        assert self._csms is not None
        steps = self.scenario.run.steps
        self._csms.set_hold_minimum(signal is not None and signal.ev_share <= 0.0)
        decision = None
        if site is not None:
            decision = await site.control(now, self.scenario.run.step_s, self._csms, k, signal)
            await self.quiesce()
        else:
            base_next = float(self._base_kw[min(k, steps - 1)])
            self._csms.set_non_ev_load(base_next, now)
            if signal is not None:
                self._csms.set_external_limit(ev_limit_kw(
                    signal, self.scenario.site.grid_limit_kw, base_next,
                    self._csms.ev_minimum_kw()))
        if self.hook is not None:
            self.hook.before_dlm(now, k, self._csms, self.plugged())
        return decision

    def plugged(self) -> list[PluggedEv]:
        """The vehicles plugged in now, in session-id order."""
        out: list[PluggedEv] = []
        for sid in sorted(self._plugged):
            session, start_net = self._plugged[sid]
            station_id, evse_text = session.evse.split("/")
            reading = self._stations[station_id].evse_state(int(evse_text))
            net = reading.energy_register_kwh - reading.export_register_kwh
            out.append(PluggedEv(session, net - start_net, reading.soc))
        return out

    def _import_now(self, site_import: float | None, k: int) -> float:
        """Site import over step ``k`` [kW]: measured truth, or base load + EVs."""
        if site_import is not None:
            return site_import
        return float(self._base_kw[k - 1]) + sum(self._ev_phase_kw())

    @staticmethod
    def _grid_rows(signal: GridSignal) -> list[tuple[str, str, float, str]]:
        rows = [("site", "grid_emergency", float(signal.emergency), "1"),
                ("site", "grid_ev_share", signal.ev_share, "1")]
        if signal.import_limit_kw is not None:
            rows.append(("site", "grid_event_limit_kw", signal.import_limit_kw, "kW"))
        if signal.price_per_mwh is not None:
            rows.append(("site", "grid_price_per_mwh", signal.price_per_mwh, "/MWh"))
        if signal.export_price_per_mwh is not None:
            rows.append(("site", "grid_export_price_per_mwh", signal.export_price_per_mwh,
                         "/MWh"))
        if signal.ghg_g_per_kwh is not None:
            rows.append(("site", "grid_ghg_g_per_kwh", signal.ghg_g_per_kwh, "g/kWh"))
        return rows

    def _site_kpi_inputs(self, site: SiteSide, import_kw: np.ndarray) -> SiteKpiInputs:
        s = site.series
        devices = site.devices

        def present(name: str) -> np.ndarray | None:
            values = s[name][~np.isnan(s[name])]
            return values if len(values) else None

        return SiteKpiInputs(
            step_s=float(self.scenario.run.step_s),
            import_kw=import_kw,
            pv_kw=s["pv_kw"] if devices.pv is not None else None,
            pv_available_kw=s["pv_available_kw"] if devices.pv is not None else None,
            bess_kw=s["bess_kw"] if devices.bess is not None else None,
            bess_soc=present("bess_soc"),
            bess_capacity_kwh=devices.bess.capacity_kwh if devices.bess is not None else None,
            loading_pct=present("loading_pct"),
            hot_spot_c=present("hot_spot_c"),
            top_oil_c=present("top_oil_c"),
            loss_of_life_h=site.loss_of_life_h,
            fail_safe=s["fail_safe"],
        )
