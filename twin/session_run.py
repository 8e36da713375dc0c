"""One run of a scenario, from file to run folder.

Loads and validates the scenario, resolves its real-data inputs, creates the run folder
(``runs/<scenario>-<UTC timestamp>/``), writes the resolved ``scenario.yaml`` with the data
sources and their checksums, runs the lock-step runtime, writes ``kpis.json`` and checks
the scenario's KPI assertions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from twin import kpis as kpi_doc
from twin.run_inputs import resolve_inputs
from twin.runtime import LockStepRuntime, ProgressCallback
from twin.scenario import Scenario, load_scenario


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


def new_run_dir(runs_root: Path, name: str) -> Path:
    """A fresh ``<runs_root>/<name>-<UTC timestamp>`` folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = runs_root / f"{name}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = runs_root / f"{name}-{stamp}-{n}"
    return candidate


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
    runtime = LockStepRuntime(scenario, inputs, run_dir, on_progress=on_progress)
    output = await runtime.run()
    doc = {"scenario": scenario.name, "seed": scenario.run.seed, **output.kpis}
    (run_dir / "kpis.json").write_text(kpi_doc.dumps(doc), encoding="utf-8")
    failures = check_assertions(scenario, doc)
    if failures:
        raise KpiAssertionError(run_dir, doc, failures)
    return RunResult(run_dir, doc)
