"""``migrid bench BENCH.yaml``: the command's body (registered lazily by twin.cli).

Prints where the CSMS listens (``ws[s]://host:port/<station id>`` per station) and which
devices are physical or emulated, then a one-line live status every few seconds, and the
run folder at the end. SIGINT (Ctrl-C) and SIGTERM stop cleanly: exit 0 with the run
folder finished. Exit 2 on a bad bench file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from hil.runtime import BenchRuntime, BenchStatus
from hil.session import run_bench
from twin.scenario import ScenarioError

__all__ = ["bench_main"]

#: seconds between two live status lines
STATUS_EVERY_S = 5.0


def _print_ready(console: Console, runtime: BenchRuntime) -> None:
    b = runtime.bench
    console.print(f"[bold]bench {b.name}[/bold]  run folder: {runtime.run_dir}")
    console.print(f"CSMS listening on {b.csms.scheme}://{b.csms.host}:{runtime.port}"
                  f"/<station id> (subprotocols ocpp2.0.1, ocpp1.6; security profile "
                  f"{b.csms.security.profile})")
    emulated = set(b.emulated_stations.stations)
    for sid, url in runtime.station_urls().items():
        how = (f"emulated ({b.emulated_stations.mode})" if sid in emulated
               else "physical: point the charger here")
        console.print(f"  station {sid}: {url}  [{how}]")
    if runtime.site is not None:
        for name, where in runtime.site.bindings().items():
            console.print(f"  {name}: {where}")
    console.print("Ctrl-C to stop")


def bench_main(
    path: Path, out: Path | None, duration_s: float | None, runs_root: Path,
    verbose: bool = False, console: Console | None = None,
) -> int:
    """Run ``migrid bench``; returns the exit code."""
    console = console or Console()
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    last = [0.0]

    def on_status(s: BenchStatus) -> None:
        now = time.monotonic()
        if now - last[0] < STATUS_EVERY_S:
            return
        last[0] = now
        console.print(
            f"{s.now:%H:%M:%S} step {s.step}  stations {len(s.connected)} "
            f"({', '.join(s.connected) or '-'})  tx {s.transactions}  "
            f"import {s.import_kw:.1f} kW  EV {s.ev_kw:.1f} kW  "
            f"EV headroom {s.available_kw:.1f} kW", highlight=False)

    async def go() -> Path:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        output = await run_bench(
            path, out=out, duration_s=duration_s, runs_root=runs_root, stop=stop,
            on_ready=lambda rt: _print_ready(console, rt), on_status=on_status)
        return output.run_dir

    try:
        run_dir = asyncio.run(go())
    except ScenarioError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        return 2
    console.print(f"run folder: {run_dir}")
    return 0
