"""Physics audit (issue 8 item 2): golden cases, injected faults, physics properties.

Golden session: 60 kWh battery, SoC 0.20 -> 0.80, efficiency 0.92:
battery-side energy 0.60 * 60 = 36 kWh, expected at the meter 36 / 0.92 = 39.1304 kWh.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from controllers.billing.audit import (
    AuditStatus,
    SessionTelemetry,
    audit,
    inject_meter_drift,
    inject_register_rollback,
    inject_soc_spoof,
)

EXPECTED = 0.60 * 60 / 0.92  # 39.1304... kWh


def honest(**kw: object) -> SessionTelemetry:
    base: dict[str, object] = {
        "session_id": "s1", "energy_kwh": 39.5, "soc_start": 0.20, "soc_end": 0.80,
        "capacity_kwh": 60.0, "register_kwh": (1000.0, 1020.0, 1039.5)}
    base.update(kw)
    return SessionTelemetry(**base)  # type: ignore[arg-type]


def test_honest_session_verified() -> None:
    r = audit(honest())
    assert r.status is AuditStatus.VERIFIED and r.verified
    assert r.reasons == ()
    assert r.expected_kwh == pytest.approx(EXPECTED)
    # |39.5 - 39.1304| / 39.5 = 0.00936
    assert r.variance == pytest.approx(abs(39.5 - EXPECTED) / 39.5)


def test_efficiency_one_is_the_issue_formula() -> None:
    # |E - dSoC * cap| / E with E = 36.9: 0.9 / 36.9 = 0.02439
    r = audit(honest(energy_kwh=36.9, efficiency=1.0, register_kwh=()))
    assert r.variance == pytest.approx(0.9 / 36.9)
    assert r.verified


def test_meter_drift_x1_3_flagged() -> None:
    t = inject_meter_drift(honest(), 1.3)
    assert t.energy_kwh == pytest.approx(39.5 * 1.3)
    assert t.register_kwh == pytest.approx((1000.0, 1026.0, 1051.35))  # consistent
    r = audit(t)
    # E = 51.35: |51.35 - 39.1304| / 51.35 = 0.2380
    assert r.status is AuditStatus.FLAGGED and not r.verified
    assert r.variance == pytest.approx((51.35 - EXPECTED) / 51.35)
    assert r.reasons == ("variance 0.238 at or above 0.15",)


def test_soc_spoofed_flagged() -> None:
    # claims 0.20 -> 1.00: expected 0.8 * 60 / 0.92 = 52.17 kWh against 39.5 dispensed
    r = audit(inject_soc_spoof(honest(), 1.0))
    assert r.status is AuditStatus.FLAGGED
    assert r.variance == pytest.approx(abs(39.5 - 0.8 * 60 / 0.92) / 39.5)
    assert r.reasons[0].startswith("variance 0.321")


def test_soc_spoof_beyond_range_flagged() -> None:
    r = audit(inject_soc_spoof(honest(), 1.2))
    assert r.status is AuditStatus.FLAGGED
    assert "SoC beyond 0..1" in r.reasons
    assert r.variance is None


@pytest.mark.parametrize("kw", [{"soc_start": None}, {"soc_end": None}])
def test_no_soc_unverifiable(kw: dict[str, object]) -> None:
    r = audit(honest(**kw))
    assert r.status is AuditStatus.UNVERIFIABLE
    assert not r.verified  # fail safe: nothing minted downstream
    assert r.reasons == ("SoC not reported",)
    assert r.variance is None


def test_unknown_capacity_unverifiable() -> None:
    r = audit(honest(capacity_kwh=None))
    assert r.status is AuditStatus.UNVERIFIABLE
    assert r.reasons == ("battery capacity unknown",)


def test_register_backwards_flagged() -> None:
    t = inject_register_rollback(honest(), at=2, by_kwh=25.0)
    assert t.register_kwh == (1000.0, 1020.0, 1014.5)
    r = audit(t)
    assert r.status is AuditStatus.FLAGGED
    assert "energy register went backwards" in r.reasons


def test_register_backwards_flagged_even_without_soc() -> None:
    # a faulty meter is a finding, not just "unverifiable"
    r = audit(honest(soc_end=None, register_kwh=(5.0, 4.0, 44.5)))
    assert r.status is AuditStatus.FLAGGED
    assert r.reasons == ("energy register went backwards", "SoC not reported")


def test_negative_energy_flagged() -> None:
    r = audit(honest(energy_kwh=-3.0, register_kwh=()))
    assert r.status is AuditStatus.FLAGGED
    assert "energy register went backwards" in r.reasons


def test_register_span_disagrees_flagged() -> None:
    r = audit(honest(register_kwh=(1000.0, 1030.0)))
    assert r.status is AuditStatus.FLAGGED
    assert r.reasons == ("register span 30.000 kWh differs from energy dispensed 39.500 kWh",)


def test_soc_rose_without_energy_flagged() -> None:
    r = audit(honest(energy_kwh=0.0, register_kwh=(7.0, 7.0)))
    assert r.status is AuditStatus.FLAGGED
    assert r.reasons == ("SoC rose with no energy dispensed",)


def test_zero_energy_no_soc_change_verified() -> None:
    r = audit(honest(energy_kwh=0.0, soc_end=0.20, register_kwh=()))
    assert r.verified and r.variance == 0.0


def test_soc_fell_while_charging_flagged() -> None:
    r = audit(honest(soc_end=0.10))
    assert r.status is AuditStatus.FLAGGED
    assert "SoC fell while energy was dispensed" in r.reasons


def test_threshold_configurable() -> None:
    t = inject_meter_drift(honest(), 1.3)  # variance 0.238
    assert audit(t, threshold=0.25).verified
    assert not audit(t, threshold=0.2).verified


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan, math.inf])
def test_bad_threshold_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        audit(honest(), threshold=bad)


@pytest.mark.parametrize("bad", [0.0, 1.5, math.nan])
def test_bad_efficiency_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="efficiency"):
        honest(efficiency=bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf])
def test_bad_drift_factor_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="drift factor"):
        inject_meter_drift(honest(), bad)


# --- physics properties -------------------------------------------------------------

capacity = st.floats(10.0, 200.0)
soc = st.floats(0.0, 1.0)
efficiency = st.floats(0.80, 1.0)


def physics(cap: float, s0: float, s1: float, eff: float, noise: float) -> SessionTelemetry:
    """An honest session: dispensed = dSoC * capacity / efficiency, times (1 + noise)."""
    lo, hi = sorted((s0, s1))
    e = (hi - lo) * cap / eff * (1 + noise)
    return SessionTelemetry("p", e, lo, hi, cap, eff, (100.0, 100.0 + e / 2, 100.0 + e))


@given(capacity, soc, soc, efficiency, st.floats(-0.0199, 0.0199))
def test_honest_physics_always_verified(cap: float, s0: float, s1: float, eff: float,
                                        noise: float) -> None:
    # variance = |n| / (1 + n) <= 0.0199 / 0.9801 = 0.0203 < 0.15
    t = physics(cap, s0, s1, eff, noise)
    assert audit(t).status is AuditStatus.VERIFIED


@given(capacity, soc, soc, efficiency, st.floats(-0.0099, 0.0099),
       st.one_of(st.floats(1.2, 5.0), st.floats(0.05, 0.8)))
def test_drift_of_20_percent_always_flagged(cap: float, s0: float, s1: float, eff: float,
                                            noise: float, factor: float) -> None:
    # variance = |1 - 1/(f(1+n))|: worst cases 1 - 1/(1.2 * 0.9901) = 0.158 and
    # 1/(0.8 * 1.0099) - 1 = 0.238, both >= 0.15. (With 2 % noise a 1.2 drift can
    # read 0.1497, so the drift property uses meter noise < 1 %.)
    assume(abs(s1 - s0) >= 0.01)
    r = audit(inject_meter_drift(physics(cap, s0, s1, eff, noise), factor))
    assert r.status is AuditStatus.FLAGGED
    assert r.reasons[0].startswith("variance")


@given(capacity, soc, soc, efficiency, st.floats(-0.0199, 0.0199))
def test_drift_keeps_registers_consistent(cap: float, s0: float, s1: float, eff: float,
                                          noise: float) -> None:
    t = inject_meter_drift(physics(cap, s0, s1, eff, noise), 1.3)
    assert not any("register" in x for x in audit(t).reasons)
