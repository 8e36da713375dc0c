"""The ``grid`` section of a scenario: the utility's VTN, its events, the site's answer.

.. code-block:: yaml

    grid:
      price_program:              # PRICE events built from a price data set
        program: ERCOT-DAM-HB_HOUSTON
        dataset: ercot_dam_spp
        settlement_point: HB_HOUSTON
        publish_local: "10:00"    # each operating day published the day before
        timezone: America/Chicago
        from: 2021-02-14T06:00:00Z
        to: 2021-02-17T06:00:00Z
      programs: [...]             # OpenADR programs (programRequest fields, optional id)
      events: [...]               # OpenADR events with publish_at (see devices.vtn.replay)
      response: {simple_shares: {1: 0.75, 2: 0.5, 3: 0}, price_ceiling_per_mwh: null}
      compare_uncontrolled: true  # also run the day uncontrolled, for the saving KPIs

The emulated VTN (``devices/vtn``) publishes the events at their ``publish_at`` times in
simulated time; the VEN (``controllers/ven``) reads them over HTTP with OAuth2 and the
site controls act on what is in force.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twin.scenario_time import UtcDatetime


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceProgram(_Model):
    """A PRICE program built from a day-ahead price data set.

    One event per operating day (local midnight to midnight in ``timezone``) with hourly
    intervals, published at ``publish_local`` the day before (ERCOT's DAM results are
    published by 13:30 CPT; 10:00 is the DAM offer deadline).
    """

    program: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    dataset: Literal["ercot_dam_spp", "nl_day_ahead"]
    settlement_point: str | None = None
    publish_local: str = Field("13:30", pattern=r"^\d{2}:\d{2}$")
    timezone: str = "America/Chicago"
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _window(self) -> PriceProgram:
        if self.to <= self.from_:
            raise ValueError("to must be after from")
        if self.dataset == "ercot_dam_spp" and not self.settlement_point:
            raise ValueError("ercot_dam_spp needs settlement_point")
        return self


class Response(_Model):
    """How the site answers (:class:`controllers.grid_signal.GridResponse`)."""

    simple_shares: dict[int, float] = Field(
        default_factory=lambda: {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.0}
    )
    price_ceiling_per_mwh: float | None = None


class Grid(_Model):
    """The grid section (module docstring).

    ``programs`` and ``events`` follow the grid-event file of the emulated VTN
    (``devices/vtn/replay.py``): OpenADR 3.1.0 ``programRequest`` / ``eventRequest``
    fields, events with a ``publish_at`` time; they are validated when the run starts.
    """

    price_program: PriceProgram | None = None
    programs: list[dict[str, Any]] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)
    response: Response = Response()
    compare_uncontrolled: bool = False
    ven_name: str = "depot-ven"
