"""Shared builders for the market tests (random but seeded depots)."""

from __future__ import annotations

import numpy as np

from controllers.market.lp import AssetSpec, EnergyTarget, flat


def random_evs(rng: np.random.Generator, n: int, *, power_kw: float, e0_kwh: float,
               degradation_per_kwh: float, need_kwh: tuple[float, float]) -> list[AssetSpec]:
    """0-3 EVs over ``n`` intervals: random plugged window at ``power_kw``, 30 % of them
    V2G (symmetric bounds), 0..80 kWh storage from ``e0_kwh``, a departure target drawn
    uniformly from ``need_kwh``; efficiencies 0.9/0.9."""
    assets = []
    for i in range(int(rng.integers(0, 4))):
        arr = int(rng.integers(0, n))
        dep = int(rng.integers(arr + 1, n + 1))
        p_max = np.zeros(n)
        p_max[arr:dep] = power_kw
        p_min = -p_max if rng.random() < 0.3 else np.zeros(n)
        assets.append(AssetSpec(
            f"ev{i}", p_min, p_max, flat(n + 1, 0), flat(n + 1, 80), e0_kwh, 0.9, 0.9,
            degradation_per_kwh, (EnergyTarget(dep, float(rng.uniform(*need_kwh))),),
        ))
    return assets
