"""Meta-SGD (Li et al. 2017, arXiv:1707.09835): MAML with a learned rate for every parameter.

::

    theta_i' = theta - alpha (*) grad_theta L_S_i(theta)            (alpha: same shape as theta)
    (theta, alpha) <- Adam((theta, alpha), grad 1/B sum_i L_Q_i(theta_i'))

The rates are meta-parameters: the outer gradient reaches them through the inner update. They are
initialised uniformly in ``rate_init_range`` (the paper draws them from [0.005, 0.1]).
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.algorithms.maml import MAMLConfig, MAMLLearner


@dataclasses.dataclass(frozen=True)
class MetaSGDConfig(MAMLConfig):
    """Meta-SGD settings: MAML's, plus the range the per-parameter rates start in."""

    rate_init_range: tuple[float, float] = (0.005, 0.1)  # U[low, high] initial rates.
    update_rule: str = "metasgd"  # Always "metasgd" (for other rules use MAMLConfig).

    def __post_init__(self):
        super().__post_init__()
        if self.update_rule != "metasgd":
            raise ValueError("`update_rule` of a MetaSGDConfig must be 'metasgd' (Meta-SGD learns "
                             f"per-parameter rates); got {self.update_rule!r}: for other rules "
                             "use MAMLConfig")
        try:
            low, high = (float(v) for v in self.rate_init_range)
            ok = math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError("`rate_init_range` must be a (low, high) pair with 0 <= low <= high, "
                             f"got {self.rate_init_range!r}")


class MetaSGDLearner(MAMLLearner):
    """MAML with learned per-parameter inner rates (``self.rates``, one tensor per weight tensor)."""

    def _make_extra_variables(self, seed: int) -> None:
        low, high = self.config.rate_init_range
        self.rates = [
            tf.Variable(tf.random.stateless_uniform(v.shape, [seed, 1000 + i], low, high, v.dtype,
                                                        alg="philox"),
                        name=f"rate_{i}")
            for i, v in enumerate(self.fmodel.variables)]
        self.extra_variables = list(self.rates)

    def update_rule(self) -> adaptation.UpdateRule:
        return adaptation.PerParameterSGD(self.rates)
