"""``migrid regress [DIR]``: run the regression scenarios, compare KPIs with baselines.

Runs every scenario under ``DIR`` (default: the repository's ``scenarios/``) whose YAML
has ``regression: true`` or ``regression: fast`` in the lock-step twin, one after the
other, compares each run's ``kpis.json`` with ``<baselines>/<scenario name>.json``
(rules: :mod:`twin.regress`), prints a table (scenario, KPI, baseline, now, delta,
tolerance, verdict), writes JUnit XML and a Markdown report, and exits:

* 0: every case ran and no KPI regressed (``improved`` and ``new`` pass);
* 1: a KPI regressed, changed or is missing, a scenario assertion failed, a case did not
  run (bad scenario, data set, crash) or has no baseline;
* 2: bad usage (``--only`` names no case, no case found, ``--update`` without a reason,
  a baseline file that is not JSON).

``--update --reason TEXT`` runs the same cases and writes their baselines instead (with
the reason, UTC date, git commit and dirty flag, user and host), appending a section to
``<baselines>/CHANGELOG.md``; cases that did not run or whose assertions fail get no
baseline (exit 1).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
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
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from twin import data_cache
from twin.datasets import DataSetError
from twin.regress import (
    Case,
    CaseResult,
    RegressError,
    append_changelog,
    baseline_doc,
    baseline_path,
    changelog_entry,
    compare_kpis,
    discover,
    junit_xml,
    load_baseline,
    markdown_report,
    provenance,
    select,
    write_baseline,
)
from twin.scenario import ScenarioError, load_scenario
from twin.session_run import KpiAssertionError, run_scenario

#: the repository's top level (scenario and baseline defaults are below it)
REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"
BASELINES = SCENARIOS / "baselines"

console = Console()

_STYLE = {"ok": "green", "improved": "cyan", "new": "blue", "regressed": "bold red",
          "changed": "bold red", "missing": "bold red", "failed": "bold red",
          "error": "bold red"}


def _case_dir(out: Path, name: str) -> Path:
    candidate, n = out / name, 1
    while candidate.exists():
        n += 1
        candidate = out / f"{name}-{n}"
    return candidate


def run_case(
    case: Case, out: Path, progress: Progress | None = None, task: TaskID | None = None
) -> CaseResult:
    """Run one case into ``<out>/<name>`` and return it (not yet compared).

    Never raises for a failing run: the error (bad scenario, data set, crash with its
    traceback's last lines) is in the result; KPI assertion failures keep the KPIs.
    """
    result = CaseResult(case)
    started, cpu_started = time.perf_counter(), time.process_time()

    def on_progress(step: int, steps: int, t: datetime) -> None:
        if progress is not None and task is not None:
            progress.update(task, total=steps, completed=step)

    try:
        sc = load_scenario(case.path)
        data_cache.ensure(sc.datasets)
        result.run_dir = _case_dir(out, case.name)
        run = asyncio.run(run_scenario(case.path, out=result.run_dir, on_progress=on_progress))
        result.kpis = run.kpis
    except KpiAssertionError as fail:
        result.kpis = fail.kpis
        result.assertion_failures = list(fail.failures)
    except (ScenarioError, DataSetError) as err:
        result.error = str(err)
    except Exception as err:  # a crash of one case must not stop the others
        tail = "".join(traceback.format_exception(err)[-3:])
        result.error = f"{type(err).__name__}: {err}\n{tail}"
    result.run_time_s = time.perf_counter() - started
    result.cpu_time_s = time.process_time() - cpu_started
    return result


def compare_case(result: CaseResult, baselines: Path) -> None:
    """Fill ``result.checks`` from its baseline; an error when there is none.

    Raises:
        RegressError: the baseline file is unreadable.
    """
    if result.kpis is None:
        return
    base = load_baseline(baseline_path(baselines, result.case.name))
    if base is None:
        result.error = (f"no baseline {baseline_path(baselines, result.case.name)}; "
                        "create it with `migrid regress --update --reason ...`")
        return
    try:
        overrides = load_scenario(result.case.path).tolerances
    except ScenarioError:
        overrides = {}
    result.checks = compare_kpis(result.case.name, base["kpis"], result.kpis["kpis"], overrides)


def _table(results: list[CaseResult], all_rows: bool) -> Table:
    table = Table(title="migrid regress", show_lines=False)
    for col, just in (("scenario", "left"), ("KPI", "left"), ("baseline", "right"),
                      ("now", "right"), ("delta", "right"), ("tolerance", "right"),
                      ("verdict", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in results:
        name = escape(r.case.name)
        if r.error is not None:
            table.add_row(name, "run", "", "", "", "", f"[bold red]error[/]: "
                          f"{escape(r.error.splitlines()[0])}")
        for a in r.assertion_failures:
            table.add_row(name, "assertions", "", "", "", "", f"[bold red]failed[/]: {escape(a)}")
        for c in r.checks:
            if not all_rows and c.verdict == "ok":
                continue
            style = _STYLE.get(c.verdict, "")
            table.add_row(name, c.kpi, f"{escape(c.baseline_text)} {c.unit}",
                          f"{escape(c.now_text)} {c.unit}", c.delta_text, c.tolerance,
                          f"[{style}]{c.verdict}[/]")
        table.add_section()
    return table


def regress_command(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Folder searched (recursively) for scenarios with "
                       "`regression: true|fast`; default: the repository's scenarios/."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only this scenario (name or file stem; repeat)."),
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="Only the CI subset: scenarios with "
                           "`regression: fast`.")
    ] = False,
    update: Annotated[
        bool, typer.Option("--update", help="Write the runs' KPIs as the new baselines "
                           "(needs --reason) instead of comparing.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the baselines change (recorded in "
                                 "each baseline and in CHANGELOG.md).")
    ] = None,
    baselines: Annotated[
        Path, typer.Option("--baselines", help="Folder of the baseline files.")
    ] = BASELINES,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the run folders (default "
                     "runs/regress-<UTC time>/<scenario>)."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="JUnit XML file (default <out>/junit.xml).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Markdown report (default <out>/report.md)."),
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all/--changed", help="Table: every KPI, or only those not ok.")
    ] = True,
) -> None:
    """Run the regression scenarios and compare their KPIs with the committed baselines.

    Exit 0: no regression; 1: a KPI regressed/changed/missing, an assertion failed, a case
    did not run or has no baseline; 2: bad usage. Rules: twin/regress.py.
    """
    logging.basicConfig(level=logging.ERROR)
    root = directory or SCENARIOS
    if update and not (reason and reason.strip()):
        console.print("[red]error:[/red] --update needs --reason \"why the KPIs change\"")
        raise typer.Exit(2)
    try:
        cases = select(discover(root), only or [], fast)
    except RegressError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    if not cases:
        console.print(f"[red]error:[/red] no regression scenario under {root}"
                      + (" marked `regression: fast`" if fast else ""))
        raise typer.Exit(2)
    stamp = datetime.now(UTC)
    out = out or Path("runs") / f"regress-{stamp.strftime('%Y%m%dT%H%M%SZ')}"
    out.mkdir(parents=True, exist_ok=True)
    results: list[CaseResult] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        overall = progress.add_task("scenarios", total=len(cases))
        for case in cases:
            task = progress.add_task(f"  {case.name}", total=None)
            result = run_case(case, out, progress, task)
            progress.remove_task(task)
            progress.advance(overall)
            mark = "[red]error[/]" if result.error else (
                "[red]assertions failed[/]" if result.assertion_failures else "[green]ran[/]")
            console.print(f"{escape(case.name)}: {mark} in {result.run_time_s:.1f} s "
                          f"(CPU {result.cpu_time_s:.1f} s)")
            results.append(result)
    if update:
        _update(results, baselines, reason or "", stamp)
        return
    try:
        for r in results:
            compare_case(r, baselines)
    except RegressError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    # a log (CI) is no terminal: rich would wrap the table at 80 columns
    wide = console if console.is_terminal else Console(width=200)
    shown = all_rows or any(r.error or r.assertion_failures
                            or any(c.verdict != "ok" for c in r.checks) for r in results)
    if shown:
        wide.print(_table(results, all_rows))
    else:
        console.print("every KPI within its tolerance of the baseline")
    meta = {"date": stamp.isoformat(timespec="seconds"), "scenarios": str(root),
            "subset": "fast" if fast else "full", "baselines": str(baselines),
            "run folders": str(out)}
    junit = junit or out / "junit.xml"
    report = report or out / "report.md"
    for path, text in ((junit, junit_xml(results)),
                       (report, markdown_report(results, meta=meta))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    failed = [r for r in results if r.failed]
    total = sum(r.run_time_s for r in results)
    cpu = sum(r.cpu_time_s for r in results)
    summary = (f"{len(results) - len(failed)} of {len(results)} scenarios pass "
               f"({total:.1f} s of runs, CPU {cpu:.1f} s); JUnit: {junit}; report: {report}")
    improved = [r.case.name for r in results if r.verdict == "improved"]
    if improved:
        console.print(f"[cyan]improved[/] beyond tolerance: {', '.join(improved)} "
                      "(refresh with --update --reason ...)")
    if failed:
        console.print(f"[bold red]REGRESSION[/]: {', '.join(r.case.name for r in failed)}; "
                      + summary)
        raise typer.Exit(1)
    console.print(f"[green]passed[/]: {summary}")


def _update(results: list[CaseResult], baselines: Path, reason: str, now: datetime) -> None:
    updated: dict[str, Any] = provenance(reason.strip(), now, REPO)
    changes = []
    refused = []
    for r in results:
        if r.kpis is None or r.assertion_failures:
            refused.append(r)
            continue
        path = baseline_path(baselines, r.case.name)
        try:
            previous = load_baseline(path)
        except RegressError:
            previous = None  # an unreadable baseline is replaced
        write_baseline(path, baseline_doc(r, updated, previous, REPO))
        changes.append((r.case.name, None if previous is None else previous["kpis"],
                        r.kpis["kpis"]))
        console.print(f"baseline written: {path}")
    if changes:
        append_changelog(baselines / "CHANGELOG.md", changelog_entry(updated, changes))
        console.print(f"recorded in {baselines / 'CHANGELOG.md'}: {escape(reason)}")
    for r in refused:
        why = r.error or "; ".join(r.assertion_failures)
        console.print(f"[red]no baseline for {escape(r.case.name)}[/]: {escape(why)}")
    if refused:
        raise typer.Exit(1)
