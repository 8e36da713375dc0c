"""Time fields of scenario files: timezone-aware datetimes, normalised to UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def utc_datetime(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused (ValueError with a hint)."""
    if value.tzinfo is None:
        raise ValueError("needs a time zone (write e.g. 2019-09-02T07:00:00Z)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(utc_datetime)]
"""A pydantic field type: a timezone-aware datetime, stored in UTC."""
