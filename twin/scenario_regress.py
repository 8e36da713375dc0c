"""Regression fields of a scenario: ``regression:`` and ``tolerances:``.

``regression`` selects the scenario for ``migrid regress`` (:mod:`twin.regress`):
``false`` (default) no, ``true`` in the full set, ``fast`` in the full set and in the
subset CI runs on every commit (``migrid regress --fast``).

``tolerances`` overrides the default tolerance of a KPI (defaults by unit:
:func:`twin.regress.default_tolerance`)::

    tolerances:
      energy_delivered_kwh: {rel: 0.02}          # 2 % of the baseline
      peak_import_kw: {abs: 0.5, rel: 0.01}      # the larger of 0.5 kW and 1 %
      site_import_kwh: {abs: 1.0, better: lower} # and a better direction

A KPI's allowed band is ``max(abs, rel * |baseline|)`` in the KPI's unit; a field left
out of an override counts 0, so ``{rel: 0.02}`` alone has no absolute floor. ``better``
(``higher``, ``lower`` or ``none``) replaces the KPI's built-in better direction.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KpiTolerance", "RegressionFlag"]

#: ``regression:`` values: not a case, a case, a case of the fast CI subset too
RegressionFlag = bool | Literal["fast"]


class KpiTolerance(BaseModel):
    """Allowed deviation of one KPI from its baseline (see the module docstring).

    ``abs``: in the KPI's unit (money: in its currency, e.g. 0.01 = one cent);
    ``rel``: share of ``|baseline|`` (0.01 = 1 %); ``better``: which way is better.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    abs: float = Field(0.0, ge=0)
    rel: float = Field(0.0, ge=0)
    better: Literal["higher", "lower", "none"] | None = None
