"""Column types: exact token amounts and UTC timestamps on SQLite and PostgreSQL.

Amounts are ``decimal.Decimal`` with :data:`AMOUNT_SCALE` decimals, never float:

- PostgreSQL stores them as ``NUMERIC(24, 6)`` (exact);
- SQLite has no exact decimal type (``NUMERIC`` affinity turns ``0.1`` into a REAL), so
  they are stored as a 64-bit INTEGER count of micro-units (``amount * 10**6``); sums and
  comparisons in SQL stay exact, and the range (about 9.2e12 tokens) is ample.

Timestamps are timezone-aware UTC ``datetime`` in Python; naive values are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

AMOUNT_PRECISION = 24
AMOUNT_SCALE = 6
QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)
MAX_AMOUNT = Decimal(10) ** (AMOUNT_PRECISION - AMOUNT_SCALE - 6)  # fits SQLite's int64


def to_amount(value: Decimal | int | str) -> Decimal:
    """Return ``value`` as an exact Decimal with the ledger's scale.

    Raises ValueError for floats, non-finite values, values with more than
    :data:`AMOUNT_SCALE` decimals (the ledger never rounds silently) and out-of-range values.
    """
    if isinstance(value, float | bool):
        raise ValueError(f"amounts are Decimal, never {type(value).__name__}: {value!r}")
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"not an amount: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"amount is not finite: {value!r}")
    q = d.quantize(QUANTUM)
    if q != d:
        raise ValueError(f"amount {value} has more than {AMOUNT_SCALE} decimals")
    if abs(q) >= MAX_AMOUNT:
        raise ValueError(f"amount {value} out of range (|x| < {MAX_AMOUNT})")
    return q


class Amount(TypeDecorator[Decimal]):
    """Exact Decimal amount: NUMERIC(24, 6) on PostgreSQL, micro-unit INTEGER on SQLite."""

    impl = Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """BIGINT micro-units on SQLite, NUMERIC elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        """Decimal to the stored form (exactness checked by :func:`to_amount`)."""
        if value is None:
            return None
        q = to_amount(value)
        if dialect.name == "sqlite":
            return int(q.scaleb(AMOUNT_SCALE))
        return q

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Stored form back to a Decimal with the ledger's scale."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-AMOUNT_SCALE).quantize(QUANTUM)
        return Decimal(value).quantize(QUANTUM)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetime; naive input is refused, output is always UTC-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """Aware datetime to UTC (naive UTC on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: times are timezone-aware UTC")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Stored value back to an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
