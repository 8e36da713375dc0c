"""The depot schedule as a linear program, solved by HiGHS through ``highspy``.

One :class:`DepotProblem` is a horizon of ``n`` intervals of length ``interval`` starting
at ``start`` (UTC): the flexible assets (EV sessions, a BESS) as :class:`AssetSpec`, the
site's non-EV load and PV forecasts, import and export limits, import and export prices,
and a demand charge. :func:`solve` builds the LP with sparse matrices (column-wise, no
dense matrix ever), hands it to HiGHS and returns a :class:`Schedule`. The formulation
(variables, constraints, objective) is written out in ``controllers/market/README.md``.

Sign conventions (DESIGN.md): asset power is positive when charging, site power positive
when importing. ``import_kw`` and ``export_kw`` are both >= 0; the net site power is their
difference. Floats inside the LP are fine; money leaves this module as ``Decimal``
(:func:`cost_breakdown`).

Sources: Q. Huangfu, J. A. J. Hall, "Parallelizing the dual revised simplex method",
Math. Prog. Comp. 10 (2018) 119-142 (HiGHS); HiGHS documentation, highs.dev.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

INF = math.inf
#: money of an estimate (LP objective terms) is quantised to 1e-6 of the currency unit
ESTIMATE_QUANTUM = Decimal("0.000001")


class MarketError(ValueError):
    """A market problem is malformed (shape, sign, bound, time zone); the message names it."""


class InfeasibleError(RuntimeError):
    """HiGHS found no schedule satisfying the hard constraints (``status`` says why)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"depot LP not solved to optimality: {status}")
        self.status = status


def _vec(value: Any, n: int, name: str) -> FloatArray:
    """``value`` (scalar or sequence) as a float array of shape (n,); MarketError otherwise."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise MarketError(f"{name}: shape {arr.shape}, expected ({n},)")
    if np.isnan(arr).any():
        raise MarketError(f"{name}: NaN")
    return arr


#: phase shares of a three-phase (balanced) load
BALANCED: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)


@dataclass(frozen=True)
class EnergyTarget:
    """Stored energy wanted at a boundary: ``e[index] >= energy_kwh`` (departure energy).

    ``index`` is a boundary 0..n of the asset's horizon (the end of interval ``index-1``,
    e.g. the departure). Soft unless the problem says ``hard_targets``: what is missing is
    the shortfall [kWh], priced at ``DepotProblem.shortfall_penalty_per_kwh``.
    """

    index: int
    energy_kwh: float


@dataclass(frozen=True, eq=False)
class ChargeTaper:
    """Charge power bound linear in the stored energy at the interval start (CC-CV taper).

    ``charge[k] <= scale[k] * (intercept_kw - slope_kw_per_kwh * e[k])`` for every interval
    with ``scale[k] > 0``. For the two-stage battery of :mod:`devices.vehicle` (ACN-Sim's
    ``Linear2StageBattery``: ``P_lim = P_max (1 - k (soc - knee))`` above the knee), the
    mean power over an interval of ``T`` started on the taper at ``e[k]`` is exactly
    ``P_max * alpha * g(e[k])`` with ``alpha = (1 - exp(-k r T)) / (k r T)``, ``r`` the soc
    rate at ``P_max``: a linear row, so the LP plans what the vehicle will take.
    ``scale`` (shape (n,)) is the share of each interval the vehicle is present.
    """

    intercept_kw: float
    slope_kw_per_kwh: float
    scale: FloatArray


@dataclass(frozen=True, eq=False)
class AssetSpec:
    """One flexible asset over the horizon: an EV session, a BESS (all arrays float64).

    * ``p_min_kw``, ``p_max_kw``: shape (n,), bounds of the net power ``charge -
      discharge`` [kW, + = charging]; ``p_min_kw < 0`` only with V2G / a BESS. Zero both
      while an EV is absent.
    * ``e_min_kwh``, ``e_max_kwh``: shape (n+1,), hard bounds of the stored energy at each
      boundary [kWh] (an EV's 0..capacity, a BESS's 20 %..max SoC times capacity, or the
      envelope's cumulative bounds). ``e_min_kwh[0] <= e0_kwh <= e_max_kwh[0]``.
    * ``e0_kwh``: stored energy at the start [kWh].
    * ``eta_charge``, ``eta_discharge``: (0, 1]; ``e[k+1] = e[k] + (eta_charge * charge -
      discharge / eta_discharge) * dt_h``.
    * ``degradation_cost_per_kwh``: cost of throughput ``(charge + discharge) * dt_h``
      [currency/kWh, AC side], for batteries (0 for an EV without V2G).
    * ``targets``: soft (or hard) departure energies, :class:`EnergyTarget`.
    * ``terminal_value_per_kwh``: value of energy left at the end [currency/kWh], 0 by
      default (a rolling horizon may value the BESS's end state).
    * ``phase_share``: the share of the asset's net power on site phases L1, L2, L3
      (non-negative, sum 1): :data:`BALANCED` for a three-phase load (the default, also a
      DC charger or a three-phase inverter), ``(1, 0, 0)`` for a single-phase vehicle on
      an EVSE whose L1 is wired to the site's L1 (OCPP ``PhaseRotation`` RST). When any
      asset is unbalanced, the LP adds one import-limit row per phase and interval
      (README, "Per-phase limit").
    * ``taper``: optional :class:`ChargeTaper`, a charge bound linear in the stored energy.
    """

    asset_id: str
    p_min_kw: FloatArray
    p_max_kw: FloatArray
    e_min_kwh: FloatArray
    e_max_kwh: FloatArray
    e0_kwh: float = 0.0
    eta_charge: float = 1.0
    eta_discharge: float = 1.0
    degradation_cost_per_kwh: float = 0.0
    targets: tuple[EnergyTarget, ...] = ()
    terminal_value_per_kwh: float = 0.0
    phase_share: tuple[float, float, float] = BALANCED
    taper: ChargeTaper | None = None

    @property
    def balanced(self) -> bool:
        """True when the asset loads the three phases equally."""
        return all(abs(w - 1 / 3) < 1e-12 for w in self.phase_share)

    @property
    def n(self) -> int:
        """Number of intervals."""
        return int(np.asarray(self.p_min_kw).shape[0])

    def validated(self, n: int) -> AssetSpec:
        """The spec with its arrays as float64 of the right shapes; MarketError otherwise."""
        name = f"asset {self.asset_id!r}"
        p_min = _vec(self.p_min_kw, n, f"{name}.p_min_kw")
        p_max = _vec(self.p_max_kw, n, f"{name}.p_max_kw")
        e_min = _vec(self.e_min_kwh, n + 1, f"{name}.e_min_kwh")
        e_max = _vec(self.e_max_kwh, n + 1, f"{name}.e_max_kwh")
        if (p_min > p_max).any():
            raise MarketError(f"{name}: p_min_kw > p_max_kw at {np.flatnonzero(p_min > p_max)}")
        if (e_min > e_max).any():
            raise MarketError(f"{name}: e_min_kwh > e_max_kwh at {np.flatnonzero(e_min > e_max)}")
        if not e_min[0] - 1e-9 <= self.e0_kwh <= e_max[0] + 1e-9:
            raise MarketError(f"{name}: e0_kwh {self.e0_kwh} outside [{e_min[0]}, {e_max[0]}]")
        for eta, label in ((self.eta_charge, "eta_charge"), (self.eta_discharge, "eta_discharge")):
            if not 0.0 < eta <= 1.0:
                raise MarketError(f"{name}.{label}: {eta} not in (0, 1]")
        if self.degradation_cost_per_kwh < 0:
            raise MarketError(f"{name}.degradation_cost_per_kwh: negative")
        for t in self.targets:
            if not 0 <= t.index <= n:
                raise MarketError(f"{name}: target index {t.index} not in 0..{n}")
        taper = self.taper
        if taper is not None:
            if not (math.isfinite(taper.intercept_kw) and math.isfinite(taper.slope_kw_per_kwh)
                    and taper.slope_kw_per_kwh >= 0):
                raise MarketError(f"{name}.taper: intercept and slope must be finite, "
                                  "slope >= 0")
            scale = _vec(taper.scale, n, f"{name}.taper.scale")
            if (scale < 0).any():
                raise MarketError(f"{name}.taper.scale: negative")
            taper = replace(taper, scale=scale)
        w = tuple(float(x) for x in self.phase_share)
        if len(w) != 3 or min(w) < 0 or abs(sum(w) - 1.0) > 1e-9:
            raise MarketError(f"{name}.phase_share: {self.phase_share} is not 3 shares >= 0 "
                              "summing to 1")
        return replace(self, p_min_kw=p_min, p_max_kw=p_max, e_min_kwh=e_min, e_max_kwh=e_max,
                       taper=taper)


@dataclass(frozen=True, eq=False)
class DepotProblem:
    """The depot over one horizon: what :func:`solve` optimises.

    Arrays have shape (n,) (a scalar is broadcast); power in kW, prices in currency/MWh.

    * ``price_import_per_mwh`` >= ``price_export_per_mwh`` in every interval (a single
      meter cannot import and export at once; with the opposite the LP would circulate
      power through the meter for profit): MarketError otherwise.
    * ``base_load_kw``: non-EV load forecast (>= 0); ``pv_kw``: PV forecast (>= 0),
      curtailable down to 0 when ``pv_curtailable``.
    * ``import_limit_kw``, ``export_limit_kw``: site limits (>= 0; ``inf`` for none).
    * ``demand_charge_per_kw``: currency per kW of the billing period's peak import;
      ``peak_so_far_kw``: that peak before ``start`` (the rolling horizon carries it): only
      a peak above it costs.
    * ``shortfall_penalty_per_kwh``: price of a missing kWh of a soft target (default 5.0
      per kWh = 5000 per MWh, above any day-ahead price); ``hard_targets``: no shortfall.
    """

    start: datetime
    interval: timedelta
    assets: tuple[AssetSpec, ...]
    price_import_per_mwh: FloatArray
    price_export_per_mwh: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_limit_kw: FloatArray
    export_limit_kw: FloatArray
    demand_charge_per_kw: float = 0.0
    peak_so_far_kw: float = 0.0
    shortfall_penalty_per_kwh: float = 5.0
    hard_targets: bool = False
    pv_curtailable: bool = True
    currency: str = "EUR"
    _n: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise MarketError("start: must be a UTC datetime")
        if self.interval <= timedelta(0):
            raise MarketError("interval: must be positive")
        n = int(np.asarray(self.price_import_per_mwh).size)
        if n == 0:
            raise MarketError("price_import_per_mwh: empty horizon")
        object.__setattr__(self, "_n", n)
        for name in (
            "price_import_per_mwh",
            "price_export_per_mwh",
            "base_load_kw",
            "pv_kw",
            "import_limit_kw",
            "export_limit_kw",
        ):
            object.__setattr__(self, name, _vec(getattr(self, name), n, name))
        if (self.price_import_per_mwh < self.price_export_per_mwh - 1e-9).any():
            raise MarketError("price_import_per_mwh < price_export_per_mwh in some interval")
        for name in ("base_load_kw", "pv_kw", "import_limit_kw", "export_limit_kw"):
            if (getattr(self, name) < 0).any():
                raise MarketError(f"{name}: negative")
        if self.demand_charge_per_kw < 0 or self.peak_so_far_kw < 0:
            raise MarketError("demand_charge_per_kw and peak_so_far_kw must be >= 0")
        ids = [a.asset_id for a in self.assets]
        if len(set(ids)) != len(ids):
            raise MarketError("asset ids must be unique")
        object.__setattr__(self, "assets", tuple(a.validated(n) for a in self.assets))

    @property
    def n(self) -> int:
        """Number of intervals."""
        return self._n

    @property
    def per_phase(self) -> bool:
        """True when some asset is unbalanced: the LP then limits each phase's import."""
        return any(not a.balanced for a in self.assets)

    @property
    def dt_h(self) -> float:
        """Interval length [h]."""
        return self.interval.total_seconds() / 3600.0

    def interval_start(self, k: int) -> datetime:
        """Start of interval ``k`` (UTC)."""
        return self.start + k * self.interval


@dataclass(frozen=True)
class ModelSize:
    """Size of the LP handed to HiGHS (before its presolve)."""

    rows: int
    cols: int
    nonzeros: int


@dataclass(frozen=True, eq=False)
class Schedule:
    """An optimal (or applied) depot schedule; arrays in kW / kWh, assets in problem order.

    ``charge_kw``, ``discharge_kw``: (A, n) >= 0; ``energy_kwh``: (A, n+1) stored energy at
    the boundaries; ``import_kw``, ``export_kw``, ``curtail_kw`` (PV curtailed): (n,) >= 0;
    ``shortfall_kwh``: per asset, per target (in ``targets`` order) [kWh];
    ``peak_kw``: ``max(peak_so_far_kw, max(import_kw))``; ``objective``: the LP's
    objective [currency] (float, an estimate; see :func:`cost_breakdown`).
    """

    start: datetime
    interval: timedelta
    asset_ids: tuple[str, ...]
    charge_kw: FloatArray
    discharge_kw: FloatArray
    energy_kwh: FloatArray
    import_kw: FloatArray
    export_kw: FloatArray
    curtail_kw: FloatArray
    shortfall_kwh: tuple[tuple[float, ...], ...]
    peak_kw: float
    objective: float
    status: str = "Optimal"
    solve_time_s: float = 0.0
    size: ModelSize = ModelSize(0, 0, 0)

    @property
    def net_kw(self) -> FloatArray:
        """Net asset power (A, n) [kW, + = charging]."""
        out: FloatArray = self.charge_kw - self.discharge_kw
        return out

    @property
    def site_kw(self) -> FloatArray:
        """Net site power (n,) [kW, + = import]."""
        out: FloatArray = self.import_kw - self.export_kw
        return out

    @property
    def unmet_kwh(self) -> dict[str, float]:
        """Total departure-energy shortfall per asset [kWh] (only assets with one > 1e-6)."""
        return {
            a: float(sum(s))
            for a, s in zip(self.asset_ids, self.shortfall_kwh, strict=True)
            if sum(s) > 1e-6
        }


@dataclass(frozen=True)
class _Layout:
    """Column indices of the LP (see README): per asset a block, then the site."""

    n: int
    asset_offsets: IntArray  # (A,) first column of each asset block (3n+1 columns)
    target_cols: tuple[tuple[int, ...], ...]
    imp: int  # first of n import columns
    exp: int
    curt: int
    peak: int
    ncol: int

    def charge(self, a: int) -> int:
        return int(self.asset_offsets[a])

    def discharge(self, a: int) -> int:
        return int(self.asset_offsets[a]) + self.n

    def energy(self, a: int) -> int:
        return int(self.asset_offsets[a]) + 2 * self.n


def _layout(problem: DepotProblem) -> _Layout:
    n = problem.n
    block = 3 * n + 1
    offsets = np.arange(len(problem.assets), dtype=np.int64) * block
    col = block * len(problem.assets)
    targets: list[tuple[int, ...]] = []
    for asset in problem.assets:
        targets.append(tuple(range(col, col + len(asset.targets))))
        col += len(asset.targets)
    return _Layout(
        n, offsets, tuple(targets), col, col + n, col + 2 * n, col + 3 * n, col + 3 * n + 1
    )


@dataclass(frozen=True, eq=False)
class BuiltLp:
    """The LP in arrays (column-wise sparse matrix) plus the layout to read a solution."""

    cost: FloatArray
    col_lower: FloatArray
    col_upper: FloatArray
    row_lower: FloatArray
    row_upper: FloatArray
    matrix: sp.csc_matrix
    layout: _Layout

    @property
    def size(self) -> ModelSize:
        """Rows, columns, non-zeros."""
        return ModelSize(self.matrix.shape[0], self.matrix.shape[1], int(self.matrix.nnz))


def build(problem: DepotProblem) -> BuiltLp:
    """The LP of ``problem`` (see README for the formulation); no solve.

    Rows: per asset n energy balances (and one per target, and one per interval of
    presence with a taper); n site balances; n peak rows;
    3n per-phase limit rows when some asset is unbalanced (:attr:`DepotProblem.per_phase`).
    Power bounds are column bounds: ``charge`` in ``[max(p_min, 0), max(p_max, 0)]`` and
    ``discharge`` in ``[max(-p_max, 0), max(-p_min, 0)]``, which is exactly ``p_min <=
    charge - discharge <= p_max`` for the net power.
    """
    n, dt = problem.n, problem.dt_h
    lay = _layout(problem)
    ncol = lay.ncol
    cost = np.zeros(ncol)
    lo = np.zeros(ncol)
    hi = np.full(ncol, INF)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    row_lo: list[FloatArray] = []
    row_hi: list[FloatArray] = []
    r = 0
    k = np.arange(n, dtype=np.int64)
    for a, asset in enumerate(problem.assets):
        c0, d0, e0 = lay.charge(a), lay.discharge(a), lay.energy(a)
        lo[c0 : c0 + n] = np.maximum(asset.p_min_kw, 0.0)
        hi[c0 : c0 + n] = np.maximum(asset.p_max_kw, 0.0)
        lo[d0 : d0 + n] = np.maximum(-asset.p_max_kw, 0.0)
        hi[d0 : d0 + n] = np.maximum(-asset.p_min_kw, 0.0)
        lo[e0 : e0 + n + 1] = asset.e_min_kwh
        hi[e0 : e0 + n + 1] = asset.e_max_kwh
        lo[e0] = hi[e0] = asset.e0_kwh
        deg = asset.degradation_cost_per_kwh * dt
        cost[c0 : c0 + n] = deg
        cost[d0 : d0 + n] = deg
        cost[e0 + n] = -asset.terminal_value_per_kwh
        # e[k+1] - e[k] - eta_c dt c[k] + dt/eta_d d[k] = 0
        rr = r + k
        rows += [rr, rr, rr, rr]
        cols += [e0 + k + 1, e0 + k, c0 + k, d0 + k]
        vals += [
            np.ones(n),
            -np.ones(n),
            np.full(n, -asset.eta_charge * dt),
            np.full(n, dt / asset.eta_discharge),
        ]
        row_lo.append(np.zeros(n))
        row_hi.append(np.zeros(n))
        r += n
        # e[index] + shortfall >= energy
        for target, s_col in zip(asset.targets, lay.target_cols[a], strict=True):
            rows += [np.array([r, r])]
            cols += [np.array([e0 + target.index, s_col])]
            vals += [np.array([1.0, 1.0])]
            row_lo.append(np.array([target.energy_kwh]))
            row_hi.append(np.array([INF]))
            cost[s_col] = problem.shortfall_penalty_per_kwh
            hi[s_col] = 0.0 if problem.hard_targets else max(target.energy_kwh, 0.0)
            r += 1
        if asset.taper is not None:
            # c[k] + scale b e[k] <= scale a  (intervals with scale > 0)
            kt = np.flatnonzero(asset.taper.scale > 0.0)
            sc = asset.taper.scale[kt]
            rr = r + np.arange(kt.size, dtype=np.int64)
            rows += [rr, rr]
            cols += [c0 + kt, e0 + kt]
            vals += [np.ones(kt.size), sc * asset.taper.slope_kw_per_kwh]
            row_lo.append(np.full(kt.size, -INF))
            row_hi.append(sc * asset.taper.intercept_kw)
            r += kt.size
    # site balance: imp - exp - curt - sum(c - d) = base - pv  (pv - curt is the PV used)
    rr = r + k
    rows += [rr, rr, rr]
    cols += [lay.imp + k, lay.exp + k, lay.curt + k]
    vals += [np.ones(n), -np.ones(n), -np.ones(n)]
    for a in range(len(problem.assets)):
        rows += [rr, rr]
        cols += [lay.charge(a) + k, lay.discharge(a) + k]
        vals += [-np.ones(n), np.ones(n)]
    net = problem.base_load_kw - problem.pv_kw
    row_lo.append(net)
    row_hi.append(net)
    r += n
    # peak >= imp[k]
    rr = r + k
    rows += [rr, rr]
    cols += [np.full(n, lay.peak, dtype=np.int64), lay.imp + k]
    vals += [np.ones(n), -np.ones(n)]
    row_lo.append(np.zeros(n))
    row_hi.append(np.full(n, INF))
    r += n
    if problem.per_phase:
        # per phase p: sum_a w[a,p] (c - d) + curt/3 <= (import limit - base + pv) / 3
        cap = (problem.import_limit_kw - problem.base_load_kw + problem.pv_kw) / 3.0
        for p in range(3):
            rr = r + k
            for a, asset in enumerate(problem.assets):
                w = asset.phase_share[p]
                if w > 0.0:
                    rows += [rr, rr]
                    cols += [lay.charge(a) + k, lay.discharge(a) + k]
                    vals += [np.full(n, w), np.full(n, -w)]
            rows += [rr]
            cols += [lay.curt + k]
            vals += [np.full(n, 1.0 / 3.0)]
            row_lo.append(np.full(n, -INF))
            row_hi.append(cap)
            r += n
    # site columns
    hi[lay.imp : lay.imp + n] = problem.import_limit_kw
    hi[lay.exp : lay.exp + n] = problem.export_limit_kw
    hi[lay.curt : lay.curt + n] = problem.pv_kw if problem.pv_curtailable else 0.0
    lo[lay.peak] = problem.peak_so_far_kw
    cost[lay.imp : lay.imp + n] = problem.price_import_per_mwh / 1000.0 * dt
    cost[lay.exp : lay.exp + n] = -problem.price_export_per_mwh / 1000.0 * dt
    cost[lay.peak] = problem.demand_charge_per_kw
    matrix = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, ncol)
    )
    matrix.sum_duplicates()
    return BuiltLp(cost, lo, hi, np.concatenate(row_lo), np.concatenate(row_hi), matrix, lay)


def highs_model(lp: BuiltLp) -> highspy.Highs:
    """A silent ``highspy.Highs`` holding ``lp`` (dual simplex, one thread), not yet run."""
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    model = highspy.HighsLp()
    model.num_col_ = lp.matrix.shape[1]
    model.num_row_ = lp.matrix.shape[0]
    model.col_cost_ = lp.cost
    model.col_lower_ = lp.col_lower
    model.col_upper_ = lp.col_upper
    model.row_lower_ = lp.row_lower
    model.row_upper_ = lp.row_upper
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = lp.matrix.indptr
    model.a_matrix_.index_ = lp.matrix.indices
    model.a_matrix_.value_ = lp.matrix.data
    h.passModel(model)
    return h


def run(h: highspy.Highs) -> FloatArray:
    """Run HiGHS; the primal column values; InfeasibleError unless optimal."""
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise InfeasibleError(h.modelStatusToString(status))
    return np.asarray(h.getSolution().col_value, dtype=np.float64)


def read_schedule(
    problem: DepotProblem, lp: BuiltLp, x: FloatArray, objective: float, solve_time_s: float
) -> Schedule:
    """The :class:`Schedule` in a solution vector ``x`` of ``lp``."""
    lay, n = lp.layout, problem.n
    n_assets = len(problem.assets)
    charge = np.zeros((n_assets, n))
    discharge = np.zeros((n_assets, n))
    energy = np.zeros((n_assets, n + 1))
    for a in range(n_assets):
        charge[a] = x[lay.charge(a) : lay.charge(a) + n]
        discharge[a] = x[lay.discharge(a) : lay.discharge(a) + n]
        energy[a] = x[lay.energy(a) : lay.energy(a) + n + 1]
    imp = np.maximum(x[lay.imp : lay.imp + n], 0.0)
    return Schedule(
        start=problem.start,
        interval=problem.interval,
        asset_ids=tuple(a.asset_id for a in problem.assets),
        charge_kw=np.maximum(charge, 0.0),
        discharge_kw=np.maximum(discharge, 0.0),
        energy_kwh=energy,
        import_kw=imp,
        export_kw=np.maximum(x[lay.exp : lay.exp + n], 0.0),
        curtail_kw=np.maximum(x[lay.curt : lay.curt + n], 0.0),
        shortfall_kwh=tuple(tuple(max(float(x[c]), 0.0) for c in cs) for cs in lay.target_cols),
        peak_kw=max(problem.peak_so_far_kw, float(imp.max(initial=0.0))),
        objective=objective,
        solve_time_s=solve_time_s,
        size=lp.size,
    )


def solve(problem: DepotProblem, *, perf_counter: Callable[[], float] | None = None) -> Schedule:
    """Optimal schedule of ``problem``: build, solve with HiGHS, read back.

    ``solve_time_s`` covers building and solving, timed with the injected ``perf_counter``
    (e.g. ``time.perf_counter``; controllers read no clock of their own), 0.0 without one:
    a measurement, never a control input. Raises :class:`InfeasibleError` when the hard
    constraints (power and energy bounds, site limits, hard targets) admit no schedule, and
    :class:`MarketError` (from the problem) on malformed input.
    """
    t0 = perf_counter() if perf_counter else 0.0
    lp = build(problem)
    h = highs_model(lp)
    x = run(h)
    objective = float(h.getInfo().objective_function_value)
    elapsed = perf_counter() - t0 if perf_counter else 0.0
    return read_schedule(problem, lp, x, objective, elapsed)


@dataclass(frozen=True)
class CostBreakdown:
    """Objective terms of a schedule in ``currency`` (Decimal, quantised to 1e-6).

    ``total = energy_cost - export_revenue + demand_charge + degradation +
    shortfall_penalty - terminal_value`` exactly (the parts are quantised first, the total
    is their sum). An estimate on float LP values; invoices come from
    :mod:`controllers.market.settlement`.
    """

    currency: str
    energy_cost: Decimal
    export_revenue: Decimal
    demand_charge: Decimal
    degradation: Decimal
    shortfall_penalty: Decimal
    terminal_value: Decimal
    total: Decimal


def objective_terms(problem: DepotProblem, schedule: Schedule) -> dict[str, float]:
    """The objective of ``problem`` evaluated on any ``schedule`` of its grid (floats).

    Demand charge: ``demand_charge_per_kw * max(peak_so_far, max import)`` (the constant
    part is included, unlike the LP's optimum which it equals up to solver tolerance).
    """
    dt = problem.dt_h
    energy_cost = float(problem.price_import_per_mwh @ schedule.import_kw) * dt / 1000.0
    export_revenue = float(problem.price_export_per_mwh @ schedule.export_kw) * dt / 1000.0
    peak = max(problem.peak_so_far_kw, float(schedule.import_kw.max(initial=0.0)))
    degradation = 0.0
    penalty = 0.0
    terminal = 0.0
    for a, asset in enumerate(problem.assets):
        through = float(schedule.charge_kw[a].sum() + schedule.discharge_kw[a].sum()) * dt
        degradation += asset.degradation_cost_per_kwh * through
        terminal += asset.terminal_value_per_kwh * float(schedule.energy_kwh[a, -1])
        for t in asset.targets:
            short = max(t.energy_kwh - float(schedule.energy_kwh[a, t.index]), 0.0)
            penalty += problem.shortfall_penalty_per_kwh * short
    return {
        "energy_cost": energy_cost,
        "export_revenue": export_revenue,
        "demand_charge": problem.demand_charge_per_kw * peak,
        "degradation": degradation,
        "shortfall_penalty": penalty,
        "terminal_value": terminal,
    }


def objective_value(problem: DepotProblem, schedule: Schedule) -> float:
    """Total of :func:`objective_terms` [currency, float]."""
    t = objective_terms(problem, schedule)
    return (
        t["energy_cost"]
        - t["export_revenue"]
        + t["demand_charge"]
        + t["degradation"]
        + t["shortfall_penalty"]
        - t["terminal_value"]
    )


def cost_breakdown(problem: DepotProblem, schedule: Schedule) -> CostBreakdown:
    """:func:`objective_terms` as Decimal money (each part quantised to 1e-6, ROUND_HALF_EVEN)."""
    t = {
        k: Decimal(repr(float(v))).quantize(ESTIMATE_QUANTUM)
        for k, v in objective_terms(problem, schedule).items()
    }
    total = (
        t["energy_cost"]
        - t["export_revenue"]
        + t["demand_charge"]
        + t["degradation"]
        + t["shortfall_penalty"]
        - t["terminal_value"]
    )
    return CostBreakdown(currency=problem.currency, total=total, **t)


def constraint_violations(problem: DepotProblem, schedule: Schedule) -> dict[str, float]:
    """Largest violation of each constraint family by ``schedule`` (0.0 when satisfied).

    Families: power bounds, energy bounds, energy balance, nonnegativity, site balance,
    import limit, per-phase import limit, export limit, curtailment bound, hard targets,
    charge taper.
    Used by the tests; a controller may call it before applying a schedule.
    """
    dt = problem.dt_h
    out = dict.fromkeys(
        (
            "nonnegative",
            "power_bounds",
            "energy_bounds",
            "energy_balance",
            "initial_energy",
            "site_balance",
            "import_limit",
            "phase_limit",
            "export_limit",
            "curtailment",
            "hard_targets",
            "taper",
        ),
        0.0,
    )

    def worst(key: str, v: FloatArray | float) -> None:
        out[key] = max(out[key], float(np.max(v, initial=0.0)))

    s = schedule
    for arr in (s.charge_kw, s.discharge_kw, s.import_kw, s.export_kw, s.curtail_kw):
        worst("nonnegative", -arr)
    for a, asset in enumerate(problem.assets):
        net = s.charge_kw[a] - s.discharge_kw[a]
        worst("power_bounds", asset.p_min_kw - net)
        worst("power_bounds", net - asset.p_max_kw)
        e = s.energy_kwh[a]
        worst("energy_bounds", asset.e_min_kwh - e)
        worst("energy_bounds", e - asset.e_max_kwh)
        worst("initial_energy", abs(e[0] - asset.e0_kwh))
        flow = (asset.eta_charge * s.charge_kw[a] - s.discharge_kw[a] / asset.eta_discharge) * dt
        worst("energy_balance", np.abs(np.diff(e) - flow))
        if problem.hard_targets:
            for t in asset.targets:
                worst("hard_targets", t.energy_kwh - e[t.index])
        if asset.taper is not None:
            tp = asset.taper
            worst("taper", s.charge_kw[a] - tp.scale * (tp.intercept_kw
                                                         - tp.slope_kw_per_kwh * e[:-1]))
    lhs = s.import_kw - s.export_kw - s.curtail_kw - s.net_kw.sum(axis=0)
    worst("site_balance", np.abs(lhs - (problem.base_load_kw - problem.pv_kw)))
    worst("import_limit", s.import_kw - problem.import_limit_kw)
    if problem.per_phase:
        share = np.array([a.phase_share for a in problem.assets]).reshape(-1, 3)  # (A, 3)
        phase_kw = share.T @ s.net_kw.reshape(-1, problem.n)  # (3, n)
        site = (problem.base_load_kw - problem.pv_kw + s.curtail_kw) / 3.0
        worst("phase_limit", phase_kw + site - problem.import_limit_kw / 3.0)
    worst("export_limit", s.export_kw - problem.export_limit_kw)
    pv_cap = problem.pv_kw if problem.pv_curtailable else np.zeros(problem.n)
    worst("curtailment", s.curtail_kw - pv_cap)
    return out


def flat(n: int, value: float) -> FloatArray:
    """``np.full(n, value)`` as float64 (for building problems)."""
    return np.full(n, float(value), dtype=np.float64)


def window(
    problem: DepotProblem,
    k0: int,
    k1: int,
    e0_kwh: Sequence[float] | FloatArray,
    *,
    peak_so_far_kw: float,
    price_import_per_mwh: FloatArray | None = None,
    price_export_per_mwh: FloatArray | None = None,
) -> DepotProblem:
    """The sub-problem of intervals ``k0..k1-1`` from the stored energies ``e0_kwh``.

    Targets at boundaries ``k0 < index <= k1`` are shifted; targets at or before ``k0``
    are dropped (past); a target beyond ``k1`` becomes ``e[k1] >= energy - (energy the
    asset can still take between k1 and index at its maximum power)`` when that is
    positive (a necessary condition, so no optimum of the whole is cut off). Prices
    default to the problem's (perfect foresight); the rolling horizon passes its own. The
    stored energies are clipped into the window's first energy bounds (solver tolerance).
    """
    if not 0 <= k0 < k1 <= problem.n:
        raise MarketError(f"window {k0}..{k1} outside 0..{problem.n}")
    dt = problem.dt_h
    assets = []
    for asset, e0 in zip(problem.assets, e0_kwh, strict=True):
        targets: list[EnergyTarget] = []
        for t in asset.targets:
            if k0 < t.index <= k1:
                targets.append(EnergyTarget(t.index - k0, t.energy_kwh))
            elif t.index > k1:
                later = float(np.maximum(asset.p_max_kw[k1 : t.index], 0.0).sum())
                need = t.energy_kwh - later * asset.eta_charge * dt
                need = min(need, float(asset.e_max_kwh[k1]))
                if need > 1e-9:
                    targets.append(EnergyTarget(k1 - k0, need))
        e_min = asset.e_min_kwh[k0 : k1 + 1].copy()
        e_max = asset.e_max_kwh[k0 : k1 + 1].copy()
        e_now = float(np.clip(e0, e_min[0], e_max[0]))
        assets.append(
            replace(
                asset,
                p_min_kw=asset.p_min_kw[k0:k1],
                p_max_kw=asset.p_max_kw[k0:k1],
                e_min_kwh=e_min,
                e_max_kwh=e_max,
                e0_kwh=e_now,
                targets=tuple(targets),
                taper=None if asset.taper is None else replace(
                    asset.taper, scale=asset.taper.scale[k0:k1]),
            )
        )
    pi = (
        problem.price_import_per_mwh[k0:k1]
        if price_import_per_mwh is None
        else price_import_per_mwh
    )
    pe = (
        problem.price_export_per_mwh[k0:k1]
        if price_export_per_mwh is None
        else price_export_per_mwh
    )
    return replace(
        problem,
        start=problem.interval_start(k0),
        assets=tuple(assets),
        price_import_per_mwh=pi,
        price_export_per_mwh=pe,
        base_load_kw=problem.base_load_kw[k0:k1],
        pv_kw=problem.pv_kw[k0:k1],
        import_limit_kw=problem.import_limit_kw[k0:k1],
        export_limit_kw=problem.export_limit_kw[k0:k1],
        peak_so_far_kw=peak_so_far_kw,
    )
