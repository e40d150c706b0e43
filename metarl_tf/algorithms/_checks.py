"""Validation of config fields: each error names the field and what was expected."""
from __future__ import annotations

import math


def check_int(config, name: str, minimum: int = 1) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")


def check_float(config, name: str, low: float = 0.0, high: float = math.inf,
                low_inclusive: bool = False) -> None:
    value = getattr(config, name)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= low if low_inclusive else value > low) and value <= high)
    if not ok:
        bracket = "[" if low_inclusive else "("
        raise ValueError(f"`{name}` must be a finite number in {bracket}{low}, {high}], got {value!r}")


def check_bool(config, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
