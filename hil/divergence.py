"""Divergence alarms between a field and its shadow twin: residuals held beyond tolerance.

A residual is ``field - twin`` of one quantity of one entity (``("CS001/1",
"power_kw")``, ``("site", "import_kw")``) at one control step. An alarm is raised when
``|residual| > tolerance`` at every step of an uninterrupted stretch that has lasted at
least ``window_s`` (a persistence filter: a one-step spike at a plug-in, while the twin's
vehicle is not yet plugged, is not an alarm). It is raised once per stretch; when the
residual comes back within tolerance after an alarm, a ``shadow.converged`` follows.
Steps where either side has no value (an SoC the charger does not report) neither start
nor end a stretch.

This is the persistence test of alarm management (ISA-18.2 / IEC 62682 "on-delay"),
applied per quantity, with the tolerance given in the quantity's unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Alarm", "DivergenceMonitor"]


@dataclass(frozen=True)
class Alarm:
    """One alarm transition: ``kind`` ``shadow.divergence`` or ``shadow.converged``.

    ``since`` is when the residual left its tolerance band; ``residual`` is the value at
    the step that raised (or cleared) the alarm, in the quantity's unit.
    """

    kind: str
    entity: str
    quantity: str
    time: datetime
    since: datetime
    residual: float
    field_value: float
    twin_value: float
    tolerance: float
    window_s: float

    def payload(self) -> dict[str, Any]:
        """The run-folder event payload (JSON-ready)."""
        return {
            "entity": self.entity, "quantity": self.quantity,
            "residual": round(self.residual, 6), "field": round(self.field_value, 6),
            "twin": round(self.twin_value, 6), "tolerance": self.tolerance,
            "window_s": self.window_s, "since": self.since.isoformat(),
            "duration_s": round((self.time - self.since).total_seconds(), 3),
        }


@dataclass
class _Stretch:
    since: datetime | None = None
    alarmed: bool = False


@dataclass
class DivergenceMonitor:
    """Per-(entity, quantity) persistence filter over residuals (module docstring).

    Args:
        tolerance: quantity -> allowed ``|field - twin|`` in the quantity's unit;
            quantities not named are not monitored.
        window_s: how long a residual must stay beyond tolerance before the alarm [s].

    Raises:
        ValueError: a negative tolerance or window.
    """

    tolerance: dict[str, float]
    window_s: float
    _state: dict[tuple[str, str], _Stretch] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.window_s < 0 or any(v < 0 for v in self.tolerance.values()):
            raise ValueError("tolerances and window_s must be >= 0")

    @property
    def active(self) -> list[tuple[str, str]]:
        """(entity, quantity) pairs whose alarm is raised now, sorted."""
        return sorted(k for k, s in self._state.items() if s.alarmed)

    def update(self, now: datetime, entity: str, quantity: str,
               field_value: float | None, twin_value: float | None) -> Alarm | None:
        """Feed one step's pair of values; returns an alarm transition or None."""
        tol = self.tolerance.get(quantity)
        if tol is None or field_value is None or twin_value is None:
            return None
        residual = field_value - twin_value
        st = self._state.setdefault((entity, quantity), _Stretch())
        if abs(residual) > tol:
            if st.since is None:
                st.since = now
            if not st.alarmed and (now - st.since).total_seconds() >= self.window_s:
                st.alarmed = True
                return Alarm("shadow.divergence", entity, quantity, now, st.since, residual,
                             field_value, twin_value, tol, self.window_s)
            return None
        since, alarmed = st.since, st.alarmed
        st.since, st.alarmed = None, False
        if alarmed and since is not None:
            return Alarm("shadow.converged", entity, quantity, now, since, residual,
                         field_value, twin_value, tol, self.window_s)
        return None
