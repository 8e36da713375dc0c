"""CSMS configuration (pydantic models, loaded from YAML by the runtime)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controllers.csms.auth import is_hashed
from controllers.dlm import PHASE_ROTATIONS, DlmConfig, SiteConfig


class EvseConfig(BaseModel):
    """What an operator knows about one EVSE (OCPP does not report all of it).

    OCPP 2.0.1 gives EVSE and connector ids (StatusNotification, TransactionEvent), the
    phases a vehicle uses (TransactionEvent ``numberOfPhasesUsed``, per-phase meter
    values) and a cable limit (``cableMaxCurrent``); kind, EVSE rating and how the EVSE is
    wired to the site phases sit in the device model (``EVSE.PhaseRotation``,
    ``EVSE.Power``) or only in the installer's documentation. The site configuration is
    therefore the source for them; what the protocol reports narrows it further.

    Attributes:
        evse_id: EVSE id (OCPP 1.6: connector id), >= 1.
        kind: ``"AC"`` or ``"DC"``.
        max_current_a: AC rating per phase [A]; default derived from ``max_power_kw``.
        max_power_kw: DC rating [kW] (AC: alternative to ``max_current_a``).
        min_power_kw: DC minimum power [kW].
        phases: phases wired to the EVSE (1 or 3; DC chargers load all site phases).
        phase_rotation: OCPP phase rotation (``RST`` ...); anything else is unknown and a
            1-phase vehicle is then reserved on every site phase (worst case).
        bidirectional: the EVSE can discharge (V2G); used only with an OCPP 2.1 station,
            see :meth:`controllers.csms.Csms.set_evse_setpoint_kw`.
    """

    model_config = ConfigDict(extra="forbid")

    evse_id: int = Field(ge=1)
    kind: Literal["AC", "DC"] = "AC"
    max_current_a: float | None = Field(default=None, gt=0)
    max_power_kw: float | None = Field(default=None, gt=0)
    min_power_kw: float = Field(default=1.0, ge=0)
    phases: int = Field(default=3, ge=1, le=3)
    phase_rotation: str = "RST"
    bidirectional: bool = False

    @model_validator(mode="after")
    def _rating_given(self) -> "EvseConfig":
        if self.kind == "DC" and self.max_power_kw is None:
            raise ValueError("a DC EVSE needs max_power_kw")
        if self.kind == "AC" and self.max_current_a is None and self.max_power_kw is None:
            raise ValueError("an AC EVSE needs max_current_a or max_power_kw")
        if self.phase_rotation not in PHASE_ROTATIONS and self.phase_rotation not in (
            "Unknown",
            "NotApplicable",
        ):
            raise ValueError(f"phase_rotation must be one of {PHASE_ROTATIONS} or Unknown")
        return self

    def ac_max_current_a(self, voltage_v: float) -> float:
        """AC rating per phase [A] (from ``max_power_kw`` when no current is given)."""
        if self.max_current_a is not None:
            return self.max_current_a
        assert self.max_power_kw is not None
        return self.max_power_kw * 1000.0 / (self.phases * voltage_v)


class SecurityConfig(BaseModel):
    """OCPP security profile of the CSMS (2.0.1 Part 2 A00; 1.6 Security Whitepaper).

    See :mod:`controllers.csms.security` for what each profile checks.

    Attributes:
        profile: 0 = none (``ws://``; HTTP Basic only for stations in
            ``CsmsConfig.station_passwords``), 1 = HTTP Basic over ``ws://``, 2 = TLS
            (server certificate) + HTTP Basic, 3 = TLS with client certificates.
        passwords: station id -> scrypt hash from
            :func:`controllers.csms.security.hash_password` (plain text is rejected);
            required for every station in profiles 1 and 2.
        tls_cert_file: PEM server certificate (chain), profiles 2 and 3.
        tls_key_file: PEM private key of the server certificate, profiles 2 and 3.
        tls_ca_file: PEM CA bundle the station certificates must chain to, profile 3.
    """

    model_config = ConfigDict(extra="forbid")

    profile: Literal[0, 1, 2, 3] = 0
    passwords: dict[str, str] = {}
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "SecurityConfig":
        plain = sorted(sid for sid, h in self.passwords.items() if not is_hashed(h))
        if plain:
            raise ValueError(
                f"passwords must be scrypt hashes (controllers.csms.security.hash_password), "
                f"not plain text, for {plain}"
            )
        if self.profile >= 2 and (self.tls_cert_file is None or self.tls_key_file is None):
            raise ValueError(f"profile {self.profile} needs tls_cert_file and tls_key_file")
        if self.profile == 3 and self.tls_ca_file is None:
            raise ValueError("profile 3 needs tls_ca_file (CA of the station certificates)")
        return self


class CsmsConfig(BaseModel):
    """Everything the CSMS needs.

    Attributes:
        site: grid connection shared by the EVSEs.
        dlm: allocation parameters.
        known_stations: station ids allowed to connect; empty = allow all.
        station_passwords: HTTP Basic passwords per station id (OCPP security profile 1),
            plain or already hashed (``scrypt$...`` from
            :func:`controllers.csms.auth.hash_password`); hashed at start-up, only hashes
            are kept. Kept for profile 0; with a ``security`` profile use
            ``security.passwords``.
        security: OCPP security profile, password hashes, TLS files
            (:class:`SecurityConfig`; default profile 0, plain ``ws://``).
        heartbeat_interval_s: interval returned in BootNotification [s].
        response_timeout_s: how long a CSMS request waits for its reply [s].
        record_frames: emit every OCPP frame as an ``ocpp.frame`` event.
        evses: static EVSE layout per station id (see :class:`EvseConfig`).
        unknown_evse_max_current_a: rating assumed for an EVSE missing from ``evses``
            [A per phase], AC, 3 phases, unknown rotation.
        station_max_current_a: per station id, a ChargingStationMaxProfile limit [A per
            phase] installed at boot; none when absent.
        allowed_id_tokens: id tokens accepted by Authorize/TransactionEvent; empty =
            accept all.
        clock_skew_tolerance_s: a station timestamp further than this from the CSMS's
            ``now`` [s] flags the station's clock as skewed (``station.clock_skew``); its
            meter values are then timed by the CSMS's receive time.
        profile_violation_grace_s: a meter value counts against a set-point only when it
            was taken at least this long after the set-point was sent [s]: one meter
            interval plus the response time of the station.
        profile_violation_tolerance_kw / profile_violation_tolerance_share: an EVSE
            violates its set-point when it draws more than the set-point's power plus
            ``max(tolerance_kw, share x set-point power)`` [kW, 0..1].
    """

    model_config = ConfigDict(extra="forbid")

    site: SiteConfig
    dlm: DlmConfig = DlmConfig()
    known_stations: list[str] = []
    station_passwords: dict[str, str] = {}
    security: SecurityConfig = SecurityConfig()
    heartbeat_interval_s: int = Field(default=300, gt=0)
    response_timeout_s: float = Field(default=30.0, gt=0)
    record_frames: bool = False
    evses: dict[str, list[EvseConfig]] = {}
    unknown_evse_max_current_a: float = Field(default=32.0, gt=0)
    station_max_current_a: dict[str, float] = {}
    allowed_id_tokens: list[str] = []
    clock_skew_tolerance_s: float = Field(default=60.0, gt=0)
    profile_violation_grace_s: float = Field(default=60.0, ge=0)
    profile_violation_tolerance_kw: float = Field(default=1.0, ge=0)
    profile_violation_tolerance_share: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _one_password_store(self) -> "CsmsConfig":
        both = sorted(set(self.station_passwords) & set(self.security.passwords))
        if both:
            raise ValueError(
                f"stations {both} have a password in both station_passwords and security.passwords"
            )
        return self
