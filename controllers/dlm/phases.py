"""Phase rotation: which site phases an EVSE's phases load.

OCPP 2.0.1 (device model variable ``EVSE.PhaseRotation``, 1.6 ``ConnectorPhaseRotation``)
writes the rotation as three letters: the grid phase (R = L1, S = L2, T = L3) wired to the
station's L1, L2 and L3 in that order. ``RST`` is the standard reference phasing; a
1-phase vehicle on an ``SRT`` EVSE loads site phase L2.
"""

from collections.abc import Sequence

_LETTER_TO_PHASE = {"R": 1, "S": 2, "T": 3}

PHASE_ROTATIONS: tuple[str, ...] = ("RST", "RTS", "SRT", "STR", "TRS", "TSR")
"""The six valid rotations; anything else (``Unknown``, ``NotApplicable``) is unknown."""


def site_phases(
    rotation: str, evse_phases: Sequence[int], site_phase_count: int = 3
) -> tuple[int, ...]:
    """Map EVSE phase indices to the site phases they load.

    Args:
        rotation: OCPP phase rotation, e.g. ``"RST"``; an unknown rotation maps to every
            site phase (worst case: the load is reserved on each phase it might be on).
        evse_phases: the EVSE's phases in use, 1-based (1 = the EVSE's L1).
        site_phase_count: phases of the site (1 or 3); on a 1-phase site all is phase 1.

    Returns:
        Sorted site phase numbers, 1-based, never empty.

    Raises:
        ValueError: an EVSE phase outside 1..3 or no phase at all.
    """
    if not evse_phases or any(p not in (1, 2, 3) for p in evse_phases):
        raise ValueError(f"EVSE phases must be a non-empty subset of 1..3, got {evse_phases!r}")
    if site_phase_count == 1:
        return (1,)
    if rotation not in PHASE_ROTATIONS:
        return tuple(range(1, site_phase_count + 1))
    return tuple(sorted({_LETTER_TO_PHASE[rotation[p - 1]] for p in evse_phases}))
