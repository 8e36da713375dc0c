"""Bench files: the pydantic model of a field site on the test bench and its loader.

A bench file takes the scenario sections that apply to a field site
(:mod:`twin.scenario`: ``site``, ``controllers``; :mod:`twin.scenario_site`:
``site_devices`` with emulated or physical bindings; :mod:`twin.scenario_grid`: ``grid``)
and adds what only a bench has:

- ``stations``: the station ids the CSMS expects (a real charger connects as
  ``ws://<host>:<port>/<id>``) with their EVSE layout;
- ``csms``: the host and port the CSMS listens on;
- ``emulated_stations``: which of the stations the bench starts itself (in this process,
  or each as a separate OS process of :mod:`hil.station`) and the vehicles plugged into
  them on a simple schedule, in seconds from the bench start;
- ``shadow``: the shadow twin beside the field (tolerances, alarm window, the vehicle
  assumed on physical chargers);
- ``run``: the control step and an optional duration (wall clock).

:func:`load_bench` rejects a bad file before anything starts, with the dotted path of
every bad field and the reason (:class:`twin.scenario.ScenarioError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controllers.csms.config import SecurityConfig
from twin.scenario import (
    STATION_KINDS,
    Controllers,
    ScenarioError,
    Site,
    StationKind,
    format_errors,
    read_yaml,
)
from twin.scenario_billing import Billing
from twin.scenario_faults import BenchFault
from twin.scenario_grid import Grid
from twin.scenario_site import SiteDevices

__all__ = [
    "Bench",
    "BenchCsms",
    "BenchReact",
    "BenchRun",
    "BenchShadow",
    "BenchStation",
    "EmulatedStations",
    "Plug",
    "ShadowVehicle",
    "load_bench",
    "parse_bench",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchStation(_Model):
    """A charging station the CSMS expects, physical or emulated.

    ``id``: the OCPP identity, the last segment of the URL the charger connects to;
    ``kind``: rating of every EVSE (as :data:`twin.scenario.STATION_KINDS`); ``evses``:
    EVSE ids 1..n; ``ocpp_version``: what an emulated station speaks (a physical charger
    picks its subprotocol itself); ``meter_interval_s``: sampled meter values period of an
    emulated station; ``phase_rotation``: OCPP phaseRotation of its EVSEs.

    Credentials of an **emulated** station (the bench connects it with them):
    ``password`` (HTTP Basic, security profiles 1 and 2; 16 to 40 characters as OCPP 2.0.1
    ``BasicAuthPassword``; the CSMS stores only its scrypt hash, computed at start when
    ``csms.security.passwords`` has none for the station), ``tls_cert_file`` /
    ``tls_key_file`` (client certificate with CN = station id, profile 3). A physical
    charger's password is only in ``csms.security.passwords``, as a hash.

    ``faults`` of an **emulated** station (:class:`twin.scenario_faults.BenchFault`): link
    drop, delayed or missing replies, malformed frames, clock skew, ignored or overshot
    profiles, each over ``start_s`` .. ``end_s`` seconds from the bench start.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$")
    kind: StationKind = "ac_22kw"
    evses: int = Field(1, ge=1, le=8)
    ocpp_version: Literal["1.6", "2.0.1", "2.1"] = "2.0.1"
    meter_interval_s: int = Field(10, ge=1)
    phase_rotation: Literal["RST", "STR", "TRS"] = "RST"
    #: EVSEs can discharge (V2G; an emulated station only with ``ocpp_version`` 2.1).
    bidirectional: bool = False
    password: str | None = Field(None, min_length=16, max_length=40)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    faults: list[BenchFault] = Field(default_factory=list)

    @property
    def current_kind(self) -> Literal["AC", "DC"]:
        """AC or DC."""
        return STATION_KINDS[self.kind][0]

    @property
    def max_power_kw(self) -> float:
        """Rated power of each EVSE [kW]."""
        return STATION_KINDS[self.kind][1]


class BenchCsms(_Model):
    """Where the CSMS listens and how stations authenticate.

    ``host`` (``0.0.0.0``: every interface), ``port`` (0: any free port); ``security``:
    the OCPP security profile (:class:`controllers.csms.config.SecurityConfig`: 0 none,
    1 HTTP Basic, 2 TLS + Basic, 3 TLS with client certificates; stations then connect to
    ``wss://``), password hashes of physical chargers and the TLS files.
    """

    host: str = "0.0.0.0"
    port: int = Field(9000, ge=0, le=65535)
    security: SecurityConfig = SecurityConfig()

    @property
    def scheme(self) -> str:
        """``wss`` for profiles 2 and 3, else ``ws``."""
        return "wss" if self.security.profile >= 2 else "ws"


class Plug(_Model):
    """A vehicle on an emulated EVSE: plugged in and out at offsets from the bench start.

    ``evse``: ``"<station id>/<evse id>"``; ``plug_in_s`` / ``plug_out_s`` (None: stays
    until the bench stops); the vehicle's battery, SoC on arrival, target SoC and limits.
    """

    evse: str = Field(pattern=r"^[^/]+/[1-8]$")
    plug_in_s: float = Field(0.0, ge=0)
    plug_out_s: float | None = Field(None, gt=0)
    battery_kwh: float = Field(60.0, gt=0)
    soc: float = Field(0.3, ge=0, le=1)
    target_soc: float = Field(0.9, gt=0, le=1)
    ac_max_power_kw: float = Field(11.0, gt=0)
    ac_phases: Literal[1, 3] = 3
    dc_max_power_kw: float = Field(50.0, ge=0)
    id_token: str = "BENCH-TOKEN"

    @model_validator(mode="after")
    def _window(self) -> Plug:
        if self.plug_out_s is not None and self.plug_out_s <= self.plug_in_s:
            raise ValueError("plug_out_s must be after plug_in_s")
        if self.target_soc <= self.soc:
            raise ValueError("target_soc must be above soc")
        return self

    @property
    def station_id(self) -> str:
        """The station of the EVSE."""
        return self.evse.split("/")[0]

    @property
    def evse_id(self) -> int:
        """The EVSE id."""
        return int(self.evse.split("/")[1])


class EmulatedStations(_Model):
    """Stations the bench starts itself and the vehicles plugged into them.

    ``mode``: ``in_process`` (advanced by the bench loop) or ``process`` (each station a
    separate OS process of ``python -m hil.station``, which connects like a real charger);
    ``tls_ca_file``: the CA the emulated stations trust for the CSMS's server certificate
    (security profiles 2 and 3).
    """

    mode: Literal["in_process", "process"] = "in_process"
    tls_ca_file: str | None = None
    stations: list[str] = Field(default_factory=list)
    vehicles: list[Plug] = Field(default_factory=list)


class ShadowVehicle(_Model):
    """The vehicle the shadow twin assumes on a physical charger (not on the wire).

    ``soc`` is used when the charger reports none; ``target_soc`` where charging stops.
    """

    battery_kwh: float = Field(60.0, gt=0)
    soc: float = Field(0.3, ge=0, lt=1)
    target_soc: float = Field(1.0, gt=0, le=1)
    ac_max_power_kw: float = Field(11.0, gt=0)
    ac_phases: Literal[1, 3] = 3
    dc_max_power_kw: float = Field(150.0, ge=0)


#: residual tolerances of the shadow twin by quantity, in the quantity's unit
DEFAULT_SHADOW_TOLERANCE = {"power_kw": 1.5, "soc": 0.05, "import_kw": 3.0}


class BenchShadow(_Model):
    """The shadow twin beside the field (:mod:`hil.shadow`).

    ``enabled``: run it; ``tolerance``: quantity -> allowed ``|field - twin|`` (EVSE
    ``power_kw``, ``energy_kwh``, ``soc``, ``setpoint_a``; site ``import_kw``,
    ``ev_power_kw``), quantities not named are not monitored; ``window_s``: how long a
    residual must stay beyond tolerance before a ``shadow.divergence`` alarm (longer than
    a meter interval plus a step, or every plug-in raises one); ``vehicle``: the vehicle
    assumed on physical chargers.
    """

    enabled: bool = True
    tolerance: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: dict(DEFAULT_SHADOW_TOLERANCE))
    window_s: float = Field(30.0, ge=0)
    vehicle: ShadowVehicle = ShadowVehicle()


class BenchReact(_Model):
    """Reaction to a meter change between control steps (the bench's fast path).

    With ``meter_poll_s`` set, the site meter's active power alone is read every
    ``meter_poll_s`` seconds; a change of the non-EV load (import minus the EV power the
    CSMS measures) of at least ``threshold_kw`` since the last control step runs a
    control step at once (the DLM's new
    set-points go out without waiting for the next ``run.step_s``). Needs a meter in
    ``site_devices``. ``bench/bench_latency.py`` measures meter change to profile.
    """

    meter_poll_s: float | None = Field(None, ge=0.005, le=60)
    threshold_kw: float = Field(2.0, gt=0)


class BenchRun(_Model):
    """Wall-clock run: control step ``step_s``, ``duration_s`` (None: until Ctrl-C).

    ``record`` (default on): every exchange of the session goes into ``events.parquet``
    with its time: OCPP frames (``ocpp.frame``) and the controllers' Modbus, OPC UA and
    OpenADR exchanges (``exchange.modbus``, ``exchange.opcua``, ``exchange.openadr``,
    payload :meth:`controllers.exchange.Exchange.payload`). ``record_frames`` is its
    former name, still accepted as an alias (both given and different: an error).
    """

    step_s: float = Field(5.0, ge=0.2, le=3600)
    react: BenchReact = BenchReact()
    duration_s: float | None = Field(None, gt=0)
    record: bool = True
    ocpp_response_timeout_s: float = Field(30.0, gt=0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _record_frames_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "record_frames" in data:
            data = dict(data)
            frames = data.pop("record_frames")
            if "record" in data and data["record"] != frames:
                raise ValueError("record_frames is the former name of record: give one")
            data["record"] = frames
        return data

    @property
    def record_frames(self) -> bool:
        """The former name of :attr:`record`."""
        return self.record


class Bench(_Model):
    """A complete, validated bench file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    site: Site
    stations: list[BenchStation] = Field(min_length=1)
    controllers: Controllers = Controllers()
    site_devices: SiteDevices | None = None
    grid: Grid | None = None
    csms: BenchCsms = BenchCsms()
    emulated_stations: EmulatedStations = EmulatedStations()
    shadow: BenchShadow = BenchShadow()
    run: BenchRun = BenchRun()
    billing: Billing | None = None  # see twin.scenario_billing (no dishonest on a bench)

    @model_validator(mode="after")
    def _billing_is_honest(self) -> Bench:
        if self.billing is not None and self.billing.dishonest:
            raise ValueError("billing.dishonest: telemetry is falsified in twin runs only "
                             "(use station faults on an emulated bench station)")
        return self

    @model_validator(mode="after")
    def _react_needs_meter(self) -> Bench:
        if self.run.react.meter_poll_s is not None and self.site_devices is None:
            raise ValueError("run.react.meter_poll_s needs a meter in site_devices")
        return self

    @model_validator(mode="after")
    def _references(self) -> Bench:
        ids = [s.id for s in self.stations]
        if len(set(ids)) != len(ids):
            raise ValueError("stations need distinct ids")
        by_id = {s.id: s for s in self.stations}
        unknown = sorted(set(self.emulated_stations.stations) - set(ids))
        if unknown:
            raise ValueError(f"emulated_stations.stations names unknown stations: "
                             f"{', '.join(unknown)}")
        emulated = set(self.emulated_stations.stations)
        sec = self.csms.security
        for sid in emulated:
            st = by_id[sid]
            if sec.profile in (1, 2) and st.password is None and sid not in sec.passwords:
                raise ValueError(f"stations: {sid}: security profile {sec.profile} needs a "
                                 "password for the emulated station")
            if sec.profile == 3 and st.tls_cert_file is None:
                raise ValueError(f"stations: {sid}: security profile 3 needs tls_cert_file "
                                 "for the emulated station")
        if sec.profile >= 2 and emulated and self.emulated_stations.tls_ca_file is None:
            raise ValueError("emulated_stations.tls_ca_file: needed to trust the CSMS's "
                             f"certificate at security profile {sec.profile}")
        for st in self.stations:
            if st.id not in emulated and st.faults:
                raise ValueError(f"stations: {st.id}: faults are injected into emulated "
                                 "stations only; a physical charger cannot be given faults")
            if st.id not in emulated and (st.password or st.tls_cert_file):
                raise ValueError(f"stations: {st.id}: credentials are only for emulated "
                                 "stations; a physical charger's password goes hashed into "
                                 "csms.security.passwords")
            if sec.profile in (1, 2) and st.id not in emulated and st.id not in sec.passwords:
                raise ValueError(f"csms.security.passwords: no password hash for the "
                                 f"physical station {st.id} (profile {sec.profile})")
        busy: dict[str, list[tuple[float, float]]] = {}
        for plug in self.emulated_stations.vehicles:
            station = by_id.get(plug.station_id)
            if plug.station_id not in emulated or station is None:
                raise ValueError(f"emulated_stations.vehicles: {plug.evse} is not on an "
                                 "emulated station (physical chargers get real vehicles)")
            if plug.evse_id > station.evses:
                raise ValueError(f"emulated_stations.vehicles: {plug.evse}: no such EVSE")
            end = plug.plug_out_s if plug.plug_out_s is not None else float("inf")
            for a, b in busy.get(plug.evse, []):
                if plug.plug_in_s < b and a < end:
                    raise ValueError(f"emulated_stations.vehicles: {plug.evse}: "
                                     "overlapping plug windows")
            busy.setdefault(plug.evse, []).append((plug.plug_in_s, end))
        return self

    def station(self, station_id: str) -> BenchStation:
        """The station with this id."""
        return next(s for s in self.stations if s.id == station_id)

    @property
    def physical_stations(self) -> list[str]:
        """Ids of the stations the bench does not start (real chargers connect)."""
        emulated = set(self.emulated_stations.stations)
        return [s.id for s in self.stations if s.id not in emulated]


def parse_bench(data: Any, source: str = "<bench>",
                base_dir: str | Path | None = None) -> Bench:
    """Validate a mapping (parsed YAML) as a :class:`Bench`.

    ``base_dir``: folder that relative files (``billing`` tariffs) are resolved against.

    Raises:
        ScenarioError: with one ``path: reason`` line per bad field.
    """
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a bench file is a mapping, got {type(data).__name__}")
    try:
        return Bench.model_validate(
            data, context={"base_dir": str(base_dir) if base_dir is not None else None})
    except ValidationError as err:
        raise ScenarioError(f"{source}: invalid bench file\n{format_errors(err)}") from None


def load_bench(path: str | Path) -> Bench:
    """Read and validate a bench YAML file.

    Raises:
        ScenarioError: file missing, YAML syntax error, or invalid fields.
    """
    return parse_bench(read_yaml(path, "bench file"), str(path), Path(path).parent)
