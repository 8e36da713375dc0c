"""Electric-vehicle models with their charging specifications and registration counts.

Source: the ``ev_specs`` data set of :mod:`twin.datasets`: ``ev_specs.json`` and
``ev_specs_v2g_enabled2024.json`` from the ``ev2gym`` 2.0.0 wheel (MIT; cite Orfanoudakis
et al., "EV2Gym: A Flexible V2G Simulator for EV Smart Charging Research and
Benchmarking", IEEE T-ITS 26(2), 2025). The ev2gym authors compiled them from the EVs
registered in the Netherlands (RVO survey); ``number_of_registrations`` is the weight
with which :func:`draw_ev_models` draws a model.

On-board charger phases are not in the files. They are derived from the maximum AC charge
power with :func:`on_board_charger_phases`: up to 7.4 kW (one phase at 32 A and 230 V)
the charger is taken as single-phase, above it as three-phase (11 kW = 3 x 16 A, 22 kW =
3 x 32 A at 230 V).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from twin import data_cache

__all__ = [
    "NOMINAL_PHASE_VOLTAGE_V",
    "SINGLE_PHASE_LIMIT_KW",
    "EvModelSpec",
    "SpecsVariant",
    "draw_ev_models",
    "load_ev_specs",
    "on_board_charger_phases",
]

NOMINAL_PHASE_VOLTAGE_V = 230.0
"""Phase-to-neutral voltage used to turn AC power into current."""
SINGLE_PHASE_LIMIT_KW = 7.4
"""Largest AC charge power taken as single-phase: 32 A x 230 V = 7.36 kW, sold as 7.4 kW."""

SpecsVariant = Literal["ev_specs", "v2g_enabled2024"]
_FILES: dict[str, str] = {
    "ev_specs": "ev_specs.json",
    "v2g_enabled2024": "ev_specs_v2g_enabled2024.json",
}


def on_board_charger_phases(max_ac_charge_power_kw: float) -> Literal[1, 3]:
    """Return the number of phases of an on-board charger from its maximum AC power.

    Rule: ``<= 7.4 kW`` (32 A on one 230 V phase) -> 1, otherwise 3.

    Raises:
        ValueError: negative power.
    """
    if max_ac_charge_power_kw < 0:
        raise ValueError(f"max AC charge power must be >= 0 kW, got {max_ac_charge_power_kw}")
    return 1 if max_ac_charge_power_kw <= SINGLE_PHASE_LIMIT_KW else 3


@dataclass(frozen=True)
class EvModelSpec:
    """Charging specification of one EV model (powers in kW, energy in kWh).

    Attributes:
        model: make and model, e.g. ``"Tesla Model 3"``.
        battery_capacity_kwh: usable battery capacity [kWh].
        max_ac_charge_power_kw: on-board charger limit [kW].
        max_dc_charge_power_kw: peak DC charge power [kW].
        avg_dc_charge_power_kw: average DC charge power over a fast charge [kW].
        ac_v2g: can discharge over AC (bidirectional on-board charger).
        dc_v2g: can discharge over DC (e.g. CHAdeMO V2G).
        max_ac_discharge_power_kw: AC discharge limit [kW] (0 when not ``ac_v2g``).
        max_dc_discharge_power_kw: DC discharge limit [kW] (0 when not ``dc_v2g``).
        registrations: number of registered vehicles, the draw weight.
    """

    model: str
    battery_capacity_kwh: float
    max_ac_charge_power_kw: float
    max_dc_charge_power_kw: float
    avg_dc_charge_power_kw: float
    ac_v2g: bool
    dc_v2g: bool
    max_ac_discharge_power_kw: float
    max_dc_discharge_power_kw: float
    registrations: int

    @property
    def ac_phases(self) -> Literal[1, 3]:
        """On-board charger phases, by :func:`on_board_charger_phases`."""
        return on_board_charger_phases(self.max_ac_charge_power_kw)

    @property
    def max_ac_charge_current_a(self) -> float:
        """AC charge current per phase at the power limit and 230 V [A]."""
        return self.max_ac_charge_power_kw * 1000.0 / (self.ac_phases * NOMINAL_PHASE_VOLTAGE_V)


def _flag(value: Any, field: str, model: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    raise ValueError(f"EV model {model!r}: {field} must be yes/no, got {value!r}")


def _spec(model: str, raw: dict[str, Any]) -> EvModelSpec:
    try:
        ac_discharge = float(raw.get("max_ac_discharge_power", 0.0))
        dc_discharge = float(raw.get("max_dc_discharge_power", 0.0))
        spec = EvModelSpec(
            model=model,
            battery_capacity_kwh=float(raw["battery_capacity"]),
            max_ac_charge_power_kw=float(raw["max_ac_charge_power"]),
            max_dc_charge_power_kw=float(raw["max_dc_charge_power"]),
            avg_dc_charge_power_kw=float(raw.get("avg_dc_charge_power", 0.0)),
            # The 2024 file has no yes/no flags: a discharge power means V2G capable.
            ac_v2g=_flag(raw["ac_v2g"], "ac_v2g", model) if "ac_v2g" in raw else ac_discharge > 0,
            dc_v2g=_flag(raw["dc_v2g"], "dc_v2g", model) if "dc_v2g" in raw else dc_discharge > 0,
            max_ac_discharge_power_kw=ac_discharge,
            max_dc_discharge_power_kw=dc_discharge,
            registrations=int(raw["number_of_registrations"]),
        )
    except KeyError as exc:
        raise ValueError(f"EV model {model!r}: missing field {exc.args[0]!r}") from None
    numbers = (
        spec.battery_capacity_kwh,
        spec.max_ac_charge_power_kw,
        spec.max_dc_charge_power_kw,
        spec.max_ac_discharge_power_kw,
        spec.max_dc_discharge_power_kw,
        spec.registrations,
    )
    if spec.battery_capacity_kwh <= 0 or any(v < 0 for v in numbers):
        raise ValueError(f"EV model {model!r}: capacities, powers and counts must be >= 0")
    return spec


def load_ev_specs(
    variant: SpecsVariant = "ev_specs", *, source: Path | None = None
) -> list[EvModelSpec]:
    """Load the EV models of the ev2gym specification file, in file order.

    Args:
        variant: ``"ev_specs"`` (13 best-selling models in the Netherlands, with their
            real V2G flags: only the Nissan Leaf and the VW ID.4 discharge, over DC) or
            ``"v2g_enabled2024"`` (8 models with registrations of 2024 and the
            hypothesis that all of them discharge, over AC and DC; its V2G flags are
            derived from discharge power > 0).
        source: a JSON file, or a folder holding the variant's file; default: the cached
            data set ``ev_specs``.

    Returns:
        One :class:`EvModelSpec` per model (units in the field names).

    Raises:
        ValueError: unknown variant, or a model with missing or negative fields.
        twin.datasets.DataSetError: the data set is not fetched or its cache is corrupt.
    """
    if variant not in _FILES:
        raise ValueError(f"unknown EV specs variant {variant!r}; known: {', '.join(_FILES)}")
    folder = source if source is not None else data_cache.path("ev_specs")
    file = folder / _FILES[variant] if folder.is_dir() else folder
    raw = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{file}: expected an object of EV models")
    return [_spec(model, fields) for model, fields in raw.items()]


def draw_ev_models(
    rng: np.random.Generator, n: int, specs: Sequence[EvModelSpec] | None = None
) -> list[EvModelSpec]:
    """Draw ``n`` EV models at random, with probability proportional to registrations.

    Deterministic for a given generator state: the same seed gives the same list.

    Args:
        rng: the entity's generator (seeded from the scenario seed).
        n: number of vehicles to draw (>= 0).
        specs: models to draw from; default :func:`load_ev_specs` ``("ev_specs")``.

    Returns:
        ``n`` specs (the same frozen objects may repeat).

    Raises:
        ValueError: negative ``n``; no model, or no registrations at all.
        twin.datasets.DataSetError: default specs and the data set is not fetched.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    models = list(specs) if specs is not None else load_ev_specs()
    weights = np.array([spec.registrations for spec in models], dtype=np.float64)
    if not models or weights.sum() <= 0:
        raise ValueError("need at least one EV model with registrations > 0 to draw from")
    picks = rng.choice(len(models), size=n, p=weights / weights.sum())
    return [models[int(i)] for i in picks]
