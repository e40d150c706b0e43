"""Step bounds that tell the truth: the largest ``num_steps`` an export may accept.

An exported ``adapt`` takes a run-time step count, but a model is meta-trained for a few steps: a
Meta-SGD model's learned rates (|alpha| of 2-4 on sinusoids) are tuned for the one step it trained
with, and from about 10 steps on its parameters diverge to inf/NaN. A bound typed in by hand (the
CLI's default 1000) promises what the model cannot do. So at export time the candidate counts
``0, 1, ..., requested`` are tried on *validation* tasks, and the bound is the largest count ``n``
such that every count ``m <= n``

* gives a finite mean query loss, and
* is not worse than fewer steps: ``loss(m) <= (1 + tolerance) * min(loss(0), ..., loss(m - 1))``.

The first count that breaks either rule stops the search (a model that got worse at ``m`` steps is
not trusted at more). The curve is one run of the inner loop, each step the library's
``adaptation.inner_step`` (the step the exported ``tf.while_loop`` repeats), scoring the query loss
after every step; the search stops early at the first failure.

Validation tasks: a supervised run draws meta-step ``n``'s tasks with the stateless seed
``(seed, n)``, ``n >= 0``, and its held-out test tasks with ``(seed, -1)``
(``metarl_tf.evaluation.held_out_seed``). The validation tasks here use ``(seed, -2)``
(``VALIDATION_STREAM``): a stream neither training nor the test evaluation draws from.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.params import FunctionalModel, mse
from metarl_tf.tasks.regression import sample_task_batch

# Second element of the stateless seed of validation tasks: training uses n >= 0, test -1.
VALIDATION_STREAM = -2


def validation_seed(seed: int) -> tf.Tensor:
    """The stateless seed ``(seed, -2)`` of a run's validation tasks."""
    return tf.constant([int(seed), VALIDATION_STREAM], tf.int64)


@dataclasses.dataclass(frozen=True)
class StepBoundConfig:
    """How the bound is validated."""

    num_tasks: int = 100  # Validation tasks (their mean query loss is what is compared).
    num_support: int = 10  # Support points per task (the K the model adapts on; MAML sinusoid: 10).
    num_query: int = 100  # Query points per task that score the adapted model.
    tolerance: float = 0.05  # A count may be this fraction worse than the best at fewer steps.

    def __post_init__(self):
        for name in ("num_tasks", "num_support", "num_query"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {v!r}")
        if (isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float))
                or not self.tolerance >= 0.0):
            raise ValueError(f"`tolerance` must be a number >= 0 (inf: only finiteness counts), "
                             f"got {self.tolerance!r}")


@dataclasses.dataclass(frozen=True)
class StepBound:
    """The validated bound and the evidence for it."""

    max_num_steps: int  # The largest count that passed (<= requested).
    requested: int  # The largest count that was tried.
    stopped_by: str  # Why the search stopped: the failing count and rule, or the requested maximum.
    losses: tuple  # Mean validation query MSE after 0, 1, ... steps (up to the failing count).
    config: StepBoundConfig

    def note(self) -> str:
        """One line for the error a larger ``num_steps`` gets."""
        return (f"the largest step count whose adapted query loss stayed finite and within "
                f"{self.config.tolerance:g} of the best at fewer steps on "
                f"{self.config.num_tasks} validation tasks at export ({self.stopped_by})")

    def metadata(self) -> dict:
        shown = sorted({0, 1, 5, 10, self.max_num_steps, len(self.losses) - 1})
        return {"requested": self.requested, "validated": True,
                "validation_tasks": self.config.num_tasks,
                "validation_seed_stream": VALIDATION_STREAM,
                "num_support": self.config.num_support, "num_query": self.config.num_query,
                "tolerance": _json_float(self.config.tolerance), "stopped_by": self.stopped_by,
                "query_mse": {str(k): _json_float(self.losses[k]) for k in shown
                              if k < len(self.losses)}}


def _json_float(x: float):
    return float(x) if math.isfinite(x) else str(x)


def sound_bound(losses, requested: int, tolerance: float) -> tuple[int, str]:
    """The largest count ``n <= requested`` whose losses ``losses[0..n]`` all pass (module doc).

    ``losses`` may be shorter than ``requested + 1`` when the curve stopped at a failure.

    Returns:
      ``(bound, stopped_by)``.
    """
    losses = [float(v) for v in losses]
    if not losses or not math.isfinite(losses[0]):
        raise ValueError("the meta-learned model's own (0-step) validation loss is not finite: "
                         "nothing can be exported")
    best = losses[0]
    for m in range(1, min(requested, len(losses) - 1) + 1):
        if not math.isfinite(losses[m]):
            return m - 1, f"not finite at {m} steps"
        if losses[m] > (1.0 + tolerance) * best:
            return m - 1, (f"at {m} steps the loss {losses[m]:.4g} is worse than {best:.4g} at "
                           "fewer steps")
        best = min(best, losses[m])
    if len(losses) - 1 < requested:
        raise ValueError(f"the curve has {len(losses) - 1} steps and no failure; "
                         f"{requested} were requested")
    return requested, f"the requested maximum {requested}"


def regressor_curve(fmodel: FunctionalModel, params, rule: adaptation.UpdateRule, batch,
                    max_steps: int, tolerance: float) -> np.ndarray:
    """Mean query MSE after ``0, 1, ...`` inner steps on ``batch`` (a ``TaskBatch``), stopping
    after the first count that fails the rules of the module doc (or at ``max_steps``).

    One ``tf.while_loop`` (graph mode) carries the task-batched parameters, the rule's state and
    the losses so far; each iteration is one ``adaptation.inner_step``.
    """
    sx, sy = tf.convert_to_tensor(batch.support_x), tf.convert_to_tensor(batch.support_y)
    qx, qy = tf.convert_to_tensor(batch.query_x), tf.convert_to_tensor(batch.query_y)
    limit = tf.constant(max_steps, tf.int32)
    factor = tf.constant(1.0 + tolerance, tf.float32)

    @tf.function
    def curve(params):
        p = fmodel.tile(params, tf.shape(sx)[0])
        loss = lambda q: mse(fmodel.apply_batched(q, sx), sy)  # noqa: E731
        query = lambda q: tf.reduce_mean(mse(fmodel.apply_batched(q, qx), qy))  # noqa: E731
        first = query(p)
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True).write(0, first)

        def keep_going(i, p, state, best, last, losses):
            return (i < limit) & tf.math.is_finite(last) & (last <= factor * best)

        def body(i, p, state, best, last, losses):
            p, state, _ = adaptation.inner_step(loss, p, rule, state, first_order=True)
            value = query(p)
            return (i + 1, p, state, tf.minimum(best, last), value, losses.write(i + 1, value))

        state = rule.init_state(p)
        out = tf.while_loop(keep_going, body, (tf.constant(0), p, state, first, first, losses))
        return out[-1].stack()

    return curve(list(params)).numpy()


def validate_regressor_steps(fmodel: FunctionalModel, params, rule: adaptation.UpdateRule,
                             tasks, requested: int, seed: int = 0,
                             config: StepBoundConfig = StepBoundConfig()) -> StepBound:
    """The sound step bound of a supervised meta-learner on its task family's validation tasks.

    Args:
      fmodel, params, rule: the network, its meta-learned values and the inner rule (as exported).
      tasks: the run's ``RegressionTaskDistribution``.
      requested: the largest count to try (``metarl export --max-num-steps``).
      seed: the run's seed; validation tasks use ``(seed, -2)``.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"`requested` must be an integer >= 0, got {requested!r}")
    batch = sample_task_batch(tasks, validation_seed(seed), config.num_tasks, config.num_support,
                              config.num_query)
    losses = regressor_curve(fmodel, params, rule, batch, requested, config.tolerance)
    bound, stopped_by = sound_bound(losses, requested, config.tolerance)
    return StepBound(bound, requested, stopped_by, tuple(float(v) for v in losses), config)
