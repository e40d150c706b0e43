"""Validation of frozen-config fields: each error names the field and what was expected.

Lives at the package root so that every module (tasks, networks, rollouts, algorithms) can validate
without import cycles.
"""
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


def check_range(config, name: str) -> None:
    """A ``(low, high)`` pair of finite numbers with ``low < high``."""
    value = getattr(config, name)
    try:
        low, high = value
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                 for v in (low, high)) and low < high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"`{name}` must be a finite (low, high) pair with low < high, got {value!r}")


def check_bool(config, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
