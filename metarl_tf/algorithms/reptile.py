"""Reptile (Nichol, Achiam & Schulman 2018, arXiv:1803.02999), batched version.

For a meta-batch of ``B`` tasks, each adapted by ``k`` SGD steps on its own data (no outer gradient
flows through them)::

    W_i    = SGD_k(theta, task i)
    theta <- theta + epsilon * (1/B sum_i W_i - theta)

``epsilon`` is annealed linearly from ``outer_step_size`` to 0 over ``anneal_steps`` meta-steps
(0 = constant), as in the paper and Schulman's sine-wave demo.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf._checks import check_bool, check_float, check_int
from metarl_tf.algorithms.maml import MAMLLearner
from metarl_tf.core import RegressionTaskDistribution
from metarl_tf.params import mse


@dataclasses.dataclass(frozen=True)
class ReptileConfig:
    """Reptile settings; inner loop after Schulman's sine demo (5 SGD steps).

    The demo's rate, 0.02, suits its tanh network; with the MAML ReLU network a task's 5-step
    inner loop occasionally diverges at 0.02 and the average carries the blow-up into the shared
    weights (seen at K=5 and K=10, docs/notes/benchmarks/maml_sinusoid_quality_extra.txt), so the
    default is 0.01, which was stable in every run.
    """

    meta_batch_size: int = 25  # Tasks per meta-step.
    num_support: int = 10  # K: points per task the inner loop trains on (and adapts on at test).
    num_query: int = 10  # Query points per task, used only for the logged post-adaptation loss.
    inner_steps: int = 5  # SGD steps per task during meta-training.
    inner_lr: float = 0.01  # Inner SGD rate (the sine demo: 0.02, see above).
    outer_step_size: float = 0.1  # epsilon at step 0.
    anneal_steps: int = 0  # Linear decay of epsilon to 0 over this many meta-steps; 0 = constant.
    jit_compile: bool = True  # Compile the meta-step with XLA.
    steps_per_execution: int = 50  # Meta-steps per compiled call.

    def __post_init__(self):
        for name in ("meta_batch_size", "num_support", "num_query", "inner_steps",
                     "steps_per_execution"):
            check_int(self, name)
        check_int(self, "anneal_steps", minimum=0)
        check_float(self, "inner_lr")
        check_float(self, "outer_step_size", high=1.0)
        check_bool(self, "jit_compile")

    @property
    def first_order(self) -> bool:
        return True

    @property
    def query_every_step(self) -> bool:
        """The logged query loss is the one after the last inner step (as MAML's default)."""
        return False


def reptile_direction(theta, adapted):
    """``theta - mean_i adapted_i`` per parameter tensor (``adapted``: ``[B, *shape]``).

    The update is ``theta <- theta - epsilon * direction = theta + epsilon (mean_i W_i - theta)``.
    """
    return [t - tf.reduce_mean(w, axis=0) for t, w in zip(theta, adapted)]


class ReptileLearner(MAMLLearner):
    """Batched Reptile. Shares MAML's task sampling, evaluation and checkpointing; replaces the step."""

    def __init__(self, model: keras.Model, tasks: RegressionTaskDistribution, config: ReptileConfig,
                 seed: int = 0, strategy: tf.distribute.Strategy | None = None):
        super().__init__(model, tasks, config, seed=seed, strategy=strategy)

    def _make_optimizer(self, optimizer):
        return None  # The outer update is Reptile's own formula (see ``apply``).

    def step_size(self):
        cfg = self.config
        eps = tf.constant(cfg.outer_step_size, tf.float32)
        if cfg.anneal_steps:
            frac = tf.cast(self.step_counter, tf.float32) / float(cfg.anneal_steps)
            eps = eps * tf.maximum(0.0, 1.0 - frac)
        return eps

    def grads(self, batch, scale=1.0):
        """Reptile's direction ``theta - mean_i W_i`` (times ``scale``), so that ``apply`` gives
        ``theta + epsilon (mean_i W_i - theta)``; no gradient flows through the inner loop."""
        theta = self.fmodel.params()
        params = self.fmodel.tile(theta, tf.shape(batch.support_x)[0])
        support_loss = lambda p: mse(self.fmodel.apply_batched(p, batch.support_x), batch.support_y)
        adapted = adaptation.adapt(support_loss, params, self.update_rule(), self.config.inner_steps,
                                   first_order=True)
        query_loss = mse(self.fmodel.apply_batched(adapted.params, batch.query_x), batch.query_y)
        direction = [scale * d for d in reptile_direction(theta, adapted.params)]
        return tf.reduce_mean(query_loss), tf.reduce_mean(adapted.support_loss), direction

    def apply(self, grads) -> None:
        eps = self.step_size()
        for var, g in zip(self.fmodel.variables, grads):
            var.assign_sub(eps * g)
