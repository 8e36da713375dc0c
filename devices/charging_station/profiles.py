"""OCPP charging profiles, their stacking rules and the composite schedule.

Implements, version-independently, what a charging station does with charging profiles:

* OCPP 2.0.1 Part 2 K01 (SetChargingProfile), K08 (GetCompositeSchedule), K10
  (ClearChargingProfile) and §3 "Smart Charging" (profile purposes, stack levels, combining
  profiles); OCPP 1.6 §3.13 "Smart Charging" and §5.16/§5.5/§5.7. 1.6 ``ChargePointMaxProfile``
  maps to :attr:`ChargingProfilePurpose.CHARGING_STATION_MAX`, 1.6 ``connectorId`` to
  ``evse_id`` (0 = the whole station).

Rules, as implemented:

* A profile *contributes* at instant ``t`` when ``valid_from <= t < valid_to`` and its schedule
  defines a limit at ``t``: ``0 <= t - schedule_start < duration`` (no duration: forever).
  ``schedule_start`` is ``start_schedule`` (Absolute), the latest recurrence of
  ``start_schedule`` (Recurring, every 24 h / 7 days) or, for Relative profiles, the start of
  the EVSE's transaction (no transaction: the start of the evaluated window, i.e. "as if a
  transaction started now").
* Per purpose, the contributing profile with the highest ``stack_level`` wins; on a tie an
  EVSE-specific profile beats one installed on EVSE 0 (TxDefaultProfile on 0 applies to every
  EVSE).
* A TxProfile (which must belong to the EVSE's active transaction) overrides the
  TxDefaultProfile; the limit in force is ``min(ChargingStationMaxProfile, Tx or TxDefault,
  EVSE hardware limit)``. When nothing contributes the hardware limit applies.
* Limits are compared per phase in A for AC EVSEs (phases = the smallest ``number_phases`` of
  the contributing periods, default 3, capped by the EVSE's phases) and in W for DC EVSEs.
  A<->W conversion uses the EVSE's phases and phase voltage (AC) or its nominal DC voltage.
* Installing replaces a profile with the same id, or with the same (stack level, purpose,
  EVSE) (1.6 §3.13.2 / 2.0.1 K01.FR.05); a TxProfile without an active transaction on the
  EVSE, or for another transaction, is rejected (K01.FR.09); a TxProfile ending with its
  transaction is removed (K01.FR.05 note / 1.6 §3.13.2).

All times are tz-aware UTC ``datetime`` at the API; internally POSIX seconds. No I/O.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Literal, NamedTuple

__all__ = [
    "ChargingProfile",
    "ChargingProfileKind",
    "ChargingProfilePurpose",
    "ChargingRateUnit",
    "ChargingSchedule",
    "ChargingSchedulePeriod",
    "CompositePeriod",
    "EvseElectrical",
    "Limit",
    "Operation",
    "OperationMode",
    "ProfileRejectedError",
    "ProfileStore",
    "RecurrencyKind",
]

_DAY_S = 86_400.0
_WEEK_S = 7 * _DAY_S
_INF = math.inf


class ChargingProfilePurpose(StrEnum):
    """Purpose of a charging profile (2.0.1 ChargingProfilePurposeEnumType)."""

    CHARGING_STATION_MAX = "ChargingStationMaxProfile"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"


class ChargingProfileKind(StrEnum):
    """How the schedule's start is determined (ChargingProfileKindEnumType)."""

    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class RecurrencyKind(StrEnum):
    """Recurrence of a Recurring profile (RecurrencyKindEnumType)."""

    DAILY = "Daily"
    WEEKLY = "Weekly"


class OperationMode(StrEnum):
    """OCPP 2.1 OperationModeEnumType (ChargingSchedulePeriodType.operationMode).

    The emulator implements ``ChargingOnly`` (the default: ``limit`` caps charging),
    ``CentralSetpoint`` (follow ``setpoint``, negative = discharge, within ``limit`` and
    ``dischargeLimit``) and ``Idle`` (no energy transfer); the others are rejected.
    """

    IDLE = "Idle"
    CHARGING_ONLY = "ChargingOnly"
    CENTRAL_SETPOINT = "CentralSetpoint"
    EXTERNAL_SETPOINT = "ExternalSetpoint"
    EXTERNAL_LIMITS = "ExternalLimits"
    CENTRAL_FREQUENCY = "CentralFrequency"
    LOCAL_FREQUENCY = "LocalFrequency"
    LOCAL_LOAD_BALANCING = "LocalLoadBalancing"


#: Operation modes the emulator implements (2.1).
SUPPORTED_OPERATION_MODES = frozenset(
    {OperationMode.IDLE, OperationMode.CHARGING_ONLY, OperationMode.CENTRAL_SETPOINT}
)


class ChargingRateUnit(StrEnum):
    """Unit of schedule limits: per-phase current (A) or power (W)."""

    A = "A"
    W = "W"


@dataclass(frozen=True, slots=True)
class ChargingSchedulePeriod:
    """One period of a schedule (ChargingSchedulePeriodType).

    Attributes:
        start_period_s: offset from the schedule start, seconds (first period: 0).
        limit: limit in the schedule's unit (A per phase or W), >= 0; ``math.inf`` when a
            2.1 period omits it (no limit but the hardware's).
        number_phases: phases allowed (AC), None = 3 (the spec's default).
        operation_mode: 2.1 operationMode (default ChargingOnly; 1.6/2.0.1 always).
        setpoint: 2.1 setpoint in the schedule's unit, signed (negative = discharge); W:
            the sum of all phases; A: per phase, like ``limit``.
        discharge_limit: 2.1 dischargeLimit in the schedule's unit, <= 0 (same convention).
    """

    start_period_s: int
    limit: float
    number_phases: int | None = None
    operation_mode: OperationMode = OperationMode.CHARGING_ONLY
    setpoint: float | None = None
    discharge_limit: float | None = None

    @property
    def discharges(self) -> bool:
        """Whether the period asks for or allows discharging (2.1)."""
        if self.operation_mode is OperationMode.CENTRAL_SETPOINT:
            return (self.setpoint or 0.0) < 0.0
        return False


@dataclass(frozen=True, slots=True)
class ChargingSchedule:
    """A charging schedule (ChargingScheduleType).

    Attributes:
        charging_rate_unit: unit of the period limits.
        periods: periods in increasing ``start_period_s``, the first at 0.
        start_schedule: anchor for Absolute and Recurring profiles (tz-aware UTC).
        duration_s: length of the schedule, seconds; None = the last period never ends.
        min_charging_rate: informational.
        id: schedule id (2.0.1).
    """

    charging_rate_unit: ChargingRateUnit
    periods: tuple[ChargingSchedulePeriod, ...]
    start_schedule: datetime | None = None
    duration_s: int | None = None
    min_charging_rate: float | None = None
    id: int = 0


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """A charging profile (ChargingProfileType; 1.6 csChargingProfiles).

    Attributes:
        id: chargingProfileId.
        stack_level: >= 0; higher wins within a purpose.
        purpose: ChargingStationMaxProfile, TxDefaultProfile or TxProfile.
        kind: Absolute, Recurring or Relative.
        schedule: the (first) charging schedule.
        recurrency: Daily or Weekly, required for Recurring.
        valid_from, valid_to: validity window (tz-aware UTC), None = unbounded.
        transaction_id: the transaction a TxProfile belongs to (str; 1.6 ids as decimal text).
    """

    id: int
    stack_level: int
    purpose: ChargingProfilePurpose
    kind: ChargingProfileKind
    schedule: ChargingSchedule
    recurrency: RecurrencyKind | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class EvseElectrical:
    """Electrical data of one EVSE that the profile rules need.

    Attributes:
        evse_id: >= 1.
        kind: "AC" or "DC".
        max_power_w: hardware limit, W.
        phases: AC phases, 1 or 3 (ignored for DC).
        voltage_v: AC phase-to-neutral voltage, V.
        dc_voltage_v: nominal DC voltage used to convert A limits on a DC EVSE, V.
    """

    evse_id: int
    kind: Literal["AC", "DC"]
    max_power_w: float
    phases: int = 3
    voltage_v: float = 230.0
    dc_voltage_v: float = 400.0

    @property
    def max_current_a(self) -> float:
        """Hardware current limit: per phase for AC, DC current for DC, A."""
        if self.kind == "AC":
            return self.max_power_w / (self.voltage_v * self.phases)
        return self.max_power_w / self.dc_voltage_v


class Limit(NamedTuple):
    """The limit in force at an EVSE.

    Attributes:
        current_a: per-phase current for AC, DC current (at the nominal DC voltage) for DC, A.
        power_w: power, W.
        phases: phases allowed for AC, None for DC.
    """

    current_a: float
    power_w: float
    phases: int | None


class Operation(NamedTuple):
    """The 2.1 operation mode in force at an EVSE, powers as W at the meter (signed).

    Attributes:
        mode: the operation mode (ChargingOnly when no profile says otherwise).
        setpoint_w: signed set-point, W (positive = import / charge), None if none.
        discharge_limit_w: discharge limit, W (<= 0), None if none.
    """

    mode: OperationMode
    setpoint_w: float | None = None
    discharge_limit_w: float | None = None


_CHARGING_ONLY = Operation(OperationMode.CHARGING_ONLY)


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    """One period of a composite schedule (relative to the requested start).

    Attributes:
        start_period_s: offset from the composite schedule's start, whole seconds.
        limit: limit in the requested unit.
        number_phases: phases (AC), None for DC.
    """

    start_period_s: int
    limit: float
    number_phases: int | None


class ProfileRejectedError(ValueError):
    """A profile cannot be installed; ``reason_code`` is the OCPP 2.0.1 StatusInfo reason."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(f"{reason_code}: {message}")
        self.reason_code = reason_code
        self.message = message


@dataclass(slots=True)
class _Entry:
    """An installed profile with its times precomputed as POSIX seconds."""

    profile: ChargingProfile
    evse_id: int
    seq: int
    valid_from: float
    valid_to: float
    anchor: float
    recurrence_s: float
    duration: float
    starts: tuple[float, ...]
    values: tuple[tuple[float, int], ...]  # (A per phase or W, phases) in the EVSE's domain
    ops: tuple[Operation, ...] = ()  # per period, powers in W at the meter


@dataclass(slots=True)
class _Tx:
    transaction_id: str
    start: float


@dataclass(slots=True)
class _Index:
    """Per-EVSE candidate lists, rebuilt on every change."""

    tx: list[_Entry] = field(default_factory=list)
    tx_default: list[_Entry] = field(default_factory=list)
    station_max: list[_Entry] = field(default_factory=list)


def _ts(t: datetime) -> float:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: times must be tz-aware UTC")
    return t.timestamp()


class ProfileStore:
    """The charging profiles installed on one charging station, and their evaluation.

    Args:
        evses: the station's EVSEs (ids >= 1).

    Units: limits are A per phase (AC) or W; times tz-aware UTC ``datetime``.
    """

    def __init__(self, evses: Sequence[EvseElectrical]) -> None:
        self._evses: dict[int, EvseElectrical] = {e.evse_id: e for e in evses}
        if any(i < 1 for i in self._evses):
            raise ValueError("EVSE ids must be >= 1")
        all_ac = all(e.kind == "AC" for e in evses)
        first = evses[0] if evses else None
        # EVSE 0 stands for the whole station: the sum of its EVSEs.
        self._evses0 = EvseElectrical(
            evse_id=0,
            kind="AC" if all_ac else "DC",
            max_power_w=sum(e.max_power_w for e in evses),
            phases=max((e.phases for e in evses), default=3),
            voltage_v=first.voltage_v if first else 230.0,
            dc_voltage_v=first.dc_voltage_v if first else 400.0,
        )
        self._entries: list[_Entry] = []
        self._tx: dict[int, _Tx] = {}
        self._seq = 0
        self._index: dict[int, _Index] = {}
        self._reindex()

    # ----------------------------------------------------------------- transactions
    def set_transaction(self, evse_id: int, transaction_id: str, start: datetime) -> None:
        """Record the active transaction of an EVSE (anchor of Relative profiles)."""
        self._tx[evse_id] = _Tx(transaction_id, _ts(start))

    def end_transaction(self, evse_id: int) -> list[int]:
        """Forget the EVSE's transaction and remove its TxProfiles; returns their ids."""
        tx = self._tx.pop(evse_id, None)
        if tx is None:
            return []
        removed = [
            e.profile.id
            for e in self._entries
            if e.evse_id == evse_id and e.profile.purpose is ChargingProfilePurpose.TX
        ]
        if removed:
            self._entries = [e for e in self._entries if e.profile.id not in removed]
            self._reindex()
        return removed

    def transaction_id(self, evse_id: int) -> str | None:
        """The active transaction id on ``evse_id``, or None."""
        tx = self._tx.get(evse_id)
        return tx.transaction_id if tx else None

    # ----------------------------------------------------------------- install / clear
    @property
    def profiles(self) -> list[tuple[int, ChargingProfile]]:
        """All installed profiles as ``(evse_id, profile)``, in installation order."""
        return [(e.evse_id, e.profile) for e in self._entries]

    def install(
        self, profile: ChargingProfile, evse_id: int, now: datetime | None = None
    ) -> list[int]:
        """Install ``profile`` on ``evse_id`` (0 = station-wide); 2.0.1 K01, 1.6 §5.16.

        A profile with the same id, or with the same (stack level, purpose, EVSE), is replaced.
        A TxProfile without ``transaction_id`` is bound to the EVSE's active transaction.
        Absolute/Recurring profiles without ``start_schedule`` start at ``now``.

        Returns:
            ids of the replaced profiles.

        Raises:
            ProfileRejectedError: unknown EVSE ("UnknownEVSE"), ChargingStationMaxProfile on
                an EVSE other than 0 or TxProfile on EVSE 0 ("InvalidValue"), TxProfile
                without a matching active transaction ("TxNotFound"), empty or unordered
                periods, first period not at 0, negative limit, Recurring without recurrency,
                Absolute/Recurring without start and without ``now`` ("InvalidSchedule").
        """
        if evse_id != 0 and evse_id not in self._evses:
            raise ProfileRejectedError("UnknownEVSE", f"no EVSE {evse_id}")
        purpose = profile.purpose
        if purpose is ChargingProfilePurpose.CHARGING_STATION_MAX and evse_id != 0:
            raise ProfileRejectedError("InvalidValue", "ChargingStationMaxProfile needs EVSE 0")
        if purpose is ChargingProfilePurpose.TX:
            if evse_id == 0:
                raise ProfileRejectedError("InvalidValue", "TxProfile needs an EVSE > 0")
            tx = self._tx.get(evse_id)
            if tx is None:
                raise ProfileRejectedError("TxNotFound", f"no transaction on EVSE {evse_id}")
            if profile.transaction_id is None:
                profile = replace(profile, transaction_id=tx.transaction_id)
            elif profile.transaction_id != tx.transaction_id:
                raise ProfileRejectedError(
                    "TxNotFound", f"transaction {profile.transaction_id} not active"
                )
        sched = profile.schedule
        periods = sched.periods
        if not periods:
            raise ProfileRejectedError("InvalidSchedule", "no charging schedule period")
        if periods[0].start_period_s != 0:
            raise ProfileRejectedError("InvalidSchedule", "first startPeriod must be 0")
        if any(b.start_period_s <= a.start_period_s for a, b in pairwise(periods)):
            raise ProfileRejectedError("InvalidSchedule", "startPeriod not increasing")
        if any(p.limit < 0 for p in periods):
            raise ProfileRejectedError("InvalidSchedule", "negative limit")
        if any(p.number_phases is not None and not 1 <= p.number_phases <= 3 for p in periods):
            raise ProfileRejectedError("InvalidSchedule", "numberPhases must be 1..3")
        if profile.kind is ChargingProfileKind.RECURRING and profile.recurrency is None:
            raise ProfileRejectedError("InvalidSchedule", "Recurring profile without recurrency")
        if profile.kind is not ChargingProfileKind.RELATIVE and sched.start_schedule is None:
            if now is None:
                raise ProfileRejectedError("InvalidSchedule", "startSchedule missing")
            profile = replace(profile, schedule=replace(sched, start_schedule=now))

        replaced = [
            e.profile.id
            for e in self._entries
            if e.profile.id == profile.id
            or (
                e.evse_id == evse_id
                and e.profile.purpose is purpose
                and e.profile.stack_level == profile.stack_level
            )
        ]
        if replaced:
            self._entries = [e for e in self._entries if e.profile.id not in replaced]
        self._seq += 1
        self._entries.append(self._make_entry(profile, evse_id, self._seq))
        self._reindex()
        return replaced

    def clear(
        self,
        profile_id: int | None = None,
        *,
        evse_id: int | None = None,
        purpose: ChargingProfilePurpose | None = None,
        stack_level: int | None = None,
    ) -> list[int]:
        """Remove profiles; 2.0.1 K10, 1.6 §5.5. Returns the ids removed (may be empty).

        With ``profile_id`` only that profile is removed (other criteria ignored, as in 1.6);
        otherwise every profile matching all the given criteria; with no argument, all.
        """
        if profile_id is not None:
            removed = [e.profile.id for e in self._entries if e.profile.id == profile_id]
        else:
            removed = [
                e.profile.id
                for e in self._entries
                if (evse_id is None or e.evse_id == evse_id)
                and (purpose is None or e.profile.purpose is purpose)
                and (stack_level is None or e.profile.stack_level == stack_level)
            ]
        if removed:
            gone = set(removed)
            self._entries = [e for e in self._entries if e.profile.id not in gone]
            self._reindex()
        return removed

    # ----------------------------------------------------------------- evaluation
    def has_tx_default(self, evse_id: int) -> bool:
        """Whether any TxDefaultProfile applies to ``evse_id`` (on it or on EVSE 0)."""
        return bool(self._index[evse_id].tx_default) if evse_id in self._index else False

    def limit_at(
        self,
        evse_id: int,
        t: datetime,
        *,
        include_tx: bool = True,
        fallback_current_a: float | None = None,
    ) -> Limit:
        """The limit in force on ``evse_id`` at ``t`` (the first period of the composite).

        Args:
            evse_id: EVSE id, or 0 for the station as a whole.
            t: instant (tz-aware UTC).
            include_tx: False evaluates without TxProfiles (what an offline station uses).
            fallback_current_a: if given and neither a TxProfile (when included) nor a
                TxDefaultProfile contributes at ``t``, this per-phase current (A; W = A x
                nominal DC voltage on DC) stands in for them (the fail-safe current).

        Returns:
            :class:`Limit` (current A, power W, phases or None for DC).

        Raises:
            KeyError: unknown EVSE.
        """
        return self._limit(evse_id, _ts(t), None, include_tx, fallback_current_a)

    def composite_schedule(
        self,
        evse_id: int,
        start: datetime,
        duration_s: int,
        unit: ChargingRateUnit | str | None = None,
    ) -> list[CompositePeriod]:
        """Composite schedule of ``evse_id`` over ``[start, start + duration_s)``; K08, 1.6 §5.7.

        Evaluates the stacking rule at every instant where any profile can change (period
        starts, schedule ends, validity bounds, recurrences), rounded up to whole seconds from
        ``start``, and merges equal neighbours, so it equals a per-second evaluation of
        :meth:`limit_at` (with Relative profiles outside a transaction anchored at ``start``).

        Args:
            evse_id: EVSE id or 0 (station).
            start: start of the schedule (tz-aware UTC).
            duration_s: length, seconds (> 0).
            unit: "A" or "W"; None = A for AC, W for DC.

        Returns:
            periods, the first at ``start_period_s == 0``; limits in ``unit``.

        Raises:
            KeyError: unknown EVSE.  ValueError: ``duration_s <= 0``.
        """
        if duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        elec = self._elec(evse_id)
        unit = (
            ChargingRateUnit(unit)
            if unit is not None
            else (ChargingRateUnit.A if elec.kind == "AC" else ChargingRateUnit.W)
        )
        t0 = _ts(start)
        t1 = t0 + duration_s
        idx = self._index[evse_id]
        entries = idx.tx + idx.tx_default + idx.station_max
        rel_anchor = t0
        tx = self._tx.get(evse_id)
        offsets: set[int] = {0}
        for e in entries:
            for b in self._breakpoints(e, t0, t1, tx.start if tx else rel_anchor):
                if not t0 < b < t1:
                    continue
                k = math.ceil(b - t0 - 1e-9)
                if 0 < k < duration_s:
                    offsets.add(k)
        out: list[CompositePeriod] = []
        last: tuple[float, int | None] | None = None
        for k in sorted(offsets):
            lim = self._limit(evse_id, t0 + k, rel_anchor, True, None)
            if elec.kind == "AC":
                value = lim.current_a if unit is ChargingRateUnit.A else lim.power_w
            else:
                value = lim.power_w if unit is ChargingRateUnit.W else lim.current_a
            key = (value, lim.phases)
            if key != last:
                out.append(CompositePeriod(k, value, lim.phases))
                last = key
        return out

    # ----------------------------------------------------------------- internals
    def _elec(self, evse_id: int) -> EvseElectrical:
        if evse_id == 0:
            return self._evses0
        return self._evses[evse_id]

    def _make_entry(
        self, p: ChargingProfile, evse_id: int, seq: int, elec: EvseElectrical | None = None
    ) -> _Entry:
        """Precompute ``p`` installed on ``evse_id``, its limits in ``elec``'s domain."""
        elec = elec or self._elec(evse_id)
        s = p.schedule
        values: list[tuple[float, int]] = []
        ops: list[Operation] = []
        for per in s.periods:
            ops.append(_operation(per, s.charging_rate_unit, elec))
            if elec.kind == "AC":
                n = min(per.number_phases or 3, elec.phases)
                if s.charging_rate_unit is ChargingRateUnit.A:
                    values.append((float(per.limit), n))
                else:
                    values.append((per.limit / (elec.voltage_v * n), n))
            else:
                w = (
                    per.limit
                    if s.charging_rate_unit is ChargingRateUnit.W
                    else (per.limit * elec.dc_voltage_v)
                )
                values.append((float(w), 0))
        recurrence = 0.0
        if p.kind is ChargingProfileKind.RECURRING:
            recurrence = _DAY_S if p.recurrency is RecurrencyKind.DAILY else _WEEK_S
        duration = float(s.duration_s) if s.duration_s is not None else _INF
        if recurrence:
            duration = min(duration, recurrence)
        return _Entry(
            profile=p,
            evse_id=evse_id,
            seq=seq,
            valid_from=_ts(p.valid_from) if p.valid_from else -_INF,
            valid_to=_ts(p.valid_to) if p.valid_to else _INF,
            anchor=_ts(s.start_schedule) if s.start_schedule else 0.0,
            recurrence_s=recurrence,
            duration=duration,
            starts=tuple(float(per.start_period_s) for per in s.periods),
            values=tuple(values),
            ops=tuple(ops),
        )

    def _reindex(self) -> None:
        index: dict[int, _Index] = {i: _Index() for i in (0, *self._evses)}
        station_wide = [e for e in self._entries if e.evse_id == 0]
        for evse_id, ix in index.items():
            own = [e for e in self._entries if e.evse_id == evse_id]
            if evse_id != 0:
                # Station-wide profiles re-expressed in this EVSE's electrical domain.
                elec = self._evses[evse_id]
                own += [self._make_entry(e.profile, 0, e.seq, elec) for e in station_wide]
            for e in own:
                purpose = e.profile.purpose
                if purpose is ChargingProfilePurpose.TX:
                    ix.tx.append(e)
                elif purpose is ChargingProfilePurpose.TX_DEFAULT:
                    ix.tx_default.append(e)
                elif e.evse_id == 0:
                    ix.station_max.append(e)
            # Preference order: stack level, then EVSE-specific over EVSE 0, then newest.
            for lst in (ix.tx, ix.tx_default, ix.station_max):
                lst.sort(key=lambda e: (e.profile.stack_level, e.evse_id != 0, e.seq), reverse=True)
        self._index = index

    def operation_at(self, evse_id: int, t: datetime, *, include_tx: bool = True) -> Operation:
        """The 2.1 operation mode in force on ``evse_id`` at ``t`` (W at the meter).

        Taken from the period in force of the profile that sets the limit (TxProfile, else
        TxDefaultProfile, by the same stacking rule as :meth:`limit_at`); ChargingOnly when
        none contributes. A ChargingStationMaxProfile caps charging only (its limit).

        Raises:
            KeyError: unknown EVSE.
        """
        ts = _ts(t)
        idx = self._index[evse_id]
        tx = self._tx.get(evse_id)
        anchor = tx.start if tx else ts
        lists = ([idx.tx] if include_tx else []) + [idx.tx_default]
        for entries in lists:
            for e in entries:
                i = self._period_index(e, ts, anchor)
                if i is not None:
                    return e.ops[i] if e.ops else _CHARGING_ONLY
        return _CHARGING_ONLY

    @staticmethod
    def _period_index(e: _Entry, t: float, rel_anchor: float) -> int | None:
        if t < e.valid_from or t >= e.valid_to:
            return None
        kind = e.profile.kind
        if kind is ChargingProfileKind.ABSOLUTE:
            a = e.anchor
        elif kind is ChargingProfileKind.RECURRING:
            a = e.anchor + math.floor((t - e.anchor) / e.recurrence_s) * e.recurrence_s
        else:
            a = rel_anchor
        x = t - a
        if x < 0 or x >= e.duration:
            return None
        return bisect_right(e.starts, x) - 1

    @staticmethod
    def _value(e: _Entry, t: float, rel_anchor: float) -> tuple[float, int] | None:
        i = ProfileStore._period_index(e, t, rel_anchor)
        return None if i is None else e.values[i]

    def _best(self, entries: list[_Entry], t: float, rel_anchor: float) -> tuple[float, int] | None:
        for e in entries:  # sorted by preference
            v = self._value(e, t, rel_anchor)
            if v is not None:
                return v
        return None

    def _limit(
        self,
        evse_id: int,
        t: float,
        rel_anchor: float | None,
        include_tx: bool,
        fallback_current_a: float | None,
    ) -> Limit:
        elec = self._elec(evse_id)
        idx = self._index[evse_id]
        tx = self._tx.get(evse_id)
        anchor = tx.start if tx else (t if rel_anchor is None else rel_anchor)
        ac = elec.kind == "AC"
        # Hardware limit, in the EVSE's domain: (A per phase, phases) for AC, (W, 0) for DC.
        value = elec.max_current_a if ac else elec.max_power_w
        phases = elec.phases if ac else 0
        chosen = None
        if include_tx and idx.tx:
            chosen = self._best(idx.tx, t, anchor)
        if chosen is None and idx.tx_default:
            chosen = self._best(idx.tx_default, t, anchor)
        if chosen is None and fallback_current_a is not None:
            chosen = (
                (fallback_current_a, elec.phases)
                if ac
                else (fallback_current_a * elec.dc_voltage_v, 0)
            )
        if chosen is not None:
            value = min(value, chosen[0])
            phases = min(phases, chosen[1])
        if idx.station_max:
            mx = self._best(idx.station_max, t, anchor)
            if mx is not None:
                value = min(value, mx[0])
                phases = min(phases, mx[1])
        if ac:
            return Limit(value, value * elec.voltage_v * phases, phases)
        return Limit(value / elec.dc_voltage_v, value, None)

    @staticmethod
    def _breakpoints(e: _Entry, t0: float, t1: float, rel_anchor: float) -> Iterable[float]:
        yield e.valid_from
        yield e.valid_to
        kind = e.profile.kind
        if kind is ChargingProfileKind.RECURRING:
            r = e.recurrence_s
            n0 = math.floor((t0 - e.anchor) / r)
            n1 = math.floor((t1 - e.anchor) / r)
            anchors: Iterable[float] = (e.anchor + n * r for n in range(n0, n1 + 1))
        elif kind is ChargingProfileKind.ABSOLUTE:
            anchors = (e.anchor,)
        else:
            anchors = (rel_anchor,)
        for a in anchors:
            for s in e.starts:
                yield a + s
            yield a + e.duration


def _operation(
    per: ChargingSchedulePeriod, unit: ChargingRateUnit, elec: EvseElectrical
) -> Operation:
    """A period's 2.1 operation with set-point and discharge limit as W at the meter."""
    if per.operation_mode is OperationMode.CHARGING_ONLY and per.setpoint is None:
        return _CHARGING_ONLY

    def watts(v: float | None) -> float | None:
        if v is None:
            return None
        if unit is ChargingRateUnit.W:
            return float(v)
        if elec.kind == "AC":
            n = min(per.number_phases or 3, elec.phases)
            return v * elec.voltage_v * n
        return v * elec.dc_voltage_v

    return Operation(per.operation_mode, watts(per.setpoint), watts(per.discharge_limit))
