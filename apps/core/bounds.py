"""Integer ranges of the database's columns: a number from outside is checked before it is saved.

A value out of range would otherwise reach the database and fail there (OverflowError on
SQLite, "out of range" on PostgreSQL), turning bad input into an internal error.
"""

from __future__ import annotations

from typing import Any

from apps.core.errors import ServiceError


class BadNumber(ServiceError):
    """A number that is not an integer or lies outside its column's range (gRPC: INVALID_ARGUMENT)."""

    code = "out_of_range"


INT32 = (-(2**31), 2**31 - 1)  # IntegerField
UINT31 = (0, 2**31 - 1)  # PositiveIntegerField
INT64 = (-(2**63), 2**63 - 1)  # BigIntegerField


def optional_int(value: Any, field: str, bounds: tuple[int, int] = INT32) -> int | None:
    """None, or `value` checked by bounded_int."""
    return None if value is None else bounded_int(value, field, bounds)


def bounded_int(value: Any, field: str, bounds: tuple[int, int] = INT32) -> int:
    """`value` as an int within `bounds`, else a BadNumber (a ServiceError) naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadNumber(f"{field} must be an integer", field=field)
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise BadNumber(f"{field} must be an integer", field=field) from None
    if isinstance(value, float) and number != value:
        raise BadNumber(f"{field} must be an integer", field=field)
    low, high = bounds
    if not low <= number <= high:
        raise BadNumber(f"{field} is out of range ({low}..{high})", field=field)
    return number
