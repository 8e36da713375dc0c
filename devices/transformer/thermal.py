"""IEC 60076-7:2018 thermal model of an oil-immersed transformer (difference equations).

The solution by difference equations (IEC 60076-7:2018, 8.2.3; worked in Annex G style)
of the top-oil and hot-spot differential equations for a load factor ``K`` and an ambient
temperature ``theta_a`` that are constant over a step::

    D theta_o  = Dt / (k11 tau_o) * ( ((1 + K^2 R) / (1 + R))^x * d_theta_or - (theta_o - theta_a) )
    D d_h1     = Dt / (k22 tau_w) * ( k21 Hgr K^y - d_h1 )
    D d_h2     = Dt / (tau_o / k22) * ( (k21 - 1) Hgr K^y - d_h2 )
    d_theta_h  = d_h1 - d_h2
    theta_h    = theta_o + d_theta_h

In steady state ``theta_o = theta_a + d_theta_or ((1 + K^2 R)/(1 + R))^x`` and
``d_theta_h = Hgr K^y`` (the two hot-spot terms settle at ``k21 Hgr K^y`` and
``(k21 - 1) Hgr K^y``), so at K = 1 the hot spot settles at ``theta_a + d_theta_or + Hgr``.

The standard asks for a time step no greater than half the smallest time constant;
:func:`step` splits a step into equal sub-steps no longer than
``min(tau_w, k11 tau_o, k22 tau_w, tau_o / k22) / 2`` and no longer than
``ThermalParams.max_substep_s`` (5 s by default, so that one 60 s step and sixty 1 s
steps agree to a few hundredths of a kelvin).

Default parameters are those of an ONAN distribution transformer: x, y, k11, k21, k22,
tau_o, tau_w from IEC 60076-7:2018 Table 5 (recommended thermal characteristics, column
"distribution transformer, ONAN": x = 0.8, y = 1.6, k11 = 1.0, k21 = 1.0, k22 = 2.0,
tau_o = 180 min, tau_w = 4 min). The rated quantities d_theta_or, Hgr and R come from a
transformer's heat-run test, not from that table; the defaults (55 K, 23 K, 5) are the
distribution-transformer values of the predecessor guide IEC 60354:1991, Table 1, and give
the reference hot spot of 98 degC at rated load and 20 degC ambient (ageing rate 1).

Relative ageing rate, non-thermally-upgraded paper (IEC 60076-7:2018, 6.3, eq. (2)):
``V = 2 ** ((theta_h - 98) / 6)``; thermally upgraded paper (eq. (3)):
``V = exp(15000 / (110 + 273) - 15000 / (theta_h + 273))``.

Pure functions, no clock: the caller passes the step length in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = [
    "K_MAX",
    "ThermalParams",
    "ThermalState",
    "ageing_rate",
    "initial_state",
    "load_factor",
    "loading_pct",
    "steady_state",
    "step",
]


@dataclass(frozen=True, slots=True)
class ThermalParams:
    """Thermal characteristics of one transformer (IEC 60076-7:2018 symbols).

    Attributes:
        x: oil exponent.
        y: winding exponent.
        k11: constant of the top-oil equation.
        k21: constant of the hot-spot equations.
        k22: constant of the hot-spot equations.
        tau_o_min: average oil time constant, minutes.
        tau_w_min: winding time constant, minutes.
        d_theta_or_k: top-oil temperature rise in steady state at rated losses, K.
        hgr_k: hot-spot-to-top-oil gradient at rated current (H times gr), K.
        r: ratio of load losses at rated current to no-load losses.
        max_substep_s: upper bound of one sub-step, seconds.

    """

    x: float = 0.8
    y: float = 1.6
    k11: float = 1.0
    k21: float = 1.0
    k22: float = 2.0
    tau_o_min: float = 180.0
    tau_w_min: float = 4.0
    d_theta_or_k: float = 55.0
    hgr_k: float = 23.0
    r: float = 5.0
    max_substep_s: float = 5.0

    def max_step_s(self) -> float:
        """Longest sub-step used by :func:`step`, seconds."""
        tau_o = self.tau_o_min * 60.0
        tau_w = self.tau_w_min * 60.0
        smallest = min(tau_w, self.k11 * tau_o, self.k22 * tau_w, tau_o / self.k22)
        return min(smallest / 2.0, self.max_substep_s)


@dataclass(frozen=True, slots=True)
class ThermalState:
    """State of the difference equations.

    Attributes:
        top_oil_c: top-oil temperature theta_o, degC.
        d_h1_k: first hot-spot rise term, K.
        d_h2_k: second hot-spot rise term, K.

    """

    top_oil_c: float
    d_h1_k: float = 0.0
    d_h2_k: float = 0.0

    @property
    def hot_spot_rise_k(self) -> float:
        """Hot-spot-to-top-oil gradient d_theta_h = d_h1 - d_h2, K."""
        return self.d_h1_k - self.d_h2_k

    @property
    def hot_spot_c(self) -> float:
        """Hot-spot temperature theta_h = theta_o + d_theta_h, degC."""
        return self.top_oil_c + self.hot_spot_rise_k


K_MAX = 10.0
"""Load factors are clipped to [0, K_MAX]: far beyond any loading the guide covers
(IEC 60076-7 limits a distribution transformer to K = 1.5), and it keeps the powers finite."""


def _clip_k(load_factor_k: float) -> float:
    k = float(load_factor_k)
    if math.isnan(k) or k < 0:
        return 0.0
    return min(k, K_MAX)


def initial_state(ambient_c: float) -> ThermalState:
    """A transformer at rest: top oil at ambient, no hot-spot gradient."""
    return ThermalState(top_oil_c=float(ambient_c))


def steady_state(params: ThermalParams, load_factor_k: float, ambient_c: float) -> ThermalState:
    """The state the equations settle at for constant K and ambient."""
    k = _clip_k(load_factor_k)
    p = params
    oil = ambient_c + (((1.0 + k * k * p.r) / (1.0 + p.r)) ** p.x) * p.d_theta_or_k
    ky = k**p.y
    return ThermalState(oil, p.k21 * p.hgr_k * ky, (p.k21 - 1.0) * p.hgr_k * ky)


def step(
    state: ThermalState,
    load_factor_k: float,
    ambient_c: float,
    dt_s: float,
    params: ThermalParams | None = None,
) -> ThermalState:
    """Advance the state by ``dt_s`` seconds with K and ambient constant over the step.

    Args:
        state: state at the start of the step.
        load_factor_k: load current / rated current; NaN or negative is taken as 0,
            values above ``K_MAX`` as ``K_MAX``.
        ambient_c: ambient temperature, degC.
        dt_s: step length, seconds (0 returns ``state``).
        params: thermal characteristics; the ONAN distribution defaults if omitted.

    Returns:
        The state at the end of the step.

    Raises:
        ValueError: if ``dt_s`` is negative or not finite, or ``ambient_c`` is not finite.

    """
    if not math.isfinite(dt_s) or dt_s < 0:
        raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
    if not math.isfinite(ambient_c):
        raise ValueError(f"ambient_c must be finite, got {ambient_c!r}")
    if dt_s == 0:
        return state
    p = params or ThermalParams()
    k = _clip_k(load_factor_k)
    n = max(1, math.ceil(dt_s / p.max_step_s() - 1e-9))
    h = dt_s / n
    tau_o = p.tau_o_min * 60.0
    tau_w = p.tau_w_min * 60.0
    oil_target = (((1.0 + k * k * p.r) / (1.0 + p.r)) ** p.x) * p.d_theta_or_k
    ky = k**p.y
    h1_target = p.k21 * p.hgr_k * ky
    h2_target = (p.k21 - 1.0) * p.hgr_k * ky
    a_o = h / (p.k11 * tau_o)
    a_1 = h / (p.k22 * tau_w)
    a_2 = h / (tau_o / p.k22)
    oil, h1, h2 = state.top_oil_c, state.d_h1_k, state.d_h2_k
    for _ in range(n):
        oil += a_o * (oil_target - (oil - ambient_c))
        h1 += a_1 * (h1_target - h1)
        h2 += a_2 * (h2_target - h2)
    return replace(state, top_oil_c=oil, d_h1_k=h1, d_h2_k=h2)


def ageing_rate(hot_spot_c: float, *, thermally_upgraded: bool = False) -> float:
    """Relative ageing rate V at a hot-spot temperature (IEC 60076-7:2018 eq. (2)/(3)).

    V = 1 at 98 degC for non-thermally-upgraded paper (110 degC for upgraded paper).
    """
    if thermally_upgraded:
        return math.exp(15000.0 / (110.0 + 273.0) - 15000.0 / (hot_spot_c + 273.0))
    return float(2.0 ** ((hot_spot_c - 98.0) / 6.0))


def load_factor(phase_currents_a: Sequence[float], rated_current_a: float) -> float:
    """Load factor K from per-phase RMS currents: the highest phase over the rated current.

    The most loaded phase sets the winding temperature, so K uses the maximum rather than
    the mean of the phase currents. Non-finite currents count as 0.
    """
    if not rated_current_a > 0:
        raise ValueError(f"rated_current_a must be > 0, got {rated_current_a!r}")
    currents = [abs(c) for c in phase_currents_a if math.isfinite(c)]
    return (max(currents) if currents else 0.0) / rated_current_a


def loading_pct(phase_currents_a: Sequence[float], rated_current_a: float) -> float:
    """Loading in per cent of rated current (100 x :func:`load_factor`)."""
    return 100.0 * load_factor(phase_currents_a, rated_current_a)
