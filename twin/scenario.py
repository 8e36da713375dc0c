"""Scenario files: the pydantic model of a depot run and its YAML loader.

A scenario names the site, its charging stations, the real data sets that drive it
(charging sessions, prices), the vehicle model, the controllers' parameters, the run
window and the KPI assertions. :func:`load_scenario` rejects a bad file before anything
starts, with the dotted path of every bad field and the reason (:class:`ScenarioError`).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from twin.scenario_billing import Billing
from twin.scenario_faults import StationFault
from twin.scenario_grid import Grid
from twin.scenario_regress import KpiTolerance, RegressionFlag
from twin.scenario_site import SiteDevices
from twin.scenario_time import UtcDatetime


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message lists ``path: reason`` lines."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_file(value: str | None, info: ValidationInfo) -> str | None:
    """A data file path made absolute against the scenario file's folder.

    The folder comes from the validation context (``base_dir``, set by
    :func:`load_scenario`); without it a relative path is taken from the working folder.
    """
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir")
        path = Path(base) / path if base is not None else path
    return str(path.resolve())


class BaseLoad(_Model):
    """Non-EV base load of the site (building, lighting), measured by the site meter.

    ``constant``: ``power_kw`` all the time. ``daily_profile``: 24 hourly values in kW
    on the site's local clock (``timezone``), hour 0 first. ``series``: a measured
    series in ``file`` (CSV or Parquet with columns ``time``, ``power_kw``; see
    :mod:`twin.inputs.recorded`), relative to the scenario file's folder (stored
    resolved): each value holds from its time until the next one (piecewise constant);
    before the first and after the last time the nearest edge value holds.
    """

    kind: Literal["constant", "daily_profile", "series"] = "constant"
    power_kw: float = Field(0.0, ge=0)
    hourly_kw: list[Annotated[float, Field(ge=0)]] | None = None
    timezone: str = "UTC"
    file: str | None = None
    _series: Any = PrivateAttr(default=None)

    @field_validator("file")
    @classmethod
    def _series_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = resolve_file(value, info)
        if path is not None:
            from twin.inputs.recorded import load_base_load_series

            load_base_load_series(path)
        return path

    @model_validator(mode="after")
    def _profile_shape(self) -> BaseLoad:
        if self.kind == "daily_profile" and (self.hourly_kw is None or len(self.hourly_kw) != 24):
            raise ValueError("daily_profile needs hourly_kw with 24 values")
        if (self.kind == "series") != (self.file is not None):
            raise ValueError("file goes with kind series, and series needs a file")
        if self.file is not None:
            from twin.inputs.recorded import load_base_load_series

            self._series = load_base_load_series(self.file)  # cached: read once
        return self

    def power_kw_at(self, t: datetime) -> float:
        """Base load [kW] in force at ``t`` (tz-aware)."""
        if self._series is not None:
            return float(self._series.at(t))
        if self.kind == "constant" or self.hourly_kw is None:
            return self.power_kw
        from zoneinfo import ZoneInfo

        return self.hourly_kw[t.astimezone(ZoneInfo(self.timezone)).hour]

    @property
    def peak_kw(self) -> float:
        """Largest value the profile can take [kW]."""
        if self._series is not None:
            return float(self._series.peak_kw)
        return max(self.hourly_kw) if self.hourly_kw else self.power_kw


class Site(_Model):
    """Grid connection of the depot.

    ``grid_limit_kw`` is the contracted import limit at the connection point;
    ``voltage_v`` is phase-to-neutral; ``safety_margin_kw`` is kept free by the DLM.
    """

    name: str = "depot"
    grid_limit_kw: float = Field(gt=0)
    phases: Literal[1, 3] = 3
    voltage_v: float = Field(230.0, gt=0)
    safety_margin_kw: float = Field(0.0, ge=0)
    base_load: BaseLoad = BaseLoad()
    timezone: str = "UTC"


StationKind = Literal["ac_11kw", "ac_22kw", "dc_50kw", "dc_150kw"]

#: Rated EVSE power per station kind [kW] and current kind; AC kinds are 3-phase
#: 16 A (11 kW) and 32 A (22 kW) at 230 V phase-to-neutral (IEC 61851-1 mode 3).
STATION_KINDS: dict[str, tuple[Literal["AC", "DC"], float]] = {
    "ac_11kw": ("AC", 11.0),
    "ac_22kw": ("AC", 22.0),
    "dc_50kw": ("DC", 50.0),
    "dc_150kw": ("DC", 150.0),
}


class StationGroup(_Model):
    """A group of identical charging stations.

    ``count`` stations named ``{prefix}{n:03d}`` each with ``evses`` EVSEs of one
    connector; or, with ``ids``, stations with these ids (field ids such as
    ``BENCH-AC-01``; ``count`` is then their number). Single-phase vehicles on AC EVSEs
    are spread over the site phases by rotating the EVSEs' ``phaseRotation`` (RST, STR,
    TRS) in station order. :meth:`station_ids` is the one place that names them.
    """

    prefix: str = Field("CS", pattern=r"^[A-Za-z0-9_-]{1,16}$")
    count: int = Field(1, ge=1, le=5000)
    ids: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$")]] | None = Field(
        None, min_length=1, max_length=5000)
    kind: StationKind = "ac_22kw"
    evses: int = Field(1, ge=1, le=8)
    ocpp_version: Literal["1.6", "2.0.1", "2.1"] = "2.0.1"
    meter_interval_s: int = Field(60, ge=1)
    #: EVSEs can discharge V2G vehicles (OCPP 2.1 only; 1.6 / 2.0.1 stay charge-only).
    bidirectional: bool = False

    @model_validator(mode="before")
    @classmethod
    def _count_of_ids(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("ids"), list):
            if "count" in data and data["count"] != len(data["ids"]):
                raise ValueError(f"count {data['count']} but {len(data['ids'])} ids")
            data = {**data, "count": len(data["ids"])}
        return data

    @field_validator("ids")
    @classmethod
    def _distinct_ids(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None and len(set(ids)) != len(ids):
            raise ValueError("station ids must be distinct")
        return ids

    def station_ids(self) -> list[str]:
        """The group's station ids in order: ``ids``, else ``{prefix}{n:03d}``."""
        if self.ids is not None:
            return list(self.ids)
        return [f"{self.prefix}{n:03d}" for n in range(1, self.count + 1)]


class Sessions(_Model):
    """Recorded charging sessions replayed as arrivals and departures.

    ``dataset``: ``acn_caltech`` or ``acn_jpl`` (ACN-Data, CC BY 4.0). Sessions whose
    arrival lies in the run window are replayed. ``station_map`` maps recorded station
    ids to EVSEs (``"CS001/1"``); ids not mapped are assigned in sorted order, spread
    evenly over the EVSEs (round-robin when there are more ids than EVSEs); an arrival
    at a busy EVSE takes the lowest-numbered free one, and is refused (counted) when
    none is free.

    ``replay_from`` replays the sessions recorded from that time on from the run start
    (every time shifted by ``run.start - replay_from``): real sessions for a run on a day
    the data set does not cover (the ERCOT Uri day of 2021 has no ACN-Data sessions; a
    Monday of 2019 stands in, local clock times kept when both starts are local midnight).

    ``stack_days`` > 1 replays the sessions of that many consecutive days from the run
    start all within the run window, day d shifted back by d days: real arrival patterns
    for a depot larger than the recorded one (used by the benchmarks).

    ``recorded``: the sessions of a field day in ``file`` (CSV or Parquet, columns in
    :mod:`twin.inputs.recorded`; written by ``migrid replay``), relative to the scenario
    file's folder (stored resolved). Each is replayed on its own EVSE (``evse`` must be
    one of the scenario's; no reassignment, a second arrival at a busy EVSE is refused);
    the vehicle comes from the recorded fields (:func:`twin.inputs.recorded.plan_recorded`
    for the defaults), not from ``vehicles``' models; ``station_map``, ``stack_days`` and
    ``replay_from`` do not apply.
    """

    dataset: Literal["acn_caltech", "acn_jpl", "recorded"] = "acn_caltech"
    file: str | None = None
    station_map: dict[str, str] = Field(default_factory=dict)
    stack_days: int = Field(1, ge=1, le=366)
    replay_from: UtcDatetime | None = None

    @field_validator("file")
    @classmethod
    def _sessions_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = resolve_file(value, info)
        if path is not None:
            from twin.inputs.recorded import load_recorded_sessions

            load_recorded_sessions(path)
        return path

    @model_validator(mode="after")
    def _recorded_file(self) -> Sessions:
        if (self.dataset == "recorded") != (self.file is not None):
            raise ValueError("file goes with dataset recorded, and recorded needs a file")
        return self


class FleetModel(_Model):
    """An EV model given in the scenario instead of drawn from the ev2gym specs.

    ``ac_phases``: on-board charger phases; ``weight``: relative share in the draw;
    ``v2g``: bidirectional (discharges only on a bidirectional EVSE of a 2.1 station);
    ``ac_max_discharge_kw`` / ``dc_max_discharge_kw``: its discharge limits at the meter.
    """

    name: str
    battery_capacity_kwh: float = Field(gt=0)
    ac_max_power_kw: float = Field(gt=0)
    ac_phases: Literal[1, 3] = 3
    dc_max_power_kw: float = Field(0.0, ge=0)
    weight: float = Field(1.0, gt=0)
    v2g: bool = False
    ac_max_discharge_kw: float = Field(0.0, ge=0)
    dc_max_discharge_kw: float = Field(0.0, ge=0)


class Vehicles(_Model):
    """How a vehicle is attached to each session.

    Models are drawn per session, weighted by registrations, from the EV model specs of
    the ev2gym package (``ev_specs``; battery capacity, AC and DC charge power). The
    energy a driver needs is the session's requested energy when the driver entered it
    in the ACN app (``claimed``), else its delivered energy (the ACN-Sim convention);
    the vehicle arrives with ``target_soc`` minus that need and stops at ``target_soc``.
    ``fleet`` replaces the drawn models with the scenario's own list (e.g. a depot's
    vans); the data set is then not needed.
    """

    dataset: Literal["ev_specs"] = "ev_specs"
    fleet: list[FleetModel] | None = Field(None, min_length=1)
    target_soc: float = Field(0.9, gt=0, le=1)
    min_arrival_soc: float = Field(0.05, ge=0, lt=1)
    charge_efficiency: float = Field(0.92, gt=0, le=1)
    taper_knee_soc: float = Field(0.8, gt=0, le=1)
    #: V2G floor: discharging never takes a vehicle below this state of charge.
    v2g_min_soc: float = Field(0.2, ge=0, le=1)


class Prices(_Model):
    """Day-ahead prices for the energy-cost KPI.

    ``nl_day_ahead`` (EUR/MWh) or ``ercot_dam_spp`` with a ``settlement_point`` (USD/MWh).
    ``align``: ``utc`` uses the price of the same UTC hour; ``local_clock`` uses the price
    of the same local clock time and date in the market's zone as the site's local time
    (for a site in another market, so that the daily price shape meets the daily load
    shape). ``year_offset`` shifts the price calendar by whole years (same weekday
    alignment is not guaranteed).
    """

    dataset: Literal["nl_day_ahead", "ercot_dam_spp"] = "nl_day_ahead"
    settlement_point: str | None = None
    align: Literal["utc", "local_clock"] = "utc"
    year_offset: int = 0

    @model_validator(mode="after")
    def _settlement_point(self) -> Prices:
        if self.dataset == "ercot_dam_spp" and not self.settlement_point:
            raise ValueError("ercot_dam_spp needs settlement_point, e.g. HB_HOUSTON")
        return self

    @property
    def currency(self) -> str:
        """ISO 4217 currency of the data set."""
        return "USD" if self.dataset == "ercot_dam_spp" else "EUR"

    @property
    def market_timezone(self) -> str:
        """Time zone of the market's delivery calendar."""
        return "America/Chicago" if self.dataset == "ercot_dam_spp" else "Europe/Amsterdam"


class Dlm(_Model):
    """Dynamic load management parameters (see controllers.dlm)."""

    strategy: Literal["llf", "edf", "equal"] = "llf"
    min_current_a: float = Field(6.0, ge=0)
    hysteresis_a: float = Field(1.0, ge=0)
    telemetry_timeout_s: float = Field(300.0, gt=0)
    default_current_a: float = Field(0.0, ge=0)
    taper_headroom_a: float = Field(2.0, ge=0)


class Controllers(_Model):
    """Controllers of the site."""

    dlm: Dlm = Dlm()


class Run(_Model):
    """Run window and clock: ``start`` (UTC), ``duration_h``, control step ``step_s``."""

    start: UtcDatetime
    duration_h: float = Field(gt=0, le=24 * 366)
    step_s: int = Field(60, ge=1, le=3600)
    seed: int = 0
    record_frames: bool = False
    ocpp_response_timeout_s: float = Field(30.0, gt=0)

    @property
    def end(self) -> datetime:
        """End of the run window (UTC)."""
        return self.start + timedelta(hours=self.duration_h)

    @property
    def steps(self) -> int:
        """Number of control steps."""
        return math.ceil(self.duration_h * 3600 / self.step_s)


class Assertion(_Model):
    """A KPI check: the run fails when the KPI is below ``min`` or above ``max``."""

    kpi: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> Assertion:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class Scenario(_Model):
    """A complete, validated scenario."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    site: Site
    stations: list[StationGroup] = Field(min_length=1)
    sessions: Sessions = Sessions()
    vehicles: Vehicles = Vehicles()
    prices: Prices | None = None
    controllers: Controllers = Controllers()
    site_devices: SiteDevices | None = None
    grid: Grid | None = None
    run: Run
    assertions: list[Assertion] = Field(default_factory=list)
    faults: list[StationFault] = Field(default_factory=list)  # see twin.scenario_faults
    billing: Billing | None = None  # see twin.scenario_billing

    @field_validator("billing")
    @classmethod
    def _home_stations(cls, billing: Billing | None, info: ValidationInfo) -> Billing | None:
        known = {sid for g in info.data.get("stations") or [] for sid in g.station_ids()}
        bad = sorted(set(billing.home_stations) - known) if billing is not None else []
        if bad:
            raise ValueError(f"billing.home_stations names unknown stations: {', '.join(bad)}")
        return billing
    regression: RegressionFlag = False  # migrid regress: see twin.scenario_regress
    tolerances: dict[str, KpiTolerance] = Field(default_factory=dict)

    @field_validator("faults")
    @classmethod
    def _fault_stations(
        cls, faults: list[StationFault], info: ValidationInfo
    ) -> list[StationFault]:
        known = {sid for g in info.data.get("stations") or [] for sid in g.station_ids()}
        bad = sorted({f.station for f in faults} - known)
        if bad:
            raise ValueError(f"faults name unknown stations: {', '.join(bad)}")
        return faults

    @field_validator("stations")
    @classmethod
    def _unique_prefixes(cls, groups: list[StationGroup]) -> list[StationGroup]:
        prefixes = [g.prefix for g in groups if g.ids is None]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("station groups need distinct prefixes")
        ids = [sid for g in groups for sid in g.station_ids()]
        if len(set(ids)) != len(ids):
            raise ValueError("station ids must be distinct across groups")
        return groups

    @model_validator(mode="after")
    def _station_map_targets(self) -> Scenario:
        known = {f"{sid}/{evse}" for sid, evses in self.evse_layout() for evse in evses}
        bad = sorted(v for v in self.sessions.station_map.values() if v not in known)
        if bad:
            raise ValueError(f"sessions.station_map names unknown EVSEs: {', '.join(bad)}")
        if self.sessions.file is not None:
            from twin.inputs.recorded import load_recorded_sessions

            evses = load_recorded_sessions(self.sessions.file)["evse"]
            unknown = sorted(set(evses) - known)
            if unknown:
                raise ValueError(f"sessions.file names EVSEs not in stations: "
                                 f"{', '.join(unknown)}")
        return self

    def evse_layout(self) -> list[tuple[str, list[int]]]:
        """Station ids in order with their EVSE ids."""
        out = []
        for group in self.stations:
            for sid in group.station_ids():
                out.append((sid, list(range(1, group.evses + 1))))
        return out

    @property
    def datasets(self) -> list[str]:
        """Names of the public data sets this scenario needs."""
        recorded = self.sessions.dataset == "recorded"  # a file, not a public data set
        names: list[str] = [] if recorded else [self.sessions.dataset]
        if self.vehicles.fleet is None and not recorded:
            names.append(self.vehicles.dataset)
        if self.prices is not None:
            names.append(self.prices.dataset)
        if self.grid is not None and self.grid.price_program is not None:
            names.append(self.grid.price_program.dataset)
        return sorted(set(names), key=names.index)


def format_errors(err: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One ``  dotted.path: reason`` line per error; ``prefix`` is put before each path."""
    lines = []
    for e in err.errors():
        path = ".".join([*prefix, *(str(p) for p in e["loc"])]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def parse_scenario(
    data: Any, source: str = "<scenario>", base_dir: str | Path | None = None
) -> Scenario:
    """Validate a mapping (parsed YAML) as a :class:`Scenario`.

    ``base_dir``: folder that relative data-file paths (``sessions.file``,
    ``site.base_load.file``) are resolved against (default: the working folder).

    Raises:
        ScenarioError: with one ``path: reason`` line per bad field.
    """
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(
            data, context={"base_dir": str(base_dir) if base_dir is not None else None})
    except ValidationError as err:
        raise ScenarioError(f"{source}: invalid scenario\n{format_errors(err)}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    Raises:
        ScenarioError: file missing, YAML syntax error (with line), or invalid fields.
    """
    return parse_scenario(read_yaml(path, "scenario"), str(path), Path(path).parent)


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """The parsed YAML document at ``path``.

    Raises:
        ScenarioError: the file cannot be read (``cannot read <what>``) or is not YAML.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(f"{p}: cannot read {what} ({err.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(f"{p}: not valid YAML: {err}") from None
