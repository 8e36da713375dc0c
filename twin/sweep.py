"""Parameter sweeps: many runs of one scenario, spread over a Dask cluster.

A sweep is the cartesian product of parameter values (``--param PATH=V1,V2``, ``PATH`` a
dotted path into the scenario model such as ``site.grid_limit_kw`` or ``dlm.strategy``,
short for ``controllers.dlm.strategy``) times seeds. One combination of values is a
*variant* (id: :func:`variant_id`); one variant with one seed is a *run*, executed by
:func:`run_variant` (:func:`twin.session_run.run_scenario` under its own
``asyncio.run``) in a Dask worker process, into its own run folder
``<out>/<variant id>/seed-<seed>/``.

Everything is checked before anything starts (:func:`plan_sweep`): every path against the
scenario model, every value and every variant by the pydantic model itself, so that a bad
path or value is rejected with the path and the reason (:class:`SweepError`).

Failures stay with their run (:func:`gather`): an exception (status ``error``), a KPI
assertion that fails (``kpi_failed``, KPIs kept), a worker process that dies while running
it (``worker_died``: crash, ``os._exit``, the nanny's memory limit or the kernel's OOM
killer) or a run cancelled by Ctrl-C (``cancelled``). The sweep goes on. Runs are not
retried: exceptions and KPI failures are results of a deterministic run; a run whose worker
died is retried only as many times as the scheduler's ``allowed_failures`` says (0 on the
local cluster unless ``retries`` is given; reported in ``sweep.json``).

Results (:func:`write_results`): ``sweep.parquet`` (one row per run: variant id, one
column per parameter, seed, status, error, run time, each headline KPI with its unit in the
column name), ``sweep.json`` (metadata, failures with tracebacks) and ``sweep.html`` (plus
``sweep.png`` when kaleido can render) with the distribution of chosen KPIs per variant.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import socket
import time
import traceback
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from twin.scenario import (
    Controllers,
    Scenario,
    ScenarioError,
    parse_scenario,
    read_yaml,
)

#: Run statuses in ``sweep.parquet``.
STATUSES = ("ok", "kpi_failed", "error", "worker_died", "cancelled")

#: KPIs plotted when the user names none.
DEFAULT_PLOT_KPIS = ("energy_met_share", "peak_import_kw")

#: Paths that a sweep cannot vary, with the reason.
FORBIDDEN_PATHS = {"run.seed": "seeds are swept with --seeds, not --param"}

#: Fixed columns of ``sweep.parquet`` before the parameter columns / after them.
LEADING_COLUMNS = ("variant_id",)
RUN_COLUMNS = ("seed", "status", "error", "run_time_s", "cpu_time_s", "run_dir", "worker")

PathPart = str | int


class SweepError(ValueError):
    """A sweep that cannot start: bad ``--param`` path or value, bad seeds or KPI names."""


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamAxis:
    """One swept parameter.

    ``name``: the dotted path into :class:`twin.scenario.Scenario` (aliases resolved, so
    ``dlm.strategy`` becomes ``controllers.dlm.strategy``), also the column name in
    ``sweep.parquet``; ``path``: its parts (list indexes as ``int``); ``values``: the
    values as the model holds them, JSON-compatible, in the order given.
    """

    name: str
    path: tuple[PathPart, ...]
    values: tuple[Any, ...]


def split_values(text: str) -> list[str]:
    """Split ``"a,b,[1,2],'x,y'"`` on the commas outside brackets, braces and quotes."""
    parts: list[str] = []
    depth, quote = 0, ""
    cur: list[str] = []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def parse_param(text: str) -> tuple[str, list[Any]]:
    """``"site.grid_limit_kw=100,150"`` → ``("site.grid_limit_kw", [100, 150])``.

    Each value is read as a YAML scalar or flow collection (``100`` an int, ``true`` a
    bool, ``llf`` a string, ``[1, 2]`` a list); the model converts it later.

    Raises:
        SweepError: no ``=``, an empty path or value, or a value that is not YAML.
    """
    path, sep, raw = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SweepError(f"--param {text!r}: expected PATH=VALUE[,VALUE...]")
    values: list[Any] = []
    for item in split_values(raw):
        if not item:
            raise SweepError(f"--param {path}: empty value in {raw!r}")
        try:
            values.append(yaml.safe_load(item))
        except yaml.YAMLError as err:
            raise SweepError(f"--param {path}: value {item!r} is not valid: {err}") from None
    return path, values


def _unwrap(annotation: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``; a union of several stays."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def resolve_path(name: str) -> tuple[PathPart, ...]:
    """The parts of a dotted scenario path, checked against the model.

    A first part that is not a scenario field but a field of ``controllers`` gets
    ``controllers.`` put in front (``dlm.strategy``). A number after a list field is an
    index (``stations.0.count``); any key goes after a mapping field. Below a union of
    several models the path is left to the model's own validation.

    Raises:
        SweepError: ``name: reason`` (no such field, with the fields there are; a value
            that has no fields; an index that is not a number; a forbidden path).
    """
    parts: list[str] = [p for p in name.split(".")]
    if any(not p for p in parts):
        raise SweepError(f"--param {name}: empty part in the dotted path")
    if parts[0] not in Scenario.model_fields and parts[0] in Controllers.model_fields:
        parts = ["controllers", *parts]
    dotted = ".".join(parts)
    if dotted in FORBIDDEN_PATHS:
        raise SweepError(f"--param {name}: {FORBIDDEN_PATHS[dotted]}")
    out: list[PathPart] = []
    annotation: Any = Scenario
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the scenario"
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = annotation.model_fields
            if part not in fields:
                raise SweepError(
                    f"--param {name}: {where} has no field {part!r} "
                    f"(fields: {', '.join(fields)})")
            out.append(part)
            annotation = fields[part].annotation
        elif origin is list:
            if not part.isdigit():
                raise SweepError(f"--param {name}: {where} is a list; {part!r} is not an index")
            out.append(int(part))
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            out.append(part)
            annotation = typing.get_args(annotation)[1]
        elif origin in (typing.Union, types.UnionType) or annotation is Any:
            out.extend(int(p) if p.isdigit() else p for p in parts[i:])
            break
        else:
            raise SweepError(f"--param {name}: {where} is a value, it has no field {part!r}")
    return tuple(out)


def _set_in(raw: dict[str, Any], path: Sequence[PathPart], value: Any, name: str) -> None:
    """Set ``value`` at ``path`` in the raw scenario mapping (missing mappings created)."""
    node: Any = raw
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(map(str, path[:i + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise SweepError(f"--param {name}: {where}: the scenario's list has "
                                 f"{size} item(s)")
            if last:
                node[part] = value
            else:
                if node[part] is None:
                    node[part] = {}
                node = node[part]
            continue
        if not isinstance(node, dict):
            raise SweepError(f"--param {name}: {where}: not a mapping in the scenario")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]


def _get_in(doc: Any, path: Sequence[PathPart]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else _canonical(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def variant_id(params: Mapping[str, Any]) -> str:
    """Stable, unique, file-name-safe id of a combination of parameter values.

    ``<last part>-<value>`` per parameter, sorted by path, joined by ``__`` (at most 80
    characters), then ``-`` and 8 hex digits of the SHA-256 of the canonical JSON of the
    whole mapping: equal mappings (in any order) give equal ids, different ones different
    ids. ``base`` when nothing is swept.
    """
    if not params:
        return "base"
    slug = "__".join(f"{str(k).split('.')[-1]}-{_slug(v)}" for k, v in sorted(params.items()))
    digest = hashlib.sha256(_canonical(dict(params)).encode()).hexdigest()[:8]
    return f"{slug[:80]}-{digest}"


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs for one run (small, picklable, no open resources).

    ``scenario``: the variant's validated scenario as JSON-compatible data (data-file paths
    absolute); ``run_dir``: the run folder to write (a path the worker can reach);
    ``quiet``: silence the runtime's logging below ERROR in the worker.
    """

    variant_id: str
    params: dict[str, Any]
    seed: int
    scenario: dict[str, Any]
    run_dir: str
    quiet: bool = True


@dataclass
class SweepPlan:
    """A checked sweep: the axes, the variants in order, the seeds and the runs.

    ``runs`` are ordered variant by variant, seed by seed; there are
    ``len(variants) * len(seeds)`` of them.
    """

    scenario_path: Path
    scenario_name: str
    datasets: list[str]
    axes: list[ParamAxis]
    variants: list[tuple[str, dict[str, Any]]]
    seeds: list[int]
    out: Path
    runs: list[RunSpec] = field(default_factory=list)


def _validate(raw: dict[str, Any], source: str, base_dir: Path) -> Scenario:
    return parse_scenario(raw, source, base_dir)


def expand(
    base: dict[str, Any],
    axes_text: Sequence[tuple[str, Sequence[Any]]],
    *,
    base_dir: Path = Path("."),
    source: str = "<scenario>",
) -> tuple[list[ParamAxis], list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    """Check the parameters and build every variant of the raw scenario ``base``.

    ``axes_text``: ``(path, raw values)`` pairs as from :func:`parse_param`. Each value is
    first set alone into ``base`` and validated (so an error names the parameter and the
    value), then each combination is validated as a whole (cross-field rules).

    Returns:
        the axes (values as the model holds them) and, per combination in product order
        (first axis slowest), ``(variant id, {param name: value}, scenario as JSON data)``.

    Raises:
        SweepError: bad path (see :func:`resolve_path`), a value or a combination the model
            rejects (with the model's ``path: reason`` lines), a parameter given twice, two
            values that are equal once parsed, no values.
    """
    axes: list[ParamAxis] = []
    for name, raw_values in axes_text:
        path = resolve_path(name)
        dotted = ".".join(map(str, path))
        if any(a.name == dotted for a in axes):
            raise SweepError(f"--param {name}: given twice")
        if not raw_values:
            raise SweepError(f"--param {name}: no values")
        parsed: list[Any] = []
        for value in raw_values:
            raw = copy.deepcopy(base)
            _set_in(raw, path, value, name)
            try:
                model = _validate(raw, source, base_dir)
            except ScenarioError as err:
                raise SweepError(f"--param {name}={value!r} rejected:\n"
                                 f"{_reasons(err)}") from None
            held = _get_in(model.model_dump(mode="json"), path)
            if any(_canonical(held) == _canonical(p) for p in parsed):
                raise SweepError(f"--param {name}: value {value!r} given twice "
                                 f"(the model reads it as {held!r})")
            parsed.append(held)
        axes.append(ParamAxis(dotted, path, tuple(parsed)))
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for combo in itertools.product(*(a.values for a in axes)):
        raw = copy.deepcopy(base)
        params = {a.name: v for a, v in zip(axes, combo, strict=True)}
        for a, v in zip(axes, combo, strict=True):
            _set_in(raw, a.path, v, a.name)
        vid = variant_id(params)
        try:
            model = _validate(raw, source, base_dir)
        except ScenarioError as err:
            raise SweepError(f"variant {vid} ({_describe(params)}) rejected:\n"
                             f"{_reasons(err)}") from None
        variants.append((vid, params, model.model_dump(mode="json")))
    return axes, variants


def _reasons(err: ScenarioError) -> str:
    lines = str(err).splitlines()
    return "\n".join(lines[1:]) if len(lines) > 1 else str(err)


def _describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def seed_list(count: int, start: int) -> list[int]:
    """``count`` consecutive seeds from ``start``.

    Raises:
        SweepError: ``count`` < 1.
    """
    if count < 1:
        raise SweepError(f"--seeds {count}: need at least one seed")
    return list(range(start, start + count))


def plan_sweep(
    scenario_path: Path,
    params: Sequence[str],
    *,
    seeds: int = 1,
    seed_start: int | None = None,
    out: Path,
    quiet: bool = True,
) -> SweepPlan:
    """Read the scenario file and lay out the sweep (see :func:`plan_from_mapping`).

    Raises:
        twin.scenario.ScenarioError: the scenario file cannot be read or is invalid.
        SweepError: see :func:`plan_from_mapping`.
    """
    raw = read_yaml(scenario_path, "scenario")
    return plan_from_mapping(raw, params, seeds=seeds, seed_start=seed_start, out=out,
                             quiet=quiet, source=scenario_path,
                             base_dir=scenario_path.parent)


def plan_from_mapping(
    raw: Any,
    params: Sequence[str],
    *,
    seeds: int = 1,
    seed_start: int | None = None,
    out: Path,
    quiet: bool = True,
    source: Path = Path("<scenario>"),
    base_dir: Path = Path("."),
) -> SweepPlan:
    """Check every parameter and variant of a raw scenario mapping; lay out the runs.

    ``params``: ``PATH=V1,V2`` texts; ``seeds``: how many seeds per variant, from
    ``seed_start`` (default: the scenario's own ``run.seed``, so ``seeds=1`` reproduces the
    scenario); ``out``: the sweep folder (runs go to ``<out>/<variant id>/seed-<seed>``,
    made absolute); ``base_dir``: where relative data-file paths of the scenario are.

    Raises:
        twin.scenario.ScenarioError: the scenario itself is invalid.
        SweepError: see :func:`parse_param`, :func:`expand` and :func:`seed_list`.
    """
    base = _validate(raw, str(source), base_dir)  # ScenarioError
    axes, variants = expand(raw, [parse_param(p) for p in params], base_dir=base_dir,
                            source=str(source))
    seed_values = seed_list(seeds, base.run.seed if seed_start is None else seed_start)
    plan = SweepPlan(source, base.name, base.datasets, axes,
                     [(vid, p) for vid, p, _ in variants], seed_values, out)
    out_abs = out.resolve()
    for vid, p, doc in variants:
        for seed in seed_values:
            plan.runs.append(RunSpec(vid, p, seed, doc, str(out_abs / vid / f"seed-{seed}"),
                                     quiet))
    return plan


# ------------------------------------------------------------------------- worker task


def run_variant(spec: RunSpec) -> dict[str, Any]:
    """Run one variant with one seed; the task executed by a Dask worker process.

    Writes the variant's scenario to a temporary YAML file, runs
    :func:`twin.session_run.run_scenario` with the seed under its own ``asyncio.run``
    (a fresh event loop in the worker's task thread, shared with nothing; every endpoint
    on an ephemeral loopback port) into ``spec.run_dir``, and returns a small record, not
    the run's data: ``variant_id``, ``params``, ``seed``, ``status`` (``ok``,
    ``kpi_failed`` or ``error``), ``error`` (``Type: message``, ``None`` when ok),
    ``traceback``, ``run_time_s`` (wall), ``cpu_time_s`` (CPU time of the worker process
    over the run: with ``run_time_s``, how much the run waited for a core), ``run_dir``,
    ``worker`` (``host:pid``) and
    ``kpis`` (``{name: {"value", "unit"}}`` of the ``kpis`` section; also for
    ``kpi_failed``). Never raises for a failing run.
    """
    import asyncio
    import logging
    import tempfile

    from twin.session_run import KpiAssertionError, run_scenario

    if spec.quiet:
        logging.getLogger().setLevel(logging.ERROR)
    record: dict[str, Any] = {
        "variant_id": spec.variant_id, "params": dict(spec.params), "seed": spec.seed,
        "status": "ok", "error": None, "traceback": None, "run_time_s": None,
        "cpu_time_s": None, "run_dir": spec.run_dir,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "kpis": {},
    }
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        with tempfile.TemporaryDirectory(prefix="migrid-sweep-") as tmp:
            path = Path(tmp) / "scenario.yaml"
            path.write_text(yaml.safe_dump(spec.scenario, sort_keys=False), encoding="utf-8")
            result = asyncio.run(run_scenario(path, out=Path(spec.run_dir), seed=spec.seed))
        record["kpis"] = dict(result.kpis.get("kpis", {}))
    except KpiAssertionError as fail:
        record.update(status="kpi_failed", error="; ".join(fail.failures),
                      kpis=dict(fail.kpis.get("kpis", {})))
    except Exception as err:
        record.update(status="error", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
    record["run_time_s"] = time.perf_counter() - t0
    record["cpu_time_s"] = time.process_time() - cpu0
    return record


def failed_record(spec: RunSpec, status: str, error: str, tb: str | None = None) -> dict[str, Any]:
    """The record of a run that returned nothing (worker died, task error, cancelled)."""
    return {
        "variant_id": spec.variant_id, "params": dict(spec.params), "seed": spec.seed,
        "status": status, "error": error, "traceback": tb, "run_time_s": None,
        "cpu_time_s": None, "run_dir": spec.run_dir, "worker": None, "kpis": {},
    }


# ---------------------------------------------------------------------------- gathering


def _outcome(future: Any, spec: RunSpec) -> dict[str, Any]:
    """The record of a finished future; a dead worker or a task error become records."""
    from distributed import KilledWorker

    try:
        record: dict[str, Any] = future.result()
        return record
    except KilledWorker as err:
        return failed_record(
            spec, "worker_died",
            f"KilledWorker: the worker process died while running this run "
            f"({err.allowed_failures + 1} attempt(s); last worker "
            f"{getattr(err.last_worker, 'address', '?')}): a crash, os._exit, or the "
            "memory limit / OOM killer")
    except Exception as err:
        return failed_record(spec, "error", f"{type(err).__name__}: {err}",
                             traceback.format_exc())


def gather(
    client: Any,
    runs: Sequence[RunSpec],
    *,
    task: Callable[[RunSpec], dict[str, Any]] = run_variant,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """Run every spec on the cluster of ``client`` and collect one record per run.

    At most as many runs are in flight as the cluster has worker threads (asked again
    after every result), so that a worker holds one run at a time and its death fails that
    run only (the scheduler fails every task a dying worker was processing). Each record
    is taken off the cluster as soon as it is done (``on_result`` is called with it), so a
    later worker death cannot make the scheduler recompute finished runs.

    ``task``: the module-level function run per spec (default :func:`run_variant`);
    ``token``: a suffix that makes the task keys unique on a shared cluster.

    Returns:
        the records in the order of ``runs`` (see :func:`run_variant`).

    Raises:
        KeyboardInterrupt, or whatever broke the connection to the cluster: after the
            unfinished runs were cancelled and recorded as ``cancelled`` (via
            ``on_result``, so a caller can still write partial results).
    """
    from distributed import as_completed

    token = token or hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:8]
    pending = deque(enumerate(runs))
    inflight: dict[str, tuple[int, RunSpec, Any]] = {}
    records: dict[int, dict[str, Any]] = {}
    done = as_completed()  # type: ignore[no-untyped-call]

    def slots() -> int:
        threads = int(sum(client.nthreads().values()))
        return max(1, threads) - len(inflight)

    def fill() -> None:
        n = slots()
        while n > 0 and pending:
            i, spec = pending.popleft()
            key = f"migrid-run-{token}-{i:06d}"
            fut = client.submit(task, spec, key=key, pure=False, retries=0)
            inflight[fut.key] = (i, spec, fut)
            done.add(fut)  # type: ignore[no-untyped-call]
            n -= 1

    def record(i: int, rec: dict[str, Any]) -> None:
        records[i] = rec
        if on_result is not None:
            on_result(rec)

    try:
        fill()
        for fut in done:
            i, spec, _ = inflight.pop(fut.key)
            rec = _outcome(fut, spec)
            fut.release()
            record(i, rec)
            fill()
    except BaseException as exc:  # Ctrl-C, or the scheduler lost: record what did not run
        why = ("cancelled (interrupted)" if isinstance(exc, KeyboardInterrupt)
               else f"cancelled: the sweep stopped ({type(exc).__name__}: {exc})")
        for i, spec, fut in list(inflight.values()):
            fut.cancel()
            record(i, failed_record(spec, "cancelled", why))
        for i, spec in pending:
            record(i, failed_record(spec, "cancelled", why))
        raise
    return [records[i] for i in sorted(records)]


# ------------------------------------------------------------------------------ results


def standard_kpis() -> dict[str, str]:
    """Name → column (:func:`kpi_column`) of every KPI a run of any scenario reports.

    Scenarios with a ``grid`` section report more (comparison with the uncontrolled run).
    """
    import numpy as np

    from twin.kpis import KpiInputs, compute_kpis

    zero = np.zeros(1)
    doc = compute_kpis(KpiInputs(step_s=60.0, import_kw=zero, limit_kw=zero, ev_power_kw=zero,
                                 price_per_mwh=zero, currency="EUR", sessions=[],
                                 sessions_refused=0))
    return {name: kpi_column(name, kpi["unit"]) for name, kpi in doc["kpis"].items()}


def check_plot_kpis(kpis: Sequence[str], scenario: Scenario) -> None:
    """Reject KPI names (or column names) to plot that no run of ``scenario`` can report.

    Only checked for scenarios without a ``grid`` section (whose KPI set is fixed).

    Raises:
        SweepError: ``--kpi NAME: no such KPI (known: ...)``.
    """
    if scenario.grid is not None:
        return
    known = standard_kpis()
    names = set(known) | set(known.values())
    for k in kpis:
        if k not in names and not k.startswith("energy_cost"):
            raise SweepError(f"--kpi {k}: no such KPI (known: {', '.join(known)})")


def kpi_column(name: str, unit: str) -> str:
    """Column name of a KPI with its unit: ``energy_cost`` in EUR → ``energy_cost_eur``.

    Names that already end in their unit (``peak_import_kw``) and dimensionless KPIs
    (unit ``1``: counts, shares 0..1) keep their name.
    """
    suffix = re.sub(r"[^a-z0-9]+", "_", unit.lower()).strip("_")
    if unit == "1" or not suffix or name.endswith(f"_{suffix}"):
        return name
    return f"{name}_{suffix}"


def _kpi_cell(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return Decimal(value)  # money stays Decimal (a decimal128 column)
        except InvalidOperation:
            return value
    return value


def results_table(records: Sequence[Mapping[str, Any]], axes: Sequence[ParamAxis]) -> Any:
    """``sweep.parquet``'s table: one row per record, in the records' order.

    Columns: ``variant_id``, one per parameter (its dotted path; list or mapping values as
    JSON text), ``seed``, ``status``, ``error``, ``run_time_s``, ``cpu_time_s``, ``run_dir``,
    ``worker``, then one per KPI seen in any record (:func:`kpi_column`; ``None``/NaN where
    a run has none). Money KPIs (string values) are ``Decimal``.
    """
    import pandas as pd

    kpi_cols: dict[str, str] = {}
    for r in records:
        for name, kpi in r.get("kpis", {}).items():
            kpi_cols.setdefault(name, kpi_column(name, str(kpi.get("unit", ""))))
    rows = []
    for r in records:
        row: dict[str, Any] = {"variant_id": r["variant_id"]}
        for a in axes:
            v = r["params"].get(a.name)
            row[a.name] = _canonical(v) if isinstance(v, list | dict) else v
        for c in RUN_COLUMNS:
            row[c] = r.get(c)
        for name, col in kpi_cols.items():
            kpi = r.get("kpis", {}).get(name)
            row[col] = None if kpi is None else _kpi_cell(kpi.get("value"))
        rows.append(row)
    columns = [*LEADING_COLUMNS, *(a.name for a in axes), *RUN_COLUMNS, *kpi_cols.values()]
    table = pd.DataFrame(rows, columns=columns)
    table["seed"] = table["seed"].astype("int64")
    table["run_time_s"] = table["run_time_s"].astype("float64")
    table["cpu_time_s"] = table["cpu_time_s"].astype("float64")
    return table


def write_parquet(table: Any, path: Path) -> None:
    """Write the results table; ``Decimal`` columns become ``decimal128(38, scale)``.

    The scale is the largest number of decimals in the column (2 for cents), so the type
    does not depend on the size of the amounts.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    for i, name in enumerate(arrow.column_names):
        if pa.types.is_decimal(arrow.schema.field(i).type):
            values = [v for v in table[name] if isinstance(v, Decimal)]
            scale = max((max(0, -int(v.as_tuple().exponent)) for v in values), default=2)
            arrow = arrow.set_column(i, name, arrow.column(i).cast(pa.decimal128(38, scale)))
    pq.write_table(arrow, path)


def resolve_kpi(table: Any, kpi: str) -> str | None:
    """The column of ``table`` for a KPI given by name or column name (``None``: absent)."""
    if kpi in table.columns:
        return kpi
    matches = [c for c in table.columns if c.startswith(f"{kpi}_")
               and c not in (*LEADING_COLUMNS, *RUN_COLUMNS)]
    return matches[0] if len(matches) == 1 else None


def kpi_figure(
    table: Any, kpis: Sequence[str], title: str, params: Sequence[str] = ()
) -> Any:
    """Plotly figure: per KPI column a row of box plots (all points, one per seed) per variant.

    ``params``: the parameter columns; a variant is labelled ``last part=value, ...`` on the
    x axis (the variant id and seed are in the hover text). Runs without KPIs (``error``,
    ``worker_died``, ``cancelled``) are left out; runs that failed a KPI assertion are in
    (their KPIs are real).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(kpis), cols=1, shared_xaxes=True, subplot_titles=list(kpis),
                        vertical_spacing=0.08 if len(kpis) > 1 else 0.1)
    variants = list(dict.fromkeys(table["variant_id"]))
    for row, col in enumerate(kpis, start=1):
        for vid in variants:
            rows = table.loc[table["variant_id"] == vid]
            label = ", ".join(f"{p.split('.')[-1]}={rows[p].iloc[0]}" for p in params) or vid
            rows = rows[rows[col].notna()]
            fig.add_trace(go.Box(
                x=[label] * len(rows), y=[float(v) for v in rows[col]], name=label,
                text=[f"{vid} seed {s} ({st})" for s, st in zip(rows["seed"], rows["status"],
                                                               strict=True)],
                boxpoints="all", jitter=0.3, pointpos=0, legendgroup=vid,
                showlegend=row == 1), row=row, col=1)
        fig.update_yaxes(title_text=col, row=row, col=1)
    fig.update_layout(title=title, height=320 * len(kpis) + 160, template="plotly_white")
    return fig


def write_figure(fig: Any, out: Path) -> dict[str, Any]:
    """Write ``sweep.html`` (plotly.js embedded) and, when kaleido renders, ``sweep.png``.

    Returns:
        ``{"html": name, "png": name or None, "png_note": why not}``.
    """
    import importlib.util

    html = out / "sweep.html"
    fig.write_html(html, include_plotlyjs=True)
    files: dict[str, Any] = {"html": html.name, "png": None, "png_note": None}
    if importlib.util.find_spec("kaleido") is None:
        files["png_note"] = "kaleido is not installed: HTML only"
        return files
    try:
        fig.write_image(out / "sweep.png", width=1200, height=fig.layout.height or 800)
        files["png"] = "sweep.png"
    except Exception as err:  # kaleido present but no browser / broken install
        files["png_note"] = f"kaleido could not render: {type(err).__name__}: {err}"
    return files


def counts(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Number of runs per status (every status of :data:`STATUSES`, zeros included)."""
    out = dict.fromkeys(STATUSES, 0)
    for r in records:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def write_results(
    plan: SweepPlan,
    records: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    plot_kpis: Sequence[str],
) -> dict[str, Any]:
    """Write ``sweep.parquet``, ``sweep.json`` and the plot into ``plan.out``.

    ``meta``: cluster and timing facts merged into ``sweep.json``; ``plot_kpis``: KPI
    names or column names to plot (those no run has are listed in ``sweep.json`` under
    ``kpis_missing`` and left out).

    Returns:
        the ``sweep.json`` document.
    """
    plan.out.mkdir(parents=True, exist_ok=True)
    table = results_table(records, plan.axes)
    write_parquet(table, plan.out / "sweep.parquet")
    columns = {k: resolve_kpi(table, k) for k in plot_kpis}
    plotted = [c for c in columns.values() if c is not None]
    c = counts(records)
    failed = len(records) - c["ok"]
    files: dict[str, Any] = {"parquet": "sweep.parquet"}
    if plotted:
        title = (f"{plan.scenario_name}: {len(plan.variants)} variant(s) x "
                 f"{len(plan.seeds)} seed(s), {c['ok']} ok, {failed} failed")
        figure = kpi_figure(table, plotted, title, [a.name for a in plan.axes])
        files.update(write_figure(figure, plan.out))
    doc: dict[str, Any] = {
        "scenario": str(plan.scenario_path),
        "scenario_name": plan.scenario_name,
        "params": [{"name": a.name, "values": list(a.values)} for a in plan.axes],
        "seeds": plan.seeds,
        "variants": [{"variant_id": vid, "params": p} for vid, p in plan.variants],
        "runs": len(records),
        "counts": c,
        **meta,
        "kpis_plotted": plotted,
        "kpis_missing": [k for k, v in columns.items() if v is None],
        "files": files,
        "failures": [
            {k: r.get(k) for k in ("variant_id", "seed", "status", "error", "traceback",
                                   "run_dir", "worker")}
            for r in records if r["status"] != "ok"
        ],
    }
    (plan.out / "sweep.json").write_text(json.dumps(doc, indent=2, default=str) + "\n",
                                         encoding="utf-8")
    return doc


# ---------------------------------------------------------------------------- clusters


def local_cluster(n_workers: int, *, retries: int = 0, memory_limit: str = "auto") -> Any:
    """A Dask ``LocalCluster`` on 127.0.0.1: processes, 1 thread each, no dashboard.

    ``retries``: how often a run is started again after its worker process died (the
    scheduler's ``allowed_failures``; 0: the first death fails the run). ``memory_limit``
    per worker (``"auto"``: the machine's memory / workers); above 95 % the nanny kills
    the worker, which fails its run as ``worker_died``.
    """
    from distributed import LocalCluster

    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit=memory_limit,
        scheduler_kwargs={"allowed_failures": retries},
    )


def cluster_facts(client: Any) -> dict[str, Any]:
    """Scheduler address, workers, threads and ``allowed_failures`` of a connected client."""
    nthreads = client.nthreads()
    try:
        allowed = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    except Exception:  # an old or locked-down scheduler
        allowed = None
    return {
        "scheduler": client.scheduler.address,
        "workers": len(nthreads),
        "threads": int(sum(nthreads.values())),
        "threads_per_worker": sorted(set(nthreads.values())),
        "worker_death_retries": allowed,
    }


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    """A :class:`RunSpec` as a plain mapping (for logs and tests)."""
    return asdict(spec)
