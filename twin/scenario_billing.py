"""The ``billing:`` section of a scenario: tariffs, split rule, audit, rewards, dishonesty.

Issue 8, items 2, 4, 5 and 8 wired into runs. When a scenario has a ``billing:`` section,
``migrid run`` bills the run after it (:func:`twin.billing_run.bill_run`): every charging
session is audited (meter energy against the vehicle's reported SoC rise), priced with the
OCPI tariff (CDR, invoice split between driver and fleet), home sessions are reimbursed,
verified sessions earn reward tokens, and the site's utility bill is computed::

    billing:
      currency: USD
      ocpi_tariff: tariffs/caltech_ocpi.json     # or the OCPI 2.2.1 Tariff object inline
      utility_tariff: {...}                      # URDB-style record inline, or a file
      split: {fleet_pays_up_to_kwh: 20}          # or fleet_pays_percent / fleet_pays_up_to_amount
      fleet_id: caltech-fleet
      home_stations: [CB014]                     # sessions there: reimbursed at home_price
      home_price_per_kwh: "0.31"
      audit_threshold: 0.15
      rewards: {token: MGT, rules: [{rule_id: offpeak, kind: deferred_charging, ...}]}
      dishonest:
        - {session: "2_39_79_379_2019-09-09 13:36:50.943581", meter_drift: 1.35}
        - {fraction: 0.02, seed: 7, soc_spoof: 1.6}

``dishonest`` falsifies the telemetry *inside the twin*, on the emulated station's OCPP
path (:class:`devices.charging_station.TelemetryTamper`): the reported energy register
drifts by ``meter_drift`` during the session, the vehicle exaggerates its SoC rise by
``soc_spoof``, or the reported register is rolled back once by ``register_rollback_kwh``
mid-session. The audit must catch them from the telemetry alone.

Money is ``decimal.Decimal``: amounts typed as YAML numbers are taken through their
shortest repr (``0.35`` is ``Decimal('0.35')``, never the binary float's expansion).
Files are resolved against the scenario file's folder and inlined when the scenario is
loaded, so the resolved ``scenario.yaml`` of a run is self-contained.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controllers.billing.audit import DEFAULT_EFFICIENCY, DEFAULT_THRESHOLD
from controllers.billing.invoice import (
    FleetPaysShare,
    FleetPaysUpToAmount,
    FleetPaysUpToKwh,
    SplitRule,
)
from controllers.billing.tariffs.money import check_currency
from controllers.billing.tariffs.ocpi import Tariff
from controllers.billing.tariffs.utility import UtilityTariff
from controllers.ledger.rewards import RewardConfig
from devices.charging_station import TelemetryTamper

__all__ = ["Billing", "Dishonest", "Split", "tamper_plan"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_float(value: object) -> object:
    """A YAML float as the Decimal of its shortest repr (``0.35`` -> ``Decimal('0.35')``).

    The number typed in the file is recovered exactly (up to 15 significant digits), never
    the binary float's expansion.
    """
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


def _document(value: Any, info: ValidationInfo, what: str) -> dict[str, Any]:
    """An inline mapping, or the JSON/YAML file it names (relative to the scenario)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what}: an inline mapping or a file path, got {type(value).__name__}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir")
        path = Path(base) / path if base is not None else path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read {what} file {path}: {err.strerror}") from None
    try:
        # parse_float=str keeps JSON numbers decimal (Decimal(str) later, never binary)
        doc = (json.loads(text, parse_float=str) if path.suffix == ".json"
               else yaml.safe_load(text))
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{what} file {path} is not valid JSON/YAML: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} file {path} does not hold a mapping")
    return doc


def _decimal_numbers(doc: Any) -> Any:
    """Floats of a YAML document as Decimal through their shortest repr (``str``)."""
    if isinstance(doc, float):
        return Decimal(str(doc))
    if isinstance(doc, dict):
        return {k: _decimal_numbers(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_decimal_numbers(v) for v in doc]
    return doc


def _jsonable(doc: Any) -> Any:
    """Decimals back to strings so the document dumps to YAML/JSON losslessly."""
    if isinstance(doc, Decimal):
        return str(doc)
    if isinstance(doc, dict):
        return {k: _jsonable(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_jsonable(v) for v in doc]
    return doc


class Split(_Model):
    """Split of each session's invoice: the fleet pays up to N kWh, a share, or an amount.

    Exactly one of ``fleet_pays_up_to_kwh`` (kWh), ``fleet_pays_percent`` (0..100) or
    ``fleet_pays_up_to_amount`` (in the billing currency, incl. VAT); the driver pays the
    rest (:mod:`controllers.billing.invoice`).
    """

    fleet_pays_up_to_kwh: Money | None = None
    fleet_pays_percent: Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    fleet_pays_up_to_amount: Money | None = None

    _floats = field_validator("fleet_pays_up_to_kwh", "fleet_pays_percent",
                              "fleet_pays_up_to_amount", mode="before")(_no_float)

    @model_validator(mode="after")
    def _one(self) -> Split:
        given = [v for v in (self.fleet_pays_up_to_kwh, self.fleet_pays_percent,
                             self.fleet_pays_up_to_amount) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of fleet_pays_up_to_kwh, fleet_pays_percent, "
                             "fleet_pays_up_to_amount")
        return self

    def rule(self, currency: str) -> SplitRule:
        """The :data:`controllers.billing.invoice.SplitRule` (amounts in ``currency``)."""
        if self.fleet_pays_up_to_kwh is not None:
            return FleetPaysUpToKwh(self.fleet_pays_up_to_kwh)
        if self.fleet_pays_percent is not None:
            return FleetPaysShare(self.fleet_pays_percent)
        assert self.fleet_pays_up_to_amount is not None
        return FleetPaysUpToAmount(self.fleet_pays_up_to_amount, currency)


class Dishonest(_Model):
    """A telemetry falsification of one session (``session``) or of a seeded fraction.

    ``session``: a session id of the run (as in ``session.arrived`` events); or
    ``fraction`` (0..1) of the run's sessions drawn with ``seed`` (sessions in id order).
    What is falsified (at least one): ``meter_drift`` (factor of the reported energy,
    > 0, != 1), ``soc_spoof`` (factor of the reported SoC rise, > 0, != 1),
    ``register_rollback_kwh`` (> 0, once at the 2nd periodic meter sample).
    """

    session: str | None = None
    fraction: float | None = Field(None, gt=0, le=1)
    seed: int = 0
    meter_drift: float | None = Field(None, gt=0)
    soc_spoof: float | None = Field(None, gt=0)
    register_rollback_kwh: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _what(self) -> Dishonest:
        if (self.session is None) == (self.fraction is None):
            raise ValueError("give either session or fraction")
        if self.meter_drift is None and self.soc_spoof is None \
                and self.register_rollback_kwh is None:
            raise ValueError("give meter_drift, soc_spoof or register_rollback_kwh")
        if self.meter_drift == 1.0 or self.soc_spoof == 1.0:
            raise ValueError("a factor of 1 falsifies nothing")
        return self

    def tamper(self) -> TelemetryTamper:
        """The emulated station's :class:`~devices.charging_station.TelemetryTamper`."""
        return TelemetryTamper(
            meter_drift=self.meter_drift or 1.0,
            soc_spoof=self.soc_spoof or 1.0,
            rollback_kwh=self.register_rollback_kwh or 0.0,
        )

    @property
    def kinds(self) -> tuple[str, ...]:
        """What is falsified: ``meter_drift``, ``soc_spoof``, ``register_rollback``."""
        out = []
        if self.meter_drift is not None:
            out.append("meter_drift")
        if self.soc_spoof is not None:
            out.append("soc_spoof")
        if self.register_rollback_kwh is not None:
            out.append("register_rollback")
        return tuple(out)


class Billing(_Model):
    """The ``billing:`` section (see the module docstring).

    ``ocpi_tariff``: OCPI 2.2.1 Tariff object (inline or file). ``utility_tariff``: URDB
    rate record (inline or file; ``time_zone`` defaults to the site's zone, given with
    the record as ``time_zone``). ``audit_threshold``: variance ratio (> 0) at or above
    which a session is flagged; ``efficiency``: grid-to-battery efficiency the audit
    assumes. ``peak_periods``: indices of the utility tariff's energy periods that count
    as peak for the reward rules (default: the periods with the highest first-tier rate).
    ``vehicle_capacity_kwh``: usable battery capacity per id token, for runs whose events
    do not carry it (a bench with physical vehicles); a twin run records it per session.
    """

    currency: str = "USD"
    ocpi_tariff: dict[str, Any]
    utility_tariff: dict[str, Any]
    split: Split = Split(fleet_pays_percent=Decimal(0))
    fleet_id: str = Field("fleet", min_length=1)
    home_stations: list[str] = Field(default_factory=list)
    home_price_per_kwh: Money | None = None
    audit_threshold: float = Field(DEFAULT_THRESHOLD, gt=0)
    efficiency: float = Field(DEFAULT_EFFICIENCY, gt=0, le=1)
    rewards: RewardConfig | None = None
    peak_periods: list[int] | None = None
    dishonest: list[Dishonest] = Field(default_factory=list)
    vehicle_capacity_kwh: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict)

    _home_float = field_validator("home_price_per_kwh", mode="before")(_no_float)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return check_currency(v)

    @field_validator("ocpi_tariff", mode="before")
    @classmethod
    def _ocpi(cls, value: Any, info: ValidationInfo) -> dict[str, Any]:
        doc: dict[str, Any] = _jsonable(_decimal_numbers(_document(value, info, "ocpi_tariff")))
        Tariff.model_validate(doc)  # errors carry the tariff's own field path
        return doc

    @field_validator("utility_tariff", mode="before")
    @classmethod
    def _utility(cls, value: Any, info: ValidationInfo) -> dict[str, Any]:
        doc: dict[str, Any] = _jsonable(
            _decimal_numbers(_document(value, info, "utility_tariff")))
        if not isinstance(doc.get("time_zone", "UTC"), str):
            raise ValueError("utility_tariff.time_zone must be an IANA zone name")
        UtilityTariff.from_urdb(doc, doc.get("time_zone", "UTC"))
        return doc

    @model_validator(mode="after")
    def _consistent(self) -> Billing:
        if self.tariff().currency != self.currency:
            raise ValueError(f"ocpi_tariff is in {self.tariff().currency}, billing in "
                             f"{self.currency}")
        if self.home_stations and self.home_price_per_kwh is None:
            raise ValueError("home_stations need home_price_per_kwh")
        if self.rewards is not None:
            bad = [r.rule_id for r in self.rewards.rules if r.currency != self.currency]
            if bad:
                raise ValueError(f"reward rules {bad} not in {self.currency}")
        n = len(self.utility_tariff.get("energyratestructure") or [])
        if self.peak_periods and any(not 0 <= p < n for p in self.peak_periods):
            raise ValueError(f"peak_periods must be energy period indices 0..{n - 1}")
        return self

    def tariff(self) -> Tariff:
        """The OCPI 2.2.1 tariff that prices the sessions."""
        return Tariff.model_validate(self.ocpi_tariff)

    def utility(self, site_timezone: str) -> UtilityTariff:
        """The site's utility tariff; its zone is the record's ``time_zone`` or the site's."""
        doc = self.utility_tariff
        return UtilityTariff.from_urdb(doc, str(doc.get("time_zone", site_timezone)),
                                       currency=self.currency)

    def utility_tariff_id(self) -> str:
        """The utility tariff's id: its ``label`` (URDB) or ``name``, else ``utility``."""
        return str(self.utility_tariff.get("label") or self.utility_tariff.get("name")
                   or "utility")


def tamper_plan(billing: Billing | None, session_ids: list[str]
                ) -> dict[str, tuple[Dishonest, TelemetryTamper]]:
    """Which sessions of a run are falsified, and how.

    ``session_ids``: every session of the run. A ``session`` entry applies to that id
    (an id not in the run is ignored); a ``fraction`` entry draws
    ``round(fraction * n)`` (at least 1) of the sessions in sorted id order with
    ``numpy.random.default_rng(seed)``. The first entry naming a session wins.

    Returns:
        session id -> (the entry, the station's tamper).
    """
    if billing is None:
        return {}
    ids = sorted(session_ids)
    out: dict[str, tuple[Dishonest, TelemetryTamper]] = {}
    for d in billing.dishonest:
        if d.session is not None:
            chosen = [d.session] if d.session in ids else []
        else:
            assert d.fraction is not None
            k = min(len(ids), max(1, round(d.fraction * len(ids)))) if ids else 0
            picks = np.random.default_rng(d.seed).choice(len(ids), size=k, replace=False)
            chosen = [ids[i] for i in sorted(picks.tolist())]
        for sid in chosen:
            out.setdefault(sid, (d, d.tamper()))
    return out
