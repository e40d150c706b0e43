"""Mean, 95% interval over training seeds, and the verdict against a target.

With 3-5 seeds the interval is Student's t (``mean +- t_{0.975, n-1} * sd / sqrt(n)``): a bootstrap
over so few values understates the spread, which is why the rliable-style stratified bootstrap is
not used here.
"""
from __future__ import annotations

import math

# t_{0.975, df} for df = 1..30 (two-sided 95%); past 30 the normal quantile 1.96 is close enough.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

MET, MISSED, NOISE, SINGLE, NO_TARGET = ("met", "missed", "within noise", "one seed: no interval",
                                         "no target")


def t_quantile(df: int) -> float:
    if df < 1:
        raise ValueError(f"`df` must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def interval(values) -> tuple[float, float, float]:
    """``(mean, low, high)``: the 95% t-interval of the mean of ``values`` (low = high = mean for
    one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("`values` is empty: no seed has a record")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(values, target: float | None, direction: str) -> str:
    """``met`` when the whole interval is on the good side of ``target``, ``missed`` when it is
    wholly on the bad side, ``within noise`` when it straddles the target.

    ``direction`` is ``"higher"`` (at least the target) or ``"lower"`` (at most the target).
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"`direction` must be 'higher' or 'lower', got {direction!r}")
    if target is None:
        return NO_TARGET
    values = list(values)
    if len(values) < 2:
        return SINGLE
    _, low, high = interval(values)
    if direction == "lower":
        low, high = -high, -low
        target = -target
    if low >= target:
        return MET
    if high < target:
        return MISSED
    return NOISE
