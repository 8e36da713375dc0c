"""The shadow twin: a twin of the bench's site beside the field, on the same wall clock.

At every bench step, after the field has stepped, the shadow steps at the same ``now``:

1. **Outside world from the field.** For every EVSE of the bench, a transaction the field
   CSMS sees open (plug-in, with its id token and, if the charger reports it, the SoC)
   plugs a vehicle into the shadow's emulated EVSE of the same id; a transaction that
   ended unplugs it. The vehicle is the bench file's plug spec for an emulated station
   (exact), else ``shadow.vehicle`` (a real vehicle's battery and on-board charger are
   not on the wire: the residuals then show where the real vehicle differs from it).
   The site inputs the field's site controller handed its CSMS (measured non-EV load —
   building, PV and BESS as metered — external limit, hold-minimum) go to the shadow's
   CSMS unchanged (:meth:`controllers.csms.Csms.site_measurement`).
2. **The same controllers, emulated devices.** A CSMS of the same configuration (on
   loopback, security profile 0) with the same DLM, and one in-process emulated station
   per bench station (same ids, EVSE layout, OCPP version and meter interval, no faults,
   no credentials), advanced to ``now``, then the CSMS steps and the shadow is quiesced
   (every request answered) as in the lock-step twin (DESIGN.md).
3. **Prediction.** Per EVSE: ``power_kw``, ``energy_kwh``, ``soc`` and the set-point as the
   shadow CSMS sees them — the same observation channel as the field's rows, so like is
   compared with like; per site: ``ev_power_kw`` and ``import_kw`` = field non-EV load +
   shadow EV power.
4. **Residuals and alarms.** ``field - twin`` per monitored quantity goes into the field's
   traces as ``<quantity>_residual``; :class:`hil.divergence.DivergenceMonitor` raises a
   ``shadow.divergence`` event (field and shadow run folders, a log warning, a marker on
   the dashboard's site graph) when a residual stays beyond its tolerance for
   ``shadow.window_s``, and ``shadow.converged`` when it returns.

The shadow writes its own run folder (``<field run>-shadow``, ``kind: twin``,
``shadow_of`` naming the field run) so that the dashboard's compare view shows twin and
field side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from controllers.csms import Csms, CsmsConfig
from controllers.csms.config import SecurityConfig
from devices.charging_station import ChargingStation
from devices.vehicle import VehicleSpec, VehicleState
from hil.bench_file import Bench, BenchStation, Plug
from hil.csms_rows import Row, csms_rows
from hil.divergence import Alarm, DivergenceMonitor
from hil.run_kpis import wall_clock_kpis
from hil.station import station_spec
from twin import kpis as kpi_doc
from twin.recorder import EventWriter, TraceWriter
from twin.session_run import write_status

__all__ = ["ShadowTwin", "shadow_run_dir"]

log = logging.getLogger(__name__)

Sink = Any  # (time, source, kind, payload) -> None

#: most seconds one shadow step waits for its exchanges to settle
QUIESCE_TIMEOUT_S = 2.0


def shadow_run_dir(field_run_dir: Path) -> Path:
    """The shadow's run folder beside the field's: ``<field run>-shadow``."""
    return field_run_dir.with_name(field_run_dir.name + "-shadow")


def _plain(station: BenchStation) -> BenchStation:
    """The station as the shadow emulates it: no credentials, no faults."""
    update: dict[str, Any] = {"password": None, "tls_cert_file": None, "tls_key_file": None}
    if "faults" in BenchStation.model_fields:
        update["faults"] = []
    return station.model_copy(update=update)


class ShadowTwin:
    """A shadow twin of a bench (module docstring).

    Args:
        bench: the validated bench file.
        field_run_dir: the field's run folder (the shadow's is beside it).
        csms_config: the field CSMS's configuration (security is dropped).
        field_sink: the field's event sink ``(time, source, kind, payload)``; alarms go
            there too.
    """

    def __init__(self, bench: Bench, field_run_dir: Path, csms_config: CsmsConfig,
                 field_sink: Sink) -> None:
        self.bench = bench
        self.cfg = bench.shadow
        self.run_dir = shadow_run_dir(field_run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._field_sink = field_sink
        self.events = EventWriter(self.run_dir / "events.parquet")
        self.traces = TraceWriter(self.run_dir / "traces.parquet")
        self.csms = Csms(
            csms_config.model_copy(update={"security": SecurityConfig(),
                                           "station_passwords": {}, "record_frames": False}),
            on_event=self.events.sink, perf_counter=time.perf_counter)
        self.monitor = DivergenceMonitor(dict(self.cfg.tolerance), self.cfg.window_s)
        self.stations: dict[str, ChargingStation] = {}
        self.alarms: list[Alarm] = []
        self._plugged: dict[tuple[str, int], str] = {}
        self._import: list[float] = []
        self._ev: list[float] = []
        self._abs_residual: dict[str, list[float]] = {}
        self._t0 = time.perf_counter()
        resolved = bench.model_dump(mode="json")
        resolved.update(kind="twin", shadow_of=field_run_dir.name)
        (self.run_dir / "scenario.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False),
                                                   encoding="utf-8")
        write_status(self.run_dir, "running")

    # ------------------------------------------------------------------ life cycle
    async def start(self, now: datetime) -> None:
        """Start the shadow CSMS on loopback; connect one emulated station per bench station."""
        self.csms.set_now(now)
        port = await self.csms.start("127.0.0.1", 0)
        for st in self.bench.stations:
            cs = ChargingStation(station_spec(_plain(st), self.bench.site.voltage_v),
                                 f"ws://127.0.0.1:{port}", on_event=self.events.sink,
                                 perf_counter=time.perf_counter)
            self.stations[st.id] = cs
        await asyncio.gather(*(cs.connect(now) for cs in self.stations.values()))
        await self._quiesce()

    async def close(self, failed: str | None = None) -> dict[str, Any]:
        """Stop the shadow and write its ``kpis.json`` and status.

        Returns the field's summary of the shadow (run folder, alarms, residual statistics).
        """
        for cs in self.stations.values():
            with contextlib.suppress(Exception):
                await cs.close()
        await self.csms.stop()
        self.events.close()
        self.traces.close()
        doc = wall_clock_kpis(
            self.bench.run.step_s, np.asarray(self._import), np.asarray(self._ev),
            self.bench.site.grid_limit_kw, self.csms.rtt_samples_s,
            time.perf_counter() - self._t0)
        doc = {"scenario": self.bench.name, "kind": "twin", "shadow_of": self.run_dir.name,
               **doc}
        (self.run_dir / "kpis.json").write_text(kpi_doc.dumps(doc), encoding="utf-8")
        write_status(self.run_dir, "failed" if failed else "finished", error=failed)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Run folder, alarm counts and mean / max absolute residual per quantity."""
        stats = {
            q: {"mean_abs": round(float(np.mean(v)), 4), "max_abs": round(float(np.max(v)), 4)}
            for q, v in sorted(self._abs_residual.items()) if v
        }
        return {
            "run": self.run_dir.name,
            "divergences": sum(a.kind == "shadow.divergence" for a in self.alarms),
            "active_alarms": [f"{e}:{q}" for e, q in self.monitor.active],
            "residuals": stats, "tolerance": dict(self.cfg.tolerance),
            "window_s": self.cfg.window_s,
        }

    # ------------------------------------------------------------------ one step
    async def step(self, now: datetime, elapsed_s: float, field: Csms,
                   field_rows: list[Row]) -> list[Row]:
        """Step the shadow to ``now`` from what the field shows.

        Returns the residual rows for the field's traces; alarms go to both run folders.
        """
        self.csms.set_now(now)
        await self._mirror_plugs(now, elapsed_s, field)
        for cs in self.stations.values():
            await cs.advance(now)
        m = field.site_measurement()
        if m.lost:
            self.csms.set_non_ev_load(None, now)
        elif m.non_ev_load_kw is not None and m.measured_at is not None:
            self.csms.set_non_ev_load(m.non_ev_load_kw, m.measured_at)
        self.csms.set_external_limit(m.external_limit_kw)
        self.csms.set_hold_minimum(m.hold_minimum)
        await self.csms.step(now)
        await self._quiesce()
        ev_kw = self.csms.ev_power_kw()
        non_ev = m.non_ev_load_kw if m.non_ev_load_kw is not None else 0.0
        rows = self._rows(ev_kw, non_ev + ev_kw)
        self._import.append(non_ev + ev_kw)
        self._ev.append(ev_kw)
        self.traces.add_many(now, rows)
        residual_rows = self._compare(now, field_rows, rows)
        self.events.commit_step()
        self.traces.maybe_flush()
        self.events.maybe_flush()
        return residual_rows

    async def _mirror_plugs(self, now: datetime, elapsed_s: float, field: Csms) -> None:
        for st in self.bench.stations:
            cs = self.stations[st.id]
            for e in range(1, st.evses + 1):
                tx = field.registry.active_transaction_on(st.id, e)
                have = self._plugged.get((st.id, e))
                if have is not None and (tx is None or tx.transaction_id != have):
                    with contextlib.suppress(RuntimeError, KeyError):
                        await cs.plug_out(e, now)
                    del self._plugged[(st.id, e)]
                if tx is not None and (st.id, e) not in self._plugged:
                    spec, state = self._vehicle(st.id, e, elapsed_s, tx.soc)
                    try:
                        await cs.plug_in(e, spec, state, tx.id_token or "SHADOW", now)
                    except (RuntimeError, ValueError) as err:
                        self.events.sink(now, "shadow", "shadow.plug_failed",
                                         {"evse": f"{st.id}/{e}", "error": repr(err)})
                        continue
                    self._plugged[(st.id, e)] = tx.transaction_id

    def _vehicle(self, station_id: str, evse_id: int, elapsed_s: float,
                 soc: float | None) -> tuple[VehicleSpec, VehicleState]:
        """The bench's plug spec of an emulated EVSE's vehicle, else the default vehicle."""
        evse = f"{station_id}/{evse_id}"
        slack_s = 2 * self.bench.run.step_s
        plugs: list[Plug] = [p for p in self.bench.emulated_stations.vehicles
                             if p.evse == evse and p.plug_in_s <= elapsed_s + slack_s]
        if plugs:
            p = max(plugs, key=lambda x: x.plug_in_s)
            spec = VehicleSpec(model="bench vehicle", battery_capacity_kwh=p.battery_kwh,
                               ac_max_power_kw=p.ac_max_power_kw, ac_phases=p.ac_phases,
                               dc_max_power_kw=p.dc_max_power_kw)
            return spec, VehicleState(soc=p.soc if soc is None else soc,
                                      target_soc=p.target_soc)
        v = self.cfg.vehicle
        spec = VehicleSpec(model="shadow default vehicle", battery_capacity_kwh=v.battery_kwh,
                           ac_max_power_kw=v.ac_max_power_kw, ac_phases=v.ac_phases,
                           dc_max_power_kw=v.dc_max_power_kw)
        arrival = v.soc if soc is None else soc
        return spec, VehicleState(soc=arrival, target_soc=max(v.target_soc, arrival + 1e-3))

    async def _quiesce(self) -> None:
        async def settle() -> None:
            while True:
                await self.csms.drain()
                for cs in self.stations.values():
                    await cs.drain()
                for _ in range(3):
                    await asyncio.sleep(0)
                if not self.csms.busy and not any(cs.busy for cs in self.stations.values()):
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settle(), QUIESCE_TIMEOUT_S)

    def _rows(self, ev_kw: float, import_kw: float) -> list[Row]:
        return csms_rows(self.csms, self.bench.stations, self.bench.site.grid_limit_kw,
                         import_kw, ev_kw)

    def _compare(self, now: datetime, field_rows: list[Row], twin_rows: list[Row]) -> list[Row]:
        field = {(e, q): (v, u) for e, q, v, u in field_rows}
        twin = {(e, q): v for e, q, v, _ in twin_rows}
        out: list[Row] = []
        for (entity, quantity), (value, unit) in sorted(field.items()):
            if quantity not in self.cfg.tolerance:
                continue
            predicted = twin.get((entity, quantity))
            if predicted is not None:
                out.append((entity, f"{quantity}_residual", value - predicted, unit))
                self._abs_residual.setdefault(quantity, []).append(abs(value - predicted))
            alarm = self.monitor.update(now, entity, quantity, value, predicted)
            if alarm is not None:
                self._raise(alarm)
        return out

    def _raise(self, alarm: Alarm) -> None:
        self.alarms.append(alarm)
        payload = alarm.payload()
        self._field_sink(alarm.time, "shadow", alarm.kind, payload)
        self.events.sink(alarm.time, "shadow", alarm.kind, payload)
        if alarm.kind == "shadow.divergence":
            log.warning("shadow divergence: %s %s field %.3f twin %.3f (tolerance %.3f) "
                        "for %.0f s", alarm.entity, alarm.quantity, alarm.field_value,
                        alarm.twin_value, alarm.tolerance, payload["duration_s"])
        else:
            log.warning("shadow converged: %s %s", alarm.entity, alarm.quantity)
