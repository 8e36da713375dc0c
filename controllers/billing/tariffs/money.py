"""Money helpers: ISO 4217 minor units, the one rounding rule, cent allocation.

Rounding rule (the only place money is rounded in this package): ROUND_HALF_UP to the
currency's minor unit. The OCPI 2.2.1 tariff examples round half up (the "Complex Tariff
example": 14.125 EUR incl. VAT is shown as 14.13). Intermediate arithmetic is exact
``Decimal`` under :data:`EXACT`, a context with 60 significant digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal

#: Context for the unrounded arithmetic (60 significant digits, no traps on Inexact).
EXACT = Context(prec=60)

#: ISO 4217 minor units that differ from 2 (source: ISO 4217 list, "Minor unit" column).
_MINOR_UNITS: dict[str, int] = {
    "BHD": 3, "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0, "JOD": 3,
    "JPY": 0, "KMF": 0, "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0,
    "TND": 3, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}


def check_currency(code: str) -> str:
    """Return ``code`` if it looks like an ISO 4217 alphabetic code (three capitals).

    Raises:
        ValueError: when ``code`` is not three upper-case ASCII letters.
    """
    if len(code) != 3 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise ValueError(f"currency must be an ISO 4217 code of 3 capitals, got {code!r}")
    return code


def minor_unit(currency: str) -> Decimal:
    """The quantum of one minor unit of ``currency``: ``Decimal('0.01')`` for EUR/USD.

    Raises:
        ValueError: for a malformed currency code.
    """
    digits = _MINOR_UNITS.get(check_currency(currency), 2)
    return Decimal(1).scaleb(-digits)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` half up to the minor unit of ``currency`` (the one rounding rule)."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def allocate(exact: Sequence[Decimal], total: Decimal, currency: str) -> list[Decimal]:
    """Round line amounts so that they sum exactly to the already rounded ``total``.

    Largest-remainder method: every line is first rounded down (towards -inf) to the minor
    unit, then the missing minor units go, one each, to the lines with the largest
    remainders (ties to the earlier line). With ``total = round_money(sum(exact))`` the
    number of missing units is between 0 and ``len(exact)``.

    Raises:
        ValueError: when ``total`` cannot be reached that way (it is not the rounded sum).
    """
    q = minor_unit(currency)
    floors = [a.quantize(q, rounding=ROUND_FLOOR) for a in exact]
    missing = (total - sum(floors, Decimal(0))) / q
    if missing != missing.to_integral_value() or not 0 <= missing <= len(exact):
        raise ValueError(f"total {total} is not the rounded sum of the lines {list(exact)}")
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    out = list(floors)
    for i in order[: int(missing)]:
        out[i] += q
    return out
