r"""A standalone charging-station emulator on the wall clock: ``python -m hil.station``.

Starts one :class:`devices.charging_station.ChargingStation` against a CSMS URL, as a
real charger would connect (``<url>/<station id>``, subprotocol ``ocpp2.0.1`` or
``ocpp1.6``), advances it every ``--step-s`` seconds of wall time and plugs vehicles in
and out on the schedule given. Every station event is printed as one JSON line on
stdout (``time``: the station's clock, ``wall``: POSIX time of emission, ``source``,
``kind``, ``payload``; a refused first connection too, as ``ocpp.connect_failed``;
later attempts as ``ocpp.reconnect_failed``). SIGINT or SIGTERM (or ``--duration-s``) closes the
connection and exits 0.

The bench uses it for ``emulated_stations.mode: process``; it also stands in for a real
charger when testing a bench (tests/hil). Example::

    python -m hil.station --url ws://127.0.0.1:9000 \
        --station '{"id": "CS001", "kind": "ac_22kw", "meter_interval_s": 2}' \
        --plugs '[{"evse": "CS001/1", "plug_in_s": 1}]'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from devices.charging_station import ChargingStation, EvseSpec, StationSpec
from devices.charging_station.faults import StationFaults
from devices.vehicle import VehicleSpec, VehicleState
from hil.bench_file import BenchStation, Plug
from twin.scenario_faults import bench_station_faults

__all__ = ["PlugSchedule", "main", "plug_in", "run_station", "station_faults", "station_spec"]


def station_spec(
    station: BenchStation, voltage_v: float, tls_ca_file: str | None = None,
    report_soc: bool = False,
) -> StationSpec:
    """The emulator's spec of a bench station (every EVSE of its kind, 3-phase).

    ``tls_ca_file``: the CA trusted for the CSMS's certificate (``wss://``); the station's
    own password and client certificate come from ``station``. ``report_soc``: the EVSEs
    report the vehicle's SoC on AC too (for the billing audit).
    """
    return StationSpec(
        station_id=station.id,
        ocpp_version=station.ocpp_version,
        evses=tuple(
            EvseSpec(evse_id=e, kind=station.current_kind, max_power_kw=station.max_power_kw,
                     phases=3, voltage_v=voltage_v, phase_rotation=station.phase_rotation,
                     bidirectional=station.bidirectional and station.ocpp_version == "2.1",
                     report_soc=report_soc)
            for e in range(1, station.evses + 1)
        ),
        meter_interval_s=station.meter_interval_s,
        password=station.password,
        tls_ca_file=tls_ca_file,
        tls_cert_file=station.tls_cert_file,
        tls_key_file=station.tls_key_file,
    )


def station_faults(station: BenchStation, bench_start: datetime) -> StationFaults | None:
    """The injected faults of an emulated bench station, offsets from ``bench_start``."""
    return bench_station_faults(station.faults, bench_start)


class PlugSchedule:
    """Plug-ins and plug-outs due by an offset from the bench start, each once."""

    def __init__(self, plugs: list[Plug]) -> None:
        self._pending: list[tuple[float, int, str, Plug]] = []
        for plug in plugs:
            self._pending.append((plug.plug_in_s, 1, "in", plug))
            if plug.plug_out_s is not None:
                self._pending.append((plug.plug_out_s, 0, "out", plug))
        # at one instant, plug-outs free their EVSE before plug-ins
        self._pending.sort(key=lambda x: (x[0], x[1], x[3].evse))

    def due(self, elapsed_s: float) -> list[tuple[str, Plug]]:
        """Actions (``"in"``/``"out"``, plug) due by ``elapsed_s``, in order; removed."""
        out = [(action, plug) for t, _, action, plug in self._pending if t <= elapsed_s]
        self._pending = [p for p in self._pending if p[0] > elapsed_s]
        return out


async def plug_in(station: ChargingStation, plug: Plug, now: datetime) -> None:
    """Plug the vehicle of ``plug`` into its EVSE of ``station``."""
    spec = VehicleSpec(model="bench vehicle", battery_capacity_kwh=plug.battery_kwh,
                       ac_max_power_kw=plug.ac_max_power_kw, ac_phases=plug.ac_phases,
                       dc_max_power_kw=plug.dc_max_power_kw)
    state = VehicleState(soc=plug.soc, target_soc=plug.target_soc)
    await station.plug_in(plug.evse_id, spec, state, plug.id_token, now)


def _print_event(t: datetime, source: str, kind: str, payload: dict[str, Any]) -> None:
    line = json.dumps({"time": t.isoformat(), "wall": time.time(), "source": source,
                       "kind": kind, "payload": payload}, default=str)
    print(line, flush=True)


async def run_station(
    url: str,
    station: BenchStation,
    plugs: list[Plug],
    *,
    voltage_v: float = 230.0,
    step_s: float = 1.0,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    tls_ca_file: str | None = None,
    bench_start: datetime | None = None,
) -> None:
    """Run one station on the wall clock until ``stop`` is set or ``duration_s`` passes.

    ``tls_ca_file``: CA trusted for the CSMS's certificate (a ``wss://`` URL); the
    station's password and client certificate come from ``station``. ``bench_start``:
    the time the offsets of ``station.faults`` count from (None: now).
    """
    stop = stop or asyncio.Event()
    cs = ChargingStation(station_spec(station, voltage_v, tls_ca_file), url,
                         on_event=_print_event,
                         perf_counter=time.perf_counter,
                         faults=station_faults(station, bench_start or datetime.now(UTC)))
    schedule = PlugSchedule(plugs)
    t0 = time.monotonic()
    try:
        try:
            await cs.connect(datetime.now(UTC))
        except Exception as err:  # refused: advance() retries with back-off
            _print_event(datetime.now(UTC), station.id, "ocpp.connect_failed",
                         {"url": url, "error": f"{type(err).__name__}: {err}"})
        k = 0
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            if duration_s is not None and elapsed >= duration_s:
                break
            now = datetime.now(UTC)
            for action, plug in schedule.due(elapsed):
                if action == "in":
                    await plug_in(cs, plug, now)
                else:
                    await cs.plug_out(plug.evse_id, now)
            await cs.advance(now)
            k += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, t0 + k * step_s - time.monotonic()))
    finally:
        await cs.close()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m hil.station", description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="CSMS base URL, e.g. ws://127.0.0.1:9000")
    ap.add_argument("--station", required=True, help="bench station as JSON (id, kind, ...)")
    ap.add_argument("--plugs", default="[]", help="vehicle plugs as a JSON list")
    ap.add_argument("--voltage-v", type=float, default=230.0)
    ap.add_argument("--step-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=None)
    ap.add_argument("--ca-file", default=None,
                    help="PEM CA trusted for the CSMS's certificate (wss:// URL)")
    ap.add_argument("--bench-start", default=None, type=datetime.fromisoformat,
                    help="ISO time the station's fault offsets count from (default: now)")
    args = ap.parse_args(argv)
    station = BenchStation.model_validate_json(args.station)
    plugs = [Plug.model_validate(p) for p in json.loads(args.plugs)]

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_station(args.url, station, plugs, voltage_v=args.voltage_v,
                          step_s=args.step_s, duration_s=args.duration_s, stop=stop,
                          tls_ca_file=args.ca_file, bench_start=args.bench_start)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
