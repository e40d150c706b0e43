"""The interfaces of metarl-tf and the typed containers they exchange.

Four roles, as in the classic meta-learning framework:

* a **task distribution** samples tasks and their data (``metarl_tf.tasks``);
* a **meta-learner** (MAML, Meta-SGD, Reptile, ...) owns the meta-parameters and improves them from
  meta-batches of tasks (``metarl_tf.algorithms``);
* the **task learner** is the inner loop, a pure function from (parameters, task data) to adapted
  parameters (``metarl_tf.adaptation``);
* the **evaluator** scores adaptation on held-out tasks, step by step (``metarl_tf.evaluation``).

Randomness is stateless: every sampling function takes a ``seed``, an int32/int64 tensor of shape
``[2]`` as used by ``tf.random.stateless_*``. Learners derive one seed per meta-step from a base seed
and a step counter, so a run is reproducible and a whole meta-step (sampling included) compiles into
one XLA function.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import tensorflow as tf


class TaskBatch(NamedTuple):
    """Support and query data for a batch of ``T`` tasks (one leading task axis everywhere).

    Attributes:
      support_x: ``[T, K, d_in]`` inputs the inner loop adapts on.
      support_y: ``[T, K, d_out]`` targets for ``support_x``.
      query_x: ``[T, Q, d_in]`` held-out inputs the adapted model is scored on (the meta-loss).
      query_y: ``[T, Q, d_out]`` targets for ``query_x``.
      task_params: ``[T, P]`` the parameters that define each task (e.g. amplitude and phase); kept
        for plotting and analysis, never shown to the learner.
    """

    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
    query_y: tf.Tensor
    task_params: tf.Tensor


@runtime_checkable
class RegressionTaskDistribution(Protocol):
    """A family of functions ``y = f(x; task_params)``: the protocol a user's own family implements.

    Three small batched methods are enough; ``sample_task_batch`` in ``metarl_tf.tasks`` turns any
    implementation into support/query batches, in one tensor op per method for the whole meta-batch::

        class Lines:                      # y = a x + b, a, b ~ U[-1, 1]
            input_dim, output_dim = 1, 1
            def sample_task_params(self, seed, num_tasks):
                return tf.random.stateless_uniform([num_tasks, 2], seed, -1.0, 1.0, alg="philox")
            def sample_inputs(self, seed, num_tasks, num_points):
                return tf.random.stateless_uniform([num_tasks, num_points, 1], seed, -5.0, 5.0,
                                               alg="philox")
            def evaluate(self, task_params, x):
                a, b = task_params[:, None, 0:1], task_params[:, None, 1:2]
                return a * x + b

    All methods must be pure TensorFlow (no NumPy, no Python randomness) so that sampling can run
    inside a compiled meta-step. The built-in families pass ``alg="philox"`` so the algorithm does
    not depend on the device. Note that XLA's Philox bit generator does not reproduce TensorFlow's
    kernel bit for bit: a run is reproducible for a given ``jit_compile`` setting, and the task
    stream changes when that setting changes.
    """

    input_dim: int
    output_dim: int

    def sample_task_params(self, seed: tf.Tensor, num_tasks: int) -> tf.Tensor:
        """Returns ``[num_tasks, P]`` task parameters drawn with the stateless ``seed``."""

    def sample_inputs(self, seed: tf.Tensor, num_tasks: int, num_points: int) -> tf.Tensor:
        """Returns ``[num_tasks, num_points, input_dim]`` inputs drawn with the stateless ``seed``."""

    def evaluate(self, task_params: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """Returns ``[T, N, output_dim]``, the target function of each task at ``x`` ``[T, N, input_dim]``."""


class MetaLearner(Protocol):
    """A meta-learner: owns meta-parameters and a compiled meta-train step.

    The loop it expects (``training.run`` is this loop plus logging and checkpoints)::

        learner = MAMLLearner(model, SinusoidTasks(), MAMLConfig())
        while learner.step < total_steps:
            metrics = learner.train(steps=learner.config.steps_per_execution)
        curve = learner.evaluate(num_tasks=600)          # adaptation curve on held-out tasks

    ``train`` runs ``steps`` meta-steps (task sampling, inner loop, meta-gradient, optimiser update)
    inside compiled functions and returns the last step's metrics as Python floats.
    """

    step: int

    def train(self, steps: int) -> dict[str, float]:
        ...

    def checkpoint_items(self) -> dict[str, tf.Module | tf.Variable]:
        """What a ``tf.train.Checkpoint`` must hold to resume this learner exactly."""
