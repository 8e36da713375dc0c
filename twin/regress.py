"""``migrid regress``: golden KPIs per scenario, compared with tolerances.

Pure logic, no terminal and no runtime: discovery of the regression cases, the
comparison of a run's KPIs (``kpis.json``, section ``kpis``) with the committed baseline
(``scenarios/baselines/<scenario name>.json``), verdicts, baseline files with their
provenance, the append-only ``CHANGELOG.md``, JUnit XML and the Markdown report. The
command (:mod:`twin.cli_regress`) runs the scenarios and calls these.

Cases: every ``*.yaml`` under the scenario folder (recursively) whose top-level mapping
has ``regression: true`` or ``regression: fast`` (:mod:`twin.scenario_regress`); the
fast subset (``--fast``, what CI runs on every commit) is those with ``fast``.

Tolerance rule. Each KPI has an absolute part ``abs`` (in its unit) and a relative part
``rel`` (share of ``|baseline|``); the allowed band is ``max(abs, rel * |baseline|)``
and ``|now - baseline| <= band`` passes. Defaults by the baseline's unit and value
(:func:`default_tolerance`):

* money (unit an ISO 4217 code, value a decimal string): ``abs`` 0.01 (one cent);
* counts (an integer value): exact (0);
* shares (unit ``1``, a float value: 0..1): ``abs`` 0.005 (half a percentage point);
* anything else (kWh, kW, %, degC, h ...): ``rel`` 0.005 (0.5 %) with an ``abs`` floor
  of 0.001 (so a zero baseline does not demand bit equality).

A scenario's ``tolerances: {KPI: {abs, rel, better}}`` replaces a KPI's default.

Direction rule. A KPI with a clear better direction (:data:`BETTER`: less unmet energy,
fewer violations, a lower peak, a lower cost, a higher met share ...) that moved beyond
its band in the better direction is ``improved`` (passes; refresh the baseline with
``--update``); in the worse direction ``regressed`` (fails). A KPI without a clear
direction (the energy requested, the site import, BESS throughput ...) that moved beyond
its band is ``changed`` (fails: the behaviour changed and someone must say why by
updating the baseline). A KPI of the baseline missing from the run is ``missing``
(fails); a KPI only in the run is ``new`` (passes). A run that fails to run, or a case
without a baseline, is an ``error``; a scenario's own KPI assertions that fail are a
failure of the case ``assertions``.

Baseline file (JSON): ``scenario``, ``scenario_file``, ``seed``, ``kpis`` (the run's
``kpis`` section, values and units as written), ``run_time_s`` and ``cpu_time_s`` (wall
and CPU time of the run that made it, informational), ``updated`` (reason, date, commit,
dirty, user, host) and ``history`` (earlier ``updated`` entries, newest first).
"""

from __future__ import annotations

import getpass
import json
import re
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from twin.scenario import ScenarioError, read_yaml
from twin.scenario_regress import KpiTolerance

__all__ = [
    "BETTER",
    "FAILING",
    "Case",
    "CaseResult",
    "KpiCheck",
    "RegressError",
    "Tolerance",
    "append_changelog",
    "baseline_doc",
    "baseline_path",
    "better_direction",
    "changelog_entry",
    "compare_kpis",
    "default_tolerance",
    "discover",
    "junit_xml",
    "load_baseline",
    "markdown_report",
    "provenance",
    "select",
    "write_baseline",
]

Better = Literal["higher", "lower"] | None
Verdict = Literal["ok", "improved", "new", "regressed", "changed", "missing", "failed", "error"]

#: verdicts that make ``migrid regress`` exit non-zero
FAILING: frozenset[str] = frozenset({"regressed", "changed", "missing", "failed", "error"})

#: KPIs with a clear better direction; every other KPI has none (``changed`` when it moves)
BETTER: dict[str, Literal["higher", "lower"]] = {
    # drivers served
    "energy_unmet_kwh": "lower",
    "energy_met_share": "higher",
    "sessions_refused": "lower",
    # grid connection and grid events
    "peak_import_kw": "lower",
    "peak_demand_15min_kw": "lower",
    "limit_violations": "lower",
    "limit_violation_max_kw": "lower",
    "limit_violation_kwh": "lower",
    "grid_limit_violations": "lower",
    "grid_limit_violation_max_kw": "lower",
    "emergency_ev_energy_kwh": "lower",
    "energy_moved_out_of_emergency_kwh": "higher",
    # money
    "energy_cost": "lower",
    "energy_cost_saving": "higher",
    # site devices
    "fail_safe_steps": "lower",
    "pv_curtailed_kwh": "lower",
    "pv_self_consumption_share": "higher",
    "transformer_peak_loading_pct": "lower",
    "transformer_max_hot_spot_c": "lower",
    "transformer_max_top_oil_c": "lower",
    "transformer_loss_of_life_h": "lower",
}

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class RegressError(ValueError):
    """A regression set-up that cannot be used (bad baseline file, unknown ``--only``)."""


@dataclass(frozen=True)
class Tolerance:
    """Allowed deviation of a KPI: band ``max(abs, rel * |baseline|)``; its better way."""

    abs: Decimal = Decimal(0)
    rel: Decimal = Decimal(0)
    better: Better = None

    def band(self, baseline: Decimal) -> Decimal:
        """The allowed ``|now - baseline|`` for this baseline value (KPI unit)."""
        return max(self.abs, self.rel * abs(baseline))

    def describe(self) -> str:
        """Short text: ``±0.01``, ``±0.5 %``, ``±max(0.001, 0.5 %)``, ``exact``."""
        parts = []
        if self.abs:
            parts.append(f"{self.abs.normalize():f}")
        if self.rel:
            parts.append(f"{(self.rel * 100).normalize():f} %")
        if not parts:
            return "exact"
        return f"±{parts[0]}" if len(parts) == 1 else f"±max({', '.join(parts)})"


def better_direction(name: str) -> Better:
    """The built-in better direction of KPI ``name`` (:data:`BETTER`), None without one."""
    return BETTER.get(name)


def _is_money(unit: str, value: Any) -> bool:
    return isinstance(value, str) and bool(_CURRENCY.match(unit))


def default_tolerance(name: str, unit: str, value: Any) -> Tolerance:
    """The default tolerance of a KPI from its baseline unit and value (module docstring).

    ``value`` as in ``kpis.json``: int (a count), float, or a decimal string (money).
    """
    better = better_direction(name)
    if _is_money(unit, value):
        return Tolerance(abs=Decimal("0.01"), better=better)
    if isinstance(value, bool) or isinstance(value, int):
        return Tolerance(better=better)
    if unit == "1":
        return Tolerance(abs=Decimal("0.005"), better=better)
    return Tolerance(abs=Decimal("0.001"), rel=Decimal("0.005"), better=better)


def tolerance_for(
    name: str, unit: str, value: Any, override: KpiTolerance | None = None
) -> Tolerance:
    """The scenario's override of KPI ``name`` if any (fields left out: 0), else the default.

    ``override.better``: ``none`` removes the built-in direction; unset keeps it.
    """
    if override is None:
        return default_tolerance(name, unit, value)
    better: Better = better_direction(name)
    if override.better is not None:
        better = None if override.better == "none" else override.better
    return Tolerance(Decimal(str(override.abs)), Decimal(str(override.rel)), better)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1e6 else f"{value:.6g}"
    return str(value)


@dataclass(frozen=True)
class KpiCheck:
    """One KPI of one case compared: the row of the table and a JUnit testcase.

    ``baseline``/``now``: the values as in the KPI documents (None: absent); ``delta``
    = now - baseline and ``band`` the allowed ``|delta|`` (Decimal, KPI unit; None when
    not numeric); ``verdict`` one of ``ok``, ``improved``, ``new``, ``regressed``,
    ``changed``, ``missing``, ``failed``, ``error``; ``message`` says why.
    """

    scenario: str
    kpi: str
    unit: str
    baseline: Any
    now: Any
    delta: Decimal | None
    band: Decimal | None
    tolerance: str
    better: Better
    verdict: Verdict
    message: str = ""

    @property
    def failing(self) -> bool:
        """Whether this check makes the run fail."""
        return self.verdict in FAILING

    @property
    def baseline_text(self) -> str:
        """The baseline value for a table."""
        return _text(self.baseline)

    @property
    def now_text(self) -> str:
        """The current value for a table."""
        return _text(self.now)

    @property
    def delta_text(self) -> str:
        """``+1.25`` style delta (and the relative change when the baseline is not 0)."""
        if self.delta is None:
            return ""
        text = f"{self.delta:+.6g}" if self.delta else "0"
        base = _number(self.baseline)
        if self.delta and base:
            text += f" ({self.delta / abs(base) * 100:+.2f} %)"
        return text


def compare_kpi(
    scenario: str,
    name: str,
    baseline: Mapping[str, Any] | None,
    now: Mapping[str, Any] | None,
    override: KpiTolerance | None = None,
) -> KpiCheck:
    """Compare one KPI (``{"value": ..., "unit": ...}`` each; None: absent).

    Numeric values (int, float, decimal strings) are compared in Decimal against the
    band of :func:`tolerance_for`; other values must be equal. A unit that changed is
    ``changed``. Rules: module docstring.
    """
    ref = baseline if baseline is not None else now
    assert ref is not None, "a KPI present in neither document"
    unit = str(ref.get("unit", ""))
    tol = tolerance_for(name, unit, ref.get("value"), override)
    b_val = None if baseline is None else baseline.get("value")
    n_val = None if now is None else now.get("value")

    def check(verdict: Verdict, message: str = "", delta: Decimal | None = None,
              band: Decimal | None = None) -> KpiCheck:
        return KpiCheck(scenario, name, unit, b_val, n_val, delta, band, tol.describe(),
                        tol.better, verdict, message)

    if baseline is None:
        return check("new", "not in the baseline")
    if now is None:
        return check("missing", "in the baseline, not in this run")
    if str(now.get("unit", "")) != unit:
        return check("changed", f"unit changed from {unit!r} to {now.get('unit')!r}")
    b, n = _number(b_val), _number(n_val)
    if b is None or n is None:
        if b_val == n_val:
            return check("ok")
        return check("changed", "value changed")
    delta = n - b
    band = tol.band(b)
    if abs(delta) <= band:
        return check("ok", delta=delta, band=band)
    beyond = f"|delta| {abs(delta):.6g} > {band:.6g}"
    if tol.better is None:
        return check("changed", f"{beyond}; no better direction", delta, band)
    better = delta < 0 if tol.better == "lower" else delta > 0
    if better:
        return check("improved", f"{beyond}, {tol.better} is better", delta, band)
    return check("regressed", f"{beyond}, {tol.better} is better", delta, band)


def compare_kpis(
    scenario: str,
    baseline: Mapping[str, Mapping[str, Any]],
    now: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, KpiTolerance] | None = None,
) -> list[KpiCheck]:
    """Every KPI of either section compared (baseline order, then new KPIs, sorted).

    ``baseline``/``now``: KPI name -> ``{"value", "unit"}`` (the ``kpis`` section).
    """
    overrides = overrides or {}
    names = list(baseline) + sorted(set(now) - set(baseline))
    return [compare_kpi(scenario, k, baseline.get(k), now.get(k), overrides.get(k))
            for k in names]


# --- discovery ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A regression case: scenario ``name`` in the YAML file ``path``; ``fast``: CI subset."""

    name: str
    path: Path
    fast: bool


def discover(root: Path) -> list[Case]:
    """Every scenario under ``root`` (recursive ``*.yaml``) with ``regression`` set.

    Reads only the top-level keys (``regression``, ``name``; the name defaults to the
    file stem); validation happens when the case runs. Files that are not a mapping, or
    not YAML, are not cases. Sorted by name.

    Raises:
        RegressError: two cases with the same name (they would share a baseline).
    """
    cases: dict[str, Case] = {}
    for path in sorted(root.rglob("*.yaml")):
        try:
            data = read_yaml(path)
        except ScenarioError:
            continue
        if not isinstance(data, dict):
            continue
        flag = data.get("regression", False)
        if flag not in (True, "fast"):
            continue
        name = str(data.get("name") or path.stem)
        if name in cases:
            raise RegressError(f"two regression scenarios named {name!r}: "
                               f"{cases[name].path} and {path}")
        cases[name] = Case(name, path, flag == "fast")
    return [cases[k] for k in sorted(cases)]


def select(cases: Sequence[Case], only: Sequence[str] = (), fast: bool = False) -> list[Case]:
    """The cases to run: ``only`` (names or file stems; all when empty), ``fast`` subset.

    Raises:
        RegressError: a name in ``only`` matches no case.
    """
    chosen = [c for c in cases if not fast or c.fast]
    if only:
        unknown = [o for o in only if not any(o in (c.name, c.path.stem) for c in cases)]
        if unknown:
            raise RegressError(f"no regression scenario named {', '.join(unknown)}; "
                               f"known: {', '.join(c.name for c in cases)}")
        chosen = [c for c in chosen if c.name in only or c.path.stem in only]
    return chosen


# --- results --------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case run and compared.

    ``kpis``: the run's KPI document (None when it did not run); ``error``: why it did
    not run or has no baseline; ``assertion_failures``: the scenario's failed KPI
    assertions; ``run_time_s``: wall time of the run [s]; ``cpu_time_s``: CPU time of
    the process over the run [s] (what the run costs on an idle core).
    """

    case: Case
    run_dir: Path | None = None
    kpis: dict[str, Any] | None = None
    error: str | None = None
    assertion_failures: list[str] = field(default_factory=list)
    checks: list[KpiCheck] = field(default_factory=list)
    run_time_s: float = 0.0
    cpu_time_s: float = 0.0

    @property
    def failed(self) -> bool:
        """Whether the case fails the regression run."""
        return (self.error is not None or bool(self.assertion_failures)
                or any(c.failing for c in self.checks))

    @property
    def verdict(self) -> str:
        """``error``, ``failed``, ``improved`` or ``ok`` for the case as a whole."""
        if self.error is not None:
            return "error"
        if self.failed:
            return "failed"
        if any(c.verdict == "improved" for c in self.checks):
            return "improved"
        return "ok"


# --- baselines ------------------------------------------------------------------------


def baseline_path(baselines: Path, name: str) -> Path:
    """``<baselines>/<scenario name>.json``."""
    return baselines / f"{name}.json"


def load_baseline(path: Path) -> dict[str, Any] | None:
    """The baseline document at ``path``; None when there is no file.

    Raises:
        RegressError: the file is not JSON or has no ``kpis`` mapping.
    """
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RegressError(f"{path}: cannot read baseline ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kpis"), dict):
        raise RegressError(f"{path}: a baseline needs a 'kpis' mapping")
    return doc


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance(reason: str, now: datetime, repo: Path | None = None) -> dict[str, Any]:
    """Who changed baselines, when, why: reason, UTC date, git commit and dirty flag.

    ``commit``/``dirty`` are None when ``repo`` is not a git work tree (read-only git
    commands: ``rev-parse``, ``status``).
    """
    commit = dirty = None
    if repo is not None:
        commit = _git(repo, "rev-parse", "HEAD") or None
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None or commit is None else bool(status)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {
        "reason": reason,
        "date": now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "commit": commit,
        "dirty": dirty,
        "user": user,
        "host": socket.gethostname(),
    }


def baseline_doc(
    result: CaseResult, updated: dict[str, Any], previous: dict[str, Any] | None,
    root: Path | None = None,
) -> dict[str, Any]:
    """The new baseline of a case that ran (its ``kpis`` section), keeping the history.

    ``root``: the ``scenario_file`` is written relative to it when below it.
    """
    assert result.kpis is not None
    path = result.case.path
    if root is not None:
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            pass
    history: list[dict[str, Any]] = []
    if previous is not None:
        history = [previous["updated"], *previous.get("history", [])] if "updated" in previous \
            else list(previous.get("history", []))
    return {
        "scenario": result.case.name,
        "scenario_file": path.as_posix(),
        "seed": result.kpis.get("seed"),
        "kpis": result.kpis["kpis"],
        "run_time_s": round(result.run_time_s, 1),
        "cpu_time_s": round(result.cpu_time_s, 1),
        "updated": updated,
        "history": history,
    }


def write_baseline(path: Path, doc: dict[str, Any]) -> None:
    """Write a baseline document (sorted KPI keys, two-space indent, final newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")


CHANGELOG_HEADER = """# Baseline changelog

Append-only record of every `migrid regress --update`: why the golden KPIs of the
regression scenarios changed, when, by whom, at which commit. Newest at the bottom.
"""


def changelog_entry(
    updated: dict[str, Any],
    changes: Sequence[tuple[str, dict[str, Any] | None, dict[str, Any]]],
) -> str:
    """A Markdown section for one update.

    ``changes``: (scenario, previous ``kpis`` or None, new ``kpis``) per baseline
    written; lists each KPI whose value changed (``old -> new``).
    """
    commit = updated.get("commit")
    where = f"commit {commit[:12]}" if commit else "no git commit"
    if updated.get("dirty"):
        where += " (uncommitted changes)"
    lines = [f"\n## {updated['date']}: {updated['reason']}", "",
             f"By {updated['user']}@{updated['host']}, {where}.", ""]
    for name, old, new in changes:
        if old is None:
            lines.append(f"- `{name}`: new baseline ({len(new)} KPIs)")
            continue
        moved = [(k, old.get(k, {}).get("value"), new.get(k, {}).get("value"))
                 for k in sorted(set(old) | set(new))
                 if old.get(k, {}).get("value") != new.get(k, {}).get("value")]
        if not moved:
            lines.append(f"- `{name}`: unchanged")
            continue
        lines.append(f"- `{name}`: " + ", ".join(
            f"{k} {_text(a) or '(none)'} → {_text(b) or '(none)'}" for k, a, b in moved))
    return "\n".join(lines) + "\n"


def append_changelog(path: Path, entry: str) -> None:
    """Append ``entry`` to the changelog at ``path`` (created with its header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(CHANGELOG_HEADER, encoding="utf-8")
    with path.open("a", encoding="utf-8") as f:
        f.write(entry)


# --- reports --------------------------------------------------------------------------


def _row_text(c: KpiCheck) -> str:
    return (f"{c.kpi}: baseline {c.baseline_text} {c.unit}, now {c.now_text} {c.unit}, "
            f"delta {c.delta_text or 'n/a'}, tolerance {c.tolerance}: {c.verdict}"
            + (f" ({c.message})" if c.message else ""))


def junit_xml(results: Iterable[CaseResult], suite_name: str = "migrid-regress") -> str:
    """JUnit XML of a regression run.

    One testsuite per scenario, one testcase per KPI (``classname`` the scenario), plus
    ``run`` (an ``error`` when the case did not run or has no baseline)
    and ``assertions`` (a ``failure`` when a scenario assertion failed). ``regressed``,
    ``changed`` and ``missing`` KPIs are ``failure`` elements; ``improved`` and ``new``
    pass with a ``system-out`` note. Times in seconds (the run's, on ``run``).
    """
    top = ET.Element("testsuites", name=suite_name)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for r in results:
        suite = ET.SubElement(top, "testsuite", name=r.case.name,
                              file=r.case.path.as_posix(), time=f"{r.run_time_s:.3f}")
        counts = {"tests": 0, "failures": 0, "errors": 0}
        run_case = ET.SubElement(suite, "testcase", classname=r.case.name, name="run",
                                 time=f"{r.run_time_s:.3f}")
        counts["tests"] += 1
        if r.error is not None:
            ET.SubElement(run_case, "error", message=r.error.splitlines()[0][:500]).text = r.error
            counts["errors"] += 1
        elif r.run_dir is not None:
            ET.SubElement(run_case, "system-out").text = f"run folder: {r.run_dir}"
        if r.kpis is not None:
            a_case = ET.SubElement(suite, "testcase", classname=r.case.name,
                                   name="assertions", time="0")
            counts["tests"] += 1
            if r.assertion_failures:
                ET.SubElement(a_case, "failure", message="; ".join(r.assertion_failures),
                              type="assertion").text = "\n".join(r.assertion_failures)
                counts["failures"] += 1
        for c in r.checks:
            tc = ET.SubElement(suite, "testcase", classname=r.case.name, name=c.kpi, time="0")
            counts["tests"] += 1
            if c.failing:
                ET.SubElement(tc, "failure", message=_row_text(c), type=c.verdict).text = \
                    _row_text(c)
                counts["failures"] += 1
            elif c.verdict in ("improved", "new"):
                ET.SubElement(tc, "system-out").text = _row_text(c)
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        total_time += r.run_time_s
    for k, v in totals.items():
        top.set(k, str(v))
    top.set("time", f"{total_time:.3f}")
    ET.indent(top)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(top, encoding="unicode") \
        + "\n"


_MARK = {"ok": "✅ ok", "improved": "⬆️ improved", "new": "🆕 new", "regressed": "❌ regressed",
         "changed": "❌ changed", "missing": "❌ missing", "failed": "❌ failed",
         "error": "💥 error"}


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_report(
    results: Sequence[CaseResult], title: str = "migrid regress", all_rows: bool = True,
    meta: Mapping[str, str] | None = None,
) -> str:
    """The Markdown report: a summary per scenario, then one table per scenario.

    ``all_rows``: every KPI (else only those not ``ok``); ``meta``: extra ``key: value``
    lines under the title (date, commit, mode).
    """
    failed = [r for r in results if r.failed]
    lines = [f"# {title}", ""]
    for k, v in (meta or {}).items():
        lines.append(f"- {k}: {v}")
    lines += [f"- result: **{'FAILED' if failed else 'passed'}** "
              f"({len(results) - len(failed)} of {len(results)} scenarios pass)", "",
              "| scenario | verdict | run time [s] | CPU [s] | KPIs ok | improved | failing |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        n_ok = sum(c.verdict in ("ok", "new") for c in r.checks)
        n_up = sum(c.verdict == "improved" for c in r.checks)
        n_bad = sum(c.failing for c in r.checks) + bool(r.assertion_failures)
        lines.append(f"| {r.case.name} | {_MARK.get(r.verdict, r.verdict)} | "
                     f"{r.run_time_s:.1f} | {r.cpu_time_s:.1f} | {n_ok} | {n_up} | {n_bad} |")
    for r in results:
        lines += ["", f"## {r.case.name}", "", f"Scenario file: `{r.case.path.as_posix()}`"
                  + (f"; run folder: `{r.run_dir}`" if r.run_dir else "")]
        if r.error is not None:
            lines += ["", "```", r.error.strip(), "```"]
        for a in r.assertion_failures:
            lines += ["", f"- ❌ assertion failed: {_md(a)}"]
        rows = [c for c in r.checks if all_rows or c.verdict != "ok"]
        if rows:
            lines += ["", "| KPI | unit | baseline | now | delta | tolerance | better | verdict |",
                      "|---|---|---:|---:|---:|---|---|---|"]
            for c in rows:
                verdict = _MARK.get(c.verdict, c.verdict)
                if c.message and c.verdict != "ok":
                    verdict += f" ({_md(c.message)})"
                lines.append(f"| {c.kpi} | {c.unit} | {c.baseline_text} | {c.now_text} | "
                             f"{c.delta_text} | {c.tolerance} | {c.better or ''} | {verdict} |")
    return "\n".join(lines) + "\n"
