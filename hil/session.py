"""One bench session: run folder, ``scenario.yaml`` (kind ``field``), status, KPIs.

:func:`run_bench` validates the bench file (nothing starts on a bad one), creates the run
folder ``<runs>/<name>-<UTC>/``, writes the resolved bench as ``scenario.yaml`` with
``kind: field`` and ``status.json`` running, runs :class:`hil.runtime.BenchRuntime`
until ``stop`` is set or the duration has passed, then writes ``kpis.json``, bills the
run when the bench has a ``billing:`` section (:func:`twin.billing_run.bill_run`), and
writes ``status.json`` finished (failed, with the error, when the runtime raised).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import yaml

from hil.bench_file import load_bench
from hil.runtime import BenchOutput, BenchRuntime, BenchStatus
from twin import kpis as kpi_doc
from twin.billing_run import bill_run
from twin.session_run import new_run_dir, write_status

__all__ = ["run_bench"]


async def run_bench(
    path: Path,
    *,
    out: Path | None = None,
    duration_s: float | None = None,
    runs_root: Path = Path("runs"),
    stop: asyncio.Event | None = None,
    on_ready: Callable[[BenchRuntime], None] | None = None,
    on_status: Callable[[BenchStatus], None] | None = None,
) -> BenchOutput:
    """Run the bench file at ``path`` on the wall clock and write its run folder.

    Args:
        path: the bench file.
        out: run folder (default ``<runs_root>/<name>-<UTC time>``).
        duration_s: stop after this many seconds (default: the file's ``run.duration_s``,
            else until ``stop`` is set).
        runs_root: folder of run folders.
        stop: set it to stop (SIGINT handler of the CLI).
        on_ready: called once the CSMS listens and the devices are started.
        on_status: called after every step.

    Raises:
        twin.scenario.ScenarioError: bad bench file (nothing started).
    """
    bench = load_bench(path)
    stop = stop or asyncio.Event()
    run_dir = out or new_run_dir(runs_root, bench.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = bench.model_dump(mode="json")
    resolved["kind"] = "field"
    resolved["source"] = str(path)
    (run_dir / "scenario.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False),
                                          encoding="utf-8")
    write_status(run_dir, "running")
    runtime = BenchRuntime(bench, run_dir, on_status=on_status)
    task = asyncio.create_task(runtime.run(stop, duration_s))
    try:
        await asyncio.wait({task, asyncio.create_task(runtime.started.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
        if on_ready is not None and not task.done():
            on_ready(runtime)
        output = await task
    except BaseException as err:
        stop.set()
        if not task.done():
            await asyncio.gather(task, return_exceptions=True)
        write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    doc = {"scenario": bench.name, "kind": "field", **output.kpis}
    (run_dir / "kpis.json").write_text(kpi_doc.dumps(doc), encoding="utf-8")
    if bench.billing is not None:  # issue 8: audit, bill and reward every session
        try:
            bill_run(run_dir, bench.billing)
        except BaseException as err:
            write_status(run_dir, "failed", error=f"billing: {type(err).__name__}: {err}")
            raise
    write_status(run_dir, "finished")
    return output
