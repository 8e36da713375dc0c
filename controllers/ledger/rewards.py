"""Reward rules: grid-supportive actions of a charging session, valued and minted.

A session's activity is a list of intervals with the energy drawn and exported, the price
in force (Decimal per kWh, in the activity's ISO 4217 currency), whether the interval was
peak and whether a demand-response event was active, and optionally the baseline energy
the session would have drawn without control. Each rule computes a quantity of kWh and a
value in currency from those prices; the tokens minted are ``value * rate`` rounded
*down* to the ledger's scale (never over-mint):

- ``deferred_charging``: kWh charged off-peak by a session that was plugged in during a
  peak interval (it could have charged in peak), valued at the off-peak prices in force;
- ``v2g_export``: kWh exported to the grid, valued at the prices in force;
- ``demand_response``: kWh reduced below the baseline during demand-response intervals;
- ``kwh_shifted``: kWh taken out of peak intervals (below baseline) and delivered in
  off-peak ones (above baseline), valued at the peak prices avoided, scaled pro rata when
  less was delivered later than was taken out.

Minting goes from the mint source to the driver's wallet (or the driver's escrow when the
rule set ``hold`` is on, so a fleet manager can release it later), with the deterministic
event id ``reward:{session_id}:{rule_id}``: replaying a stream is idempotent, and every
entry carries its session and rule. Only physics-verified sessions are minted; pending
ones are skipped and minted on a later pass once verified, failed ones never.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controllers.ledger.ledger import AccountRef, JournalEntry, Ledger, Verification
from controllers.ledger.types import QUANTUM

NonNegKwh = Annotated[Decimal, Field(ge=0)]


def _aware(v: datetime) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return v


class Interval(BaseModel):
    """Metered energy of one interval of a session, with the price in force."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: datetime
    end: datetime
    import_kwh: NonNegKwh = Decimal(0)
    export_kwh: NonNegKwh = Decimal(0)
    price_per_kwh: Decimal
    peak: bool = False
    dr_event: bool = False
    baseline_kwh: NonNegKwh | None = None

    _check_start = field_validator("start", "end")(_aware)

    @field_validator("import_kwh", "export_kwh", "price_per_kwh", "baseline_kwh", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            raise ValueError("energies and prices are Decimal (or str/int), never float")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.end <= self.start:
            raise ValueError("interval end must be after start")
        return self


class SessionActivity(BaseModel):
    """What one charging session did, as metered, and its physics-audit outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str = Field(min_length=1)
    driver_id: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    verification: Verification
    ended_at: datetime
    intervals: tuple[Interval, ...]

    _check_end = field_validator("ended_at")(_aware)


class RuleKind(StrEnum):
    """The reward rules."""

    DEFERRED_CHARGING = "deferred_charging"
    V2G_EXPORT = "v2g_export"
    DEMAND_RESPONSE = "demand_response"
    KWH_SHIFTED = "kwh_shifted"


class RewardRule(BaseModel):
    """One rule: ``rate`` tokens per currency unit of value (in ``currency``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str = Field(min_length=1, pattern=r"^[^:]+$")
    kind: RuleKind
    rate: Annotated[Decimal, Field(ge=0)]
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    def measure(self, activity: SessionActivity) -> tuple[Decimal, Decimal]:
        """Return (kWh, value in currency) of ``activity`` under this rule."""
        ivs = activity.intervals
        if self.kind is RuleKind.DEFERRED_CHARGING:
            if not any(iv.peak for iv in ivs):
                return Decimal(0), Decimal(0)
            off = [iv for iv in ivs if not iv.peak]
            return _sum(iv.import_kwh for iv in off), _sum(
                iv.import_kwh * iv.price_per_kwh for iv in off
            )
        if self.kind is RuleKind.V2G_EXPORT:
            return _sum(iv.export_kwh for iv in ivs), _sum(
                iv.export_kwh * iv.price_per_kwh for iv in ivs
            )
        if self.kind is RuleKind.DEMAND_RESPONSE:
            red = [(_reduction(iv), iv.price_per_kwh) for iv in ivs if iv.dr_event]
            return _sum(r for r, _ in red), _sum(r * p for r, p in red)
        taken = [(_reduction(iv), iv.price_per_kwh) for iv in ivs if iv.peak]
        out_kwh = _sum(r for r, _ in taken)
        later = _sum(
            max(Decimal(0), iv.import_kwh - iv.baseline_kwh)
            for iv in ivs
            if not iv.peak and iv.baseline_kwh is not None
        )
        if out_kwh == 0 or later == 0:
            return Decimal(0), Decimal(0)
        shifted = min(out_kwh, later)
        return shifted, _sum(r * p for r, p in taken) * shifted / out_kwh


def _reduction(iv: Interval) -> Decimal:
    if iv.baseline_kwh is None:
        return Decimal(0)
    return max(Decimal(0), iv.baseline_kwh - iv.import_kwh)


def _sum(xs: Iterable[Decimal]) -> Decimal:
    return sum(xs, Decimal(0))


class RewardConfig(BaseModel):
    """The rule set: token code, rules, and whether rewards are held in escrow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(default="MGT", pattern=r"^[A-Z0-9]{2,16}$")
    rules: tuple[RewardRule, ...]
    hold: bool = False

    @model_validator(mode="after")
    def _unique_ids(self) -> RewardConfig:
        ids = [r.rule_id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return self


class Award(BaseModel):
    """The outcome of one rule on one session."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    session_id: str
    rule_id: str
    kwh: Decimal
    value: Decimal
    tokens: Decimal
    status: Literal["minted", "replayed", "skipped_unverified", "skipped_zero", "refused"]
    entry_txn_id: int | None = None


def reward_event_id(session_id: str, rule_id: str) -> str:
    """The deterministic idempotency key of a reward."""
    return f"reward:{session_id}:{rule_id}"


def tokens_for(value: Decimal, rate: Decimal) -> Decimal:
    """Tokens for ``value`` at ``rate``, rounded down to the ledger's scale."""
    return (value * rate).quantize(QUANTUM, rounding=ROUND_DOWN)


def process_session(ledger: Ledger, config: RewardConfig, activity: SessionActivity) -> list[Award]:
    """Apply every rule to one session and mint the awards (idempotent)."""
    awards: list[Award] = []
    for rule in config.rules:
        if rule.currency != activity.currency:
            raise ValueError(
                f"rule {rule.rule_id} prices in {rule.currency}, session "
                f"{activity.session_id} in {activity.currency}"
            )
        kwh, value = rule.measure(activity)
        tokens = tokens_for(value, rule.rate)
        eid = reward_event_id(activity.session_id, rule.rule_id)
        base = dict(
            event_id=eid,
            session_id=activity.session_id,
            rule_id=rule.rule_id,
            kwh=kwh,
            value=value,
            tokens=tokens,
        )
        if activity.verification is not Verification.VERIFIED:
            awards.append(Award(**base, status="skipped_unverified"))
            continue
        if tokens <= 0:
            awards.append(Award(**base, status="skipped_zero"))
            continue
        dst = (AccountRef.escrow if config.hold else AccountRef.wallet)(
            activity.driver_id, config.token
        )
        entry: JournalEntry = ledger.mint(
            eid,
            dst,
            tokens,
            at=activity.ended_at,
            verified=activity.verification,
            session_id=activity.session_id,
            rule_id=rule.rule_id,
            memo=f"{rule.kind}: {kwh} kWh, value {value} {activity.currency}, rate {rule.rate}",
        )
        status = "replayed" if entry.replayed else "minted"
        awards.append(Award(**base, status=status, entry_txn_id=entry.txn_id))
    return awards


def process_stream(
    ledger: Ledger, config: RewardConfig, activities: Sequence[SessionActivity]
) -> list[Award]:
    """Apply the rules to a stream of sessions in order (replaying it changes nothing)."""
    return [a for act in activities for a in process_session(ledger, config, act)]
