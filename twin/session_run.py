"""One run of a scenario, from file to run folder.

Loads and validates the scenario, resolves its real-data inputs, creates the run folder
(``runs/<scenario>-<UTC timestamp>/``), writes the resolved ``scenario.yaml`` with the data
sources and their checksums, runs the lock-step runtime, writes ``kpis.json`` and checks
the scenario's KPI assertions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from twin import kpis as kpi_doc
from twin.kpis_grid import versus_uncontrolled
from twin.run_inputs import resolve_inputs
from twin.runtime import LockStepRuntime, ProgressCallback
from twin.scenario import Scenario, ScenarioError, load_scenario
from twin.scenario_site import physical_devices


class KpiAssertionError(Exception):
    """One or more KPI assertions of the scenario failed; the run folder is complete."""

    def __init__(self, run_dir: Path, kpis: dict[str, Any], failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.run_dir = run_dir
        self.kpis = kpis
        self.failures = failures


@dataclass
class RunResult:
    """A finished run: its folder and KPI document."""

    run_dir: Path
    kpis: dict[str, Any]


def check_assertions(scenario: Scenario, doc: dict[str, Any]) -> list[str]:
    """Failed assertions as readable lines (empty when all hold)."""
    failures: list[str] = []
    for a in scenario.assertions:
        try:
            value = kpi_doc.kpi_value(doc, a.kpi)
        except KeyError:
            failures.append(f"{a.kpi}: no such KPI")
            continue
        if a.min is not None and value < a.min:
            failures.append(f"{a.kpi} = {value:g} < min {a.min:g}")
        if a.max is not None and value > a.max:
            failures.append(f"{a.kpi} = {value:g} > max {a.max:g}")
    return failures


def write_status(run_dir: Path, state: str, error: str | None = None) -> None:
    """Write ``status.json`` (state ``running``, ``finished`` or ``failed``, UTC times).

    Written atomically; a live reader tells a run in progress from a finished one by it.
    """
    path = run_dir / "status.json"
    doc: dict[str, Any] = {}
    if path.exists():
        doc = json.loads(path.read_text(encoding="utf-8"))
    now = datetime.now(UTC).isoformat()
    doc["state"] = state
    doc.setdefault("started_at", now)
    doc["updated_at"] = now
    if state != "running":
        doc["finished_at"] = now
    if error:
        doc["error"] = error
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def new_run_dir(runs_root: Path, name: str) -> Path:
    """A fresh ``<runs_root>/<name>-<UTC timestamp>`` folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = runs_root / f"{name}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = runs_root / f"{name}-{stamp}-{n}"
    return candidate


#: grid limit of the uncontrolled comparison run [kW]: no limit that could bind
UNCONTROLLED_LIMIT_KW = 100_000.0


async def _versus_uncontrolled(
    scenario: Scenario, inputs: Any, run_dir: Path, kpis: dict[str, Any]
) -> dict[str, Any]:
    """Run the same sessions uncontrolled into ``run_dir/uncontrolled``; compare.

    Uncontrolled: no grid events, no site devices, a grid limit that never binds (every
    EV charges at the most its EVSE and vehicle allow).
    """
    import pandas as pd

    base = scenario.model_copy(update={
        "name": f"{scenario.name}-uncontrolled",
        "grid": None,
        "site_devices": None,
        "site": scenario.site.model_copy(update={"grid_limit_kw": UNCONTROLLED_LIMIT_KW}),
        "assertions": [],
    })
    out = run_dir / "uncontrolled"
    out.mkdir(parents=True, exist_ok=True)
    result = await LockStepRuntime(base, inputs, out).run()
    (out / "kpis.json").write_text(
        kpi_doc.dumps({"scenario": base.name, "seed": base.run.seed, **result.kpis}),
        encoding="utf-8",
    )
    write_status(out, "finished")

    def site_series(folder: Path, quantity: str) -> pd.Series:
        t = pd.read_parquet(folder / "traces.parquet",
                            filters=[("entity", "==", "site"), ("quantity", "==", quantity)])
        return t.set_index("time")["value"].sort_index()

    emergency = site_series(run_dir, "grid_emergency")
    base_ev = site_series(out, "ev_power_kw").reindex(emergency.index).fillna(0.0)
    return versus_uncontrolled(
        kpis, result.kpis["kpis"], emergency.to_numpy(), base_ev.to_numpy(),
        float(scenario.run.step_s),
    )


def _bill(run_dir: Path, scenario: Scenario) -> dict[str, Any]:
    """Bill the run (:func:`twin.billing_run.bill_run`); the updated KPI document."""
    from twin.billing_run import bill_run

    try:
        bill_run(run_dir, scenario.billing)
    except BaseException as err:
        write_status(run_dir, "failed", error=f"billing: {type(err).__name__}: {err}")
        raise
    doc: dict[str, Any] = json.loads((run_dir / "kpis.json").read_text(encoding="utf-8"))
    return doc


async def run_scenario(
    path: Path,
    *,
    out: Path | None = None,
    seed: int | None = None,
    runs_root: Path = Path("runs"),
    on_progress: ProgressCallback | None = None,
    data_progress: Any = None,
) -> RunResult:
    """Run the scenario at ``path`` and write its run folder.

    Raises:
        twin.scenario.ScenarioError: bad scenario file (nothing started).
        twin.datasets.DataSetError: a data set cannot be fetched or verified.
        KpiAssertionError: the run finished but a KPI assertion failed.
    """
    scenario = load_scenario(path)
    if scenario.site_devices is not None and (physical := physical_devices(scenario.site_devices)):
        raise ScenarioError(
            f"{path}: site_devices {', '.join(physical)} bound to physical addresses: the "
            "lock-step twin runs on virtual time and drives emulated devices only; check "
            "physical devices with `migrid device check FILE` and run them on a bench"
        )
    if seed is not None:
        scenario = scenario.model_copy(
            update={"run": scenario.run.model_copy(update={"seed": seed})}
        )
    inputs = resolve_inputs(scenario, progress=data_progress)
    run_dir = out or new_run_dir(runs_root, scenario.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = scenario.model_dump(mode="json")
    resolved["sources"] = inputs.sources
    resolved["kind"] = "twin"
    (run_dir / "scenario.yaml").write_text(
        yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8"
    )
    write_status(run_dir, "running")
    runtime = LockStepRuntime(scenario, inputs, run_dir, on_progress=on_progress)
    try:
        output = await runtime.run()
        if scenario.grid is not None and scenario.grid.compare_uncontrolled:
            output.kpis["kpis"].update(
                await _versus_uncontrolled(scenario, inputs, run_dir, output.kpis["kpis"])
            )
    except BaseException as err:
        write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    doc = {"scenario": scenario.name, "seed": scenario.run.seed, **output.kpis}
    (run_dir / "kpis.json").write_text(kpi_doc.dumps(doc), encoding="utf-8")
    if scenario.billing is not None:  # issue 8: audit, bill and reward every session
        doc = _bill(run_dir, scenario)
    write_status(run_dir, "finished")
    failures = check_assertions(scenario, doc)
    if failures:
        raise KpiAssertionError(run_dir, doc, failures)
    return RunResult(run_dir, doc)
