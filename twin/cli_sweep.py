"""``migrid sweep``: a parameter sweep of a scenario on a Dask cluster (see :mod:`twin.sweep`)."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from twin import sweep as sw
from twin.datasets import DataSetError
from twin.scenario import ScenarioError, load_scenario

console = Console()


def _summary_table(doc: dict[str, Any], table: Any) -> Table:
    out = Table(title=f"sweep: {doc['scenario_name']} ({doc['runs']} runs)")
    out.add_column("variant", overflow="fold")
    out.add_column("runs", justify="right")
    out.add_column("ok", justify="right")
    out.add_column("failed", justify="right")
    kpi_cols = doc["kpis_plotted"]
    for col in kpi_cols:
        out.add_column(f"{col} (median)", justify="right")
    for vid, rows in table.groupby("variant_id", sort=False):
        ok = int((rows["status"] == "ok").sum())
        cells = [escape(str(vid)), str(len(rows)), str(ok), str(len(rows) - ok)]
        for col in kpi_cols:
            values = rows[col].dropna()
            cells.append(f"{float(values.astype(float).median()):,.3f}" if len(values) else "")
        out.add_row(*cells)
    return out


def sweep_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="PATH=V1,V2,...: a dotted path into the scenario "
                     "(site.grid_limit_kw, dlm.strategy, stations.0.count) and its values; "
                     "repeat for a cartesian product."),
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", help="Seeds per variant: the scenario's seed and the "
                          "next ones (or from --seed-start).")
    ] = 1,
    seed_start: Annotated[
        int | None, typer.Option("--seed-start", help="First seed (default: the scenario's).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Address of an existing Dask scheduler "
                     "(tcp://host:port); default: a local cluster on this machine."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker processes of the local cluster (default: "
                     "the number of cores)."),
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", help="Local cluster: times a run is restarted after "
                          "its worker process died (default 0: never). Exceptions and KPI "
                          "failures are never retried.")
    ] = 0,
    memory_limit: Annotated[
        str, typer.Option("--memory-limit", help="Local cluster: memory per worker (e.g. "
                          "4GB; auto: the machine's memory / workers).")
    ] = "auto",
    kpi: Annotated[
        list[str] | None,
        typer.Option("--kpi", help="KPI to plot per variant (repeat; default: "
                     f"{', '.join(sw.DEFAULT_PLOT_KPIS)})."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Sweep folder (default runs/<scenario>-sweep-<UTC time>)."),
    ] = None,
    runs_root: Annotated[
        Path, typer.Option("--runs", help="Folder under which the sweep folder is created.")
    ] = Path("runs"),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Keep Dask's and the runs' warnings.")
    ] = False,
) -> None:
    """Run a scenario for every combination of parameter values and seeds on Dask.

    Every run writes its own run folder <out>/<variant id>/seed-<seed>/; results go to
    <out>/sweep.parquet (a row per run), sweep.json and sweep.html (+ sweep.png with
    kaleido). A failed run (exception, KPI assertion, worker death) is reported and the
    sweep goes on. Exit 0 when every run is ok, 1 when one failed, 2 on a bad scenario,
    parameter or KPI name (nothing started), 130 on Ctrl-C (partial results written).
    """
    from twin import data_cache
    from twin.session_run import new_run_dir

    plot_kpis = list(kpi or sw.DEFAULT_PLOT_KPIS)
    try:
        if workers is not None and workers < 1:
            raise sw.SweepError(f"--workers {workers}: need at least one")
        if retries < 0:
            raise sw.SweepError(f"--retries {retries}: cannot be negative")
        if scheduler is not None and (workers is not None or retries or memory_limit != "auto"):
            raise sw.SweepError("--workers, --retries and --memory-limit set up the local "
                                "cluster; with --scheduler the cluster's own settings apply")
        if out is not None and (out / "sweep.json").exists():
            raise sw.SweepError(f"{out} already holds a sweep; choose another --out")
        base = load_scenario(scenario)
        sw.check_plot_kpis(plot_kpis, base)
        folder = out or new_run_dir(runs_root, f"{base.name}-sweep")
        plan = sw.plan_sweep(scenario, list(param or []), seeds=seeds, seed_start=seed_start,
                             out=folder, quiet=not verbose)
        if scheduler is None:
            with Progress(console=console, transient=True) as fetching:
                data_cache.ensure(plan.datasets, progress=fetching)
    except (ScenarioError, DataSetError, sw.SweepError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None

    from distributed import Client  # sets up dask's logging: quieten it after

    if not verbose:  # failures are reported per run; the nanny's warnings add nothing
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    plan.out.mkdir(parents=True, exist_ok=True)
    console.print(f"sweep: {len(plan.variants)} variant(s) x {len(plan.seeds)} seed(s) = "
                  f"{len(plan.runs)} runs -> {plan.out}", highlight=False)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    cluster: Any = None
    try:
        if scheduler is None:
            n = workers or os.cpu_count() or 1
            console.print(f"starting a local Dask cluster: {n} worker process(es), "
                          "1 thread each", highlight=False)
            cluster = sw.local_cluster(n, retries=retries, memory_limit=memory_limit)
            client = Client(cluster)  # type: ignore[no-untyped-call]
        else:
            client = Client(scheduler, timeout="30s")  # type: ignore[no-untyped-call]
    except OSError as err:
        console.print(f"[red]error:[/red] cannot reach the Dask scheduler: {escape(str(err))}")
        if cluster is not None:
            cluster.close()
        raise typer.Exit(2) from None
    interrupted = False
    records: list[dict[str, Any]] = []
    t_runs = time.perf_counter()
    try:
        facts = sw.cluster_facts(client)
        if facts["worker_death_retries"]:
            console.print(f"[yellow]note:[/yellow] the scheduler restarts a run up to "
                          f"{facts['worker_death_retries']} time(s) after its worker died "
                          "(allowed_failures)", highlight=False)
        if any(t > 1 for t in facts["threads_per_worker"]):
            console.print("[yellow]note:[/yellow] workers with several threads run several "
                          "runs in one process: a worker that dies fails them all")
        with Progress(
            TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]{task.fields[ok]} ok[/green] [red]{task.fields[failed]} "
                       "failed[/red]"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        ) as progress:
            task = progress.add_task("runs", total=len(plan.runs), ok=0, failed=0)
            tally = {"ok": 0, "failed": 0}

            def on_result(rec: dict[str, Any]) -> None:
                records.append(rec)
                key = "ok" if rec["status"] == "ok" else "failed"
                tally[key] += 1
                progress.update(task, advance=1, ok=tally["ok"], failed=tally["failed"])
                if key == "failed":
                    progress.console.print(
                        f"[red]{rec['status']}[/red] {escape(rec['variant_id'])} seed "
                        f"{rec['seed']}: {escape(str(rec['error']))}", highlight=False)

            try:
                t_runs = time.perf_counter()
                records = sw.gather(client, plan.runs, on_result=on_result)
            except KeyboardInterrupt:
                interrupted = True
            except Exception as err:  # the cluster went away: keep what finished
                progress.console.print(f"[red]error:[/red] the sweep stopped: "
                                       f"{escape(f'{type(err).__name__}: {err}')}")
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()
    runs_s = time.perf_counter() - t_runs
    wall_s = time.perf_counter() - t0
    order = {(s.variant_id, s.seed): i for i, s in enumerate(plan.runs)}
    records.sort(key=lambda r: order[(r["variant_id"], r["seed"])])
    meta = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_time_s": round(wall_s, 3),
        "runs_wall_time_s": round(runs_s, 3),  # first submission to last result
        "runs_per_minute": round(len(records) / runs_s * 60, 3) if runs_s else None,
        "cluster": {"kind": "local" if scheduler is None else "external", **facts},
        "retries": {
            "worker_death": facts["worker_death_retries"],
            "exceptions_and_kpi_failures": 0,
        },
        "interrupted": interrupted,
    }
    doc = sw.write_results(plan, records, meta, plot_kpis)
    import pandas as pd

    console.print(_summary_table(doc, pd.read_parquet(plan.out / "sweep.parquet")))
    c = doc["counts"]
    console.print(
        f"{c['ok']} ok, {len(records) - c['ok']} failed "
        f"({', '.join(f'{k} {v}' for k, v in c.items() if v and k != 'ok') or 'none'}) "
        f"in {wall_s:,.1f} s ({doc['runs_per_minute']} runs/min once the cluster was up)",
        highlight=False)
    if doc["kpis_missing"]:
        console.print(f"[yellow]note:[/yellow] no run has KPI(s) "
                      f"{', '.join(doc['kpis_missing'])}: not plotted", highlight=False)
    files = doc["files"]
    console.print(f"results: {plan.out / 'sweep.parquet'}, {plan.out / 'sweep.json'}"
                  + (f", {plan.out / files['html']}" if files.get("html") else "")
                  + (f", {plan.out / files['png']}" if files.get("png") else ""),
                  highlight=False)
    if files.get("png_note"):
        console.print(f"plot: {files['png_note']}", highlight=False)
    if interrupted:
        raise typer.Exit(130)
    if c["ok"] != len(records):
        raise typer.Exit(1)
