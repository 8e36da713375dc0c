"""Virtual power plant (VPP): flexibility envelopes, aggregation, disaggregation, forecast.

Pure logic, no I/O and no clock: times come in as arguments (tz-aware UTC). See
``controllers/vpp/README.md`` for the model, units, sign convention and fairness rule.
"""

from controllers.vpp.aggregate import (
    Disaggregation,
    DisaggregationError,
    SiteLimits,
    aggregate,
    disaggregate,
)
from controllers.vpp.availability import AvailabilityForecast, availability_forecast
from controllers.vpp.envelope import (
    BessFlex,
    Envelope,
    EvFlex,
    FloatArray,
    battery_energy_kwh,
    bess_envelope,
    ev_envelope,
    feasible,
    tighten,
    violations,
)

__all__ = [
    "AvailabilityForecast",
    "BessFlex",
    "Disaggregation",
    "DisaggregationError",
    "Envelope",
    "EvFlex",
    "FloatArray",
    "SiteLimits",
    "aggregate",
    "availability_forecast",
    "battery_energy_kwh",
    "bess_envelope",
    "disaggregate",
    "ev_envelope",
    "feasible",
    "tighten",
    "violations",
]
