"""Site and DLM configuration (pydantic models, loaded from YAML by the runtime)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Strategy = Literal["llf", "edf", "equal"]


class SiteConfig(BaseModel):
    """The grid connection the EVs share.

    Attributes:
        grid_limit_kw: import limit of the connection [kW], > 0.
        phases: number of site phases (1 or 3).
        voltage_v: phase-to-neutral voltage [V] used to convert power to current.
        safety_margin_kw: capacity kept free at all times [kW].
        non_ev_load_worst_case_kw: non-EV load [kW] assumed when its measurement is stale
            or missing; ``None`` assumes the whole limit (no headroom for EVs at all).
    """

    model_config = ConfigDict(extra="forbid")

    grid_limit_kw: float = Field(gt=0)
    phases: int = Field(default=3, ge=1, le=3)
    voltage_v: float = Field(default=230.0, gt=0)
    safety_margin_kw: float = Field(default=0.0, ge=0)
    non_ev_load_worst_case_kw: float | None = None

    @field_validator("phases")
    @classmethod
    def _one_or_three(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError("a site has 1 or 3 phases")
        return value


class DlmConfig(BaseModel):
    """Parameters of the allocation.

    Attributes:
        strategy: ``llf`` least laxity first (greedy fill after minimums), ``edf`` earliest
            departure first (greedy), ``equal`` water-filling equal share (max-min fair).
        min_current_a: minimum AC current per phase [A]; IEC 61851-1 allows no PWM duty
            cycle below 6 A, so an EVSE gets at least this or 0 (pause).
        hysteresis_a: an increase smaller than this [A per phase] is not sent.
        telemetry_timeout_s: a measurement older than this [s] is stale and counts as worst
            case.
        default_current_a: limit of the TxDefaultProfile installed at boot [A per phase];
            0 makes a new transaction wait for the DLM (fail safe).
        taper_headroom_a: a vehicle drawing clearly less than its set-point is capped at its
            measured current plus this [A per phase].
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "llf"
    min_current_a: float = Field(default=6.0, ge=0)
    hysteresis_a: float = Field(default=1.0, ge=0)
    telemetry_timeout_s: float = Field(default=300.0, gt=0)
    default_current_a: float = Field(default=0.0, ge=0)
    taper_headroom_a: float = Field(default=2.0, ge=0)
