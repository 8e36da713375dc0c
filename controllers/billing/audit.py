"""Physics audit of a charging session: meter energy against the vehicle's SoC telemetry.

Issue 8, item 2. Per session the station's meter says how much energy was dispensed
(register at stop minus register at start, kWh, grid side) and the vehicle says how far
its state of charge rose (SoC at start and end, fraction 0..1). With the usable battery
capacity (kWh) both must agree.

Formula used. ``ΔSoC * capacity`` is energy stored in the battery (battery side); the
meter measures grid side, before charger and battery losses. The energy the meter should
have registered is therefore::

    E_expected = ΔSoC * capacity / efficiency            (kWh)
    variance   = |E_dispensed - E_expected| / E_dispensed  (dimensionless ratio)

With ``efficiency = 1`` this is exactly the issue's definition
``|E_dispensed - ΔSoC * capacity| / E_dispensed``; the default ``efficiency = 0.92``
(grid-to-battery, AC charging, an assumed typical value) corrects it for losses, so an
honest session does not read as an 8 % "variance".

A session is *verified* when ``variance < threshold`` (default 0.15) and no other check
failed, *flagged* with the reasons otherwise, and *unverifiable* when SoC or capacity is
missing. Unverifiable is not verified: downstream (token minting) must treat it as a
failure (fail safe).

Physics quantities are floats (kWh, fractions); money is never computed here.

:func:`inject_meter_drift` and :func:`inject_soc_spoof` build the dishonest or faulty
variants of a session that the twin injects to prove the audit catches them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import pairwise

#: Default variance threshold (ratio): issue 8 says "verified under 15 %".
DEFAULT_THRESHOLD = 0.15
#: Default grid-to-battery charging efficiency (ratio), an assumed typical AC value.
DEFAULT_EFFICIENCY = 0.92
#: Tolerance (kWh) between ``energy_kwh`` and the register samples' span: 1 Wh.
REGISTER_TOLERANCE_KWH = 0.001
#: SoC rise (fraction) above which "no energy dispensed" is a contradiction: 0.1 %.
SOC_EPSILON = 0.001


class AuditStatus(StrEnum):
    """Outcome of the audit. Only ``VERIFIED`` may be minted or trusted downstream."""

    VERIFIED = "verified"
    FLAGGED = "flagged"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True)
class SessionTelemetry:
    """What the audit reads about one session.

    Attributes:
        session_id: the session (transaction) id.
        energy_kwh: energy dispensed per the station's meter, register stop - start (kWh).
        soc_start: vehicle SoC at start, fraction 0..1, None if not reported.
        soc_end: vehicle SoC at end, fraction 0..1, None if not reported.
        capacity_kwh: usable battery capacity (kWh), None if unknown.
        efficiency: grid-to-battery efficiency (ratio in (0, 1]), default 0.92.
        register_kwh: optional meter energy-register samples in time order (kWh), used to
            detect a register that goes backwards or disagrees with ``energy_kwh``.

    Raises:
        ValueError: when ``efficiency`` is not a finite number in (0, 1] (it is a model
            parameter, not telemetry, so a bad value is a configuration error).
    """

    session_id: str
    energy_kwh: float
    soc_start: float | None
    soc_end: float | None
    capacity_kwh: float | None
    efficiency: float = DEFAULT_EFFICIENCY
    register_kwh: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.efficiency) and 0 < self.efficiency <= 1):
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency!r}")
        object.__setattr__(self, "register_kwh", tuple(self.register_kwh))


@dataclass(frozen=True)
class AuditResult:
    """Audit outcome.

    Attributes:
        session_id: the audited session.
        status: verified, flagged or unverifiable.
        variance: ``|E_dispensed - E_expected| / E_dispensed`` (ratio), None when it
            cannot be computed (no SoC or capacity, or no energy dispensed).
        expected_kwh: ``ΔSoC * capacity / efficiency`` (kWh, grid side) or None.
        reasons: why the session is not verified (empty when verified).
    """

    session_id: str
    status: AuditStatus
    variance: float | None
    expected_kwh: float | None
    reasons: tuple[str, ...]

    @property
    def verified(self) -> bool:
        """True only for ``AuditStatus.VERIFIED`` (unverifiable counts as not verified)."""
        return self.status is AuditStatus.VERIFIED


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _register_reasons(t: SessionTelemetry) -> list[str]:
    regs = t.register_kwh
    out: list[str] = []
    if any(not math.isfinite(r) for r in regs):
        return ["energy register sample not a finite number"]
    if any(b < a for a, b in pairwise(regs)):
        out.append("energy register went backwards")
    if len(regs) >= 2 and abs((regs[-1] - regs[0]) - t.energy_kwh) > REGISTER_TOLERANCE_KWH:
        out.append(f"register span {regs[-1] - regs[0]:.3f} kWh differs from energy "
                   f"dispensed {t.energy_kwh:.3f} kWh")
    return out


def audit(t: SessionTelemetry, threshold: float = DEFAULT_THRESHOLD) -> AuditResult:
    """Audit one session: meter energy against ``ΔSoC * capacity / efficiency``.

    Checks, all reported (reasons accumulate):
    - energy dispensed finite and not negative ("energy register went backwards" when
      negative), register samples non-decreasing and consistent with ``energy_kwh``;
    - SoC reported at start and end, within 0..1 ("SoC beyond 0..1");
    - capacity known and positive;
    - no energy dispensed: SoC must not rise ("SoC rose with no energy dispensed");
    - SoC must not fall while energy was dispensed;
    - ``variance < threshold`` ("variance 0.310 at or above 0.15").

    Status: flagged if any check on reported data failed; otherwise unverifiable if SoC
    or capacity is missing; otherwise verified. Zero energy with no SoC change is
    verified with variance 0 (nothing to dispute).

    Args:
        t: the session's telemetry.
        threshold: variance ratio limit, > 0 (0.15 = 15 %).

    Raises:
        ValueError: when ``threshold`` is not a finite number > 0.
    """
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite ratio > 0, got {threshold!r}")
    flags: list[str] = []
    missing: list[str] = []
    energy = t.energy_kwh
    if not math.isfinite(energy):
        flags.append("energy dispensed not a finite number")
    elif energy < 0:
        flags.append("energy register went backwards")
    flags.extend(_register_reasons(t))

    socs = (t.soc_start, t.soc_end)
    if any(s is None for s in socs):
        missing.append("SoC not reported")
    elif not all(_finite(s) and 0 <= s <= 1 for s in socs if s is not None):
        flags.append("SoC beyond 0..1")
    cap = t.capacity_kwh
    if cap is None:
        missing.append("battery capacity unknown")
    elif not (math.isfinite(cap) and cap > 0):
        flags.append("battery capacity not a positive number")

    variance: float | None = None
    expected: float | None = None
    s0, s1 = t.soc_start, t.soc_end
    if not flags and not missing and s0 is not None and s1 is not None and cap is not None:
        d_soc = s1 - s0
        expected = d_soc * cap / t.efficiency
        if energy == 0:
            if d_soc > SOC_EPSILON:
                flags.append("SoC rose with no energy dispensed")
            else:
                variance = 0.0
        else:
            if d_soc < -SOC_EPSILON:
                flags.append("SoC fell while energy was dispensed")
            variance = abs(energy - expected) / energy
            if not variance < threshold:
                flags.append(f"variance {variance:.3f} at or above {threshold:g}")
    if flags:
        status = AuditStatus.FLAGGED
    elif missing:
        status = AuditStatus.UNVERIFIABLE
    else:
        status = AuditStatus.VERIFIED
    return AuditResult(t.session_id, status, variance, expected, tuple(flags + missing))


def inject_meter_drift(t: SessionTelemetry, factor: float) -> SessionTelemetry:
    """The session as a drifting (or tampered) meter would report it.

    ``energy_kwh`` is multiplied by ``factor`` (1.3 = meter reads 30 % high) and the
    register samples are scaled about their first sample, so they stay consistent with
    the reported energy: only the physics audit can catch it.

    Raises:
        ValueError: when ``factor`` is not a finite number > 0.
    """
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"drift factor must be a finite number > 0, got {factor!r}")
    regs = t.register_kwh
    scaled = tuple(regs[0] + (r - regs[0]) * factor for r in regs) if regs else ()
    return replace(t, energy_kwh=t.energy_kwh * factor, register_kwh=scaled)


def inject_soc_spoof(t: SessionTelemetry, soc_end: float) -> SessionTelemetry:
    """The session with a spoofed end SoC (e.g. a vehicle claiming a fuller battery).

    No range check: a spoofed value beyond 0..1 is itself a case the audit must flag.
    """
    return replace(t, soc_end=soc_end)


def inject_register_rollback(t: SessionTelemetry, at: int, by_kwh: float) -> SessionTelemetry:
    """The session with register samples from index ``at`` on lowered by ``by_kwh``.

    Models a meter whose energy register is reset or rolled back mid-session.

    Raises:
        ValueError: when there are fewer than two samples or ``at`` is not in 1..n-1.
    """
    regs = t.register_kwh
    if len(regs) < 2 or not 1 <= at < len(regs):
        raise ValueError(f"need register samples and 1 <= at < {len(regs)}, got at={at}")
    new = tuple(r - by_kwh if i >= at else r for i, r in enumerate(regs))
    return replace(t, register_kwh=new, energy_kwh=new[-1] - new[0])


__all__: Sequence[str] = (
    "DEFAULT_EFFICIENCY", "DEFAULT_THRESHOLD", "AuditResult", "AuditStatus",
    "SessionTelemetry", "audit", "inject_meter_drift", "inject_register_rollback",
    "inject_soc_spoof",
)
