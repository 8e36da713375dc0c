"""Fault injection for the emulated charging station: which faults are in force when.

A pure model (no I/O): a :class:`StationFaults` holds :class:`StationFault` windows with
absolute UTC start and end; :class:`~devices.charging_station.station.ChargingStation`
asks it, with the injected ``now``, at the few points where a fault changes behaviour.
A window is in force for ``start <= now < end``. The twin gives the windows from the
scenario's ``faults:`` (:mod:`twin.scenario_faults`); the bench converts its offsets
from the bench start.

Fault kinds and what the station does while one is in force:

``link_drop``
    At the window start the station closes its WebSocket (close code 1001, "going
    away") and stays offline: no reconnect attempt is made before the window end. While
    offline it behaves as a real charger does (OCPP 2.0.1 Part 2 K, 1.6 §3.13 Smart Charging):
    TxProfiles are not applied offline, the TxDefaultProfile (else
    ``fail_safe_current_a``) limits the EVSEs, transaction messages are queued. After the
    window it reconnects with its normal back-off (1, 2, 4 ... s plus jitter, counted
    from the drop) and sends its queue.
``delay_responses``
    Every reply to a CALL of the CSMS (CALLRESULT or CALLERROR) is sent ``delay_s``
    seconds of *real* time late (a slow charger; the only real-time element besides the
    response timeout). The request itself is handled at once.
``drop_responses``
    CALLs of the CSMS are neither handled nor answered (a hung firmware task): the CSMS
    must give up after its response timeout (OCPP-J: one outstanding call per direction).
``malformed_frames``
    Every ``every_s`` seconds of injected time (0: every ``advance``) the station sends
    one malformed frame, cycling through ``invalid_json`` (not JSON: the CSMS answers
    CALLERROR RpcFrameworkError / 1.6 FormationViolation with message id ``"-1"``, OCPP
    2.0.1 Part 4 §4.2.3 / OCPP-J 1.6 §4.2.3), ``bad_message_type`` (MessageTypeId 7:
    MessageTypeNotSupported / 1.6 FormationViolation) and ``bad_payload`` (a Heartbeat
    with a property its schema forbids: FormatViolation / 1.6 FormationViolation).
``clock_skew``
    Every timestamp the station sends is offset by ``skew_s`` seconds (negative: its
    clock is behind).
``ignore_profiles``
    SetChargingProfile is accepted, but the EVSEs offer their hardware maximum: the
    vehicle draws its own maximum power (capped by the EVSE rating).
``overshoot``
    The EVSEs offer ``factor`` x the limit of their charging profile, capped by the EVSE
    rating (and the vehicle draws at most its own maximum).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

__all__ = ["FAULT_KINDS", "MALFORMED_KINDS", "FaultKind", "StationFault", "StationFaults"]

FaultKind = Literal[
    "link_drop",
    "delay_responses",
    "drop_responses",
    "malformed_frames",
    "clock_skew",
    "ignore_profiles",
    "overshoot",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

MalformedKind = Literal["invalid_json", "bad_message_type", "bad_payload"]
MALFORMED_KINDS: tuple[MalformedKind, ...] = get_args(MalformedKind)


@dataclass(frozen=True, slots=True)
class StationFault:
    """One fault in force over ``[start, end)``.

    Attributes:
        kind: see the module docstring.
        start / end: the window, tz-aware UTC, ``start < end``.
        delay_s: ``delay_responses``: real-time delay of each reply [s], >= 0.
        skew_s: ``clock_skew``: offset added to every timestamp sent [s].
        factor: ``overshoot``: drawn limit = factor x profile limit, > 0.
        every_s: ``malformed_frames``: period [s] of injected time; 0 = every advance.

    Raises:
        ValueError: naive times, an empty window, or a bad parameter.
    """

    kind: FaultKind
    start: datetime
    end: datetime
    delay_s: float = 0.0
    skew_s: float = 0.0
    factor: float = 1.5
    every_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {FAULT_KINDS}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("fault windows need tz-aware UTC times")
        if not self.start < self.end:
            raise ValueError(f"fault window is empty: {self.start} .. {self.end}")
        if self.delay_s < 0 or self.every_s < 0:
            raise ValueError("delay_s and every_s must be >= 0")
        if self.factor <= 0:
            raise ValueError("factor must be > 0")

    def active(self, now: datetime) -> bool:
        """Whether the fault is in force at ``now``."""
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class StationFaults:
    """The faults of one station; queries take the injected ``now`` (tz-aware UTC).

    When windows of one kind overlap, the first in ``faults`` wins for its parameters.
    """

    faults: tuple[StationFault, ...] = ()

    @classmethod
    def of(cls, faults: Iterable[StationFault]) -> StationFaults:
        """Faults sorted by start (then kind), as given otherwise."""
        return cls(tuple(sorted(faults, key=lambda f: (f.start, f.kind))))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def active(self, kind: FaultKind, now: datetime | None) -> StationFault | None:
        """The first fault of ``kind`` in force at ``now`` (None: none, or no time yet)."""
        if now is None:
            return None
        for f in self.faults:
            if f.kind == kind and f.start <= now < f.end:
                return f
        return None

    def link_down(self, now: datetime | None) -> bool:
        """``link_drop`` in force: stay offline."""
        return self.active("link_drop", now) is not None

    def reply_delay_s(self, now: datetime | None) -> float | None:
        """How to answer a CSMS CALL: None = drop it, else the real-time delay [s]."""
        if self.active("drop_responses", now) is not None:
            return None
        f = self.active("delay_responses", now)
        return 0.0 if f is None else f.delay_s

    def skew_s(self, now: datetime | None) -> float:
        """Offset of the timestamps sent [s] (0 without ``clock_skew``)."""
        f = self.active("clock_skew", now)
        return 0.0 if f is None else f.skew_s

    def offer_kw(self, now: datetime | None, limited_kw: float, hardware_kw: float) -> float:
        """What an EVSE offers [kW] given its profile limit and its hardware maximum.

        ``ignore_profiles``: the hardware maximum; ``overshoot``: ``factor`` x the limit,
        at most the hardware maximum; otherwise the limit.
        """
        if self.active("ignore_profiles", now) is not None:
            return hardware_kw
        f = self.active("overshoot", now)
        if f is not None:
            return min(limited_kw * f.factor, hardware_kw)
        return limited_kw

    def malformed_due(self, now: datetime | None, last: datetime | None) -> bool:
        """Whether a malformed frame is due at ``now`` (``last``: when one was sent)."""
        f = self.active("malformed_frames", now)
        if f is None or now is None:
            return False
        if last is None or last < f.start:
            return True
        return (now - last).total_seconds() >= f.every_s
