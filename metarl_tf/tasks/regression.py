"""Supervised regression task families.

``SinusoidTasks`` is the sinusoid family of the MAML paper (Finn et al. 2017, arXiv:1703.03400,
section 5.1; settings from cbfinn/maml ``data_generator.py``)::

    y = A sin(x - phi),   A ~ U[0.1, 5.0],   phi ~ U[0, pi],   x ~ U[-5, 5]

Any object with the ``RegressionTaskDistribution`` methods (see ``metarl_tf.core``) plugs into the
same learners; ``sample_task_batch`` draws support and query sets for a whole meta-batch at once.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from metarl_tf._checks import check_range
from metarl_tf.core import RegressionTaskDistribution, TaskBatch


@dataclasses.dataclass(frozen=True)
class SinusoidTasks:
    """Sinusoids ``A sin(x - phi)`` with amplitude, phase and input ranges as in the MAML paper."""

    amplitude_range: tuple[float, float] = (0.1, 5.0)  # U[low, high] for A.
    phase_range: tuple[float, float] = (0.0, math.pi)  # U[low, high] for phi.
    input_range: tuple[float, float] = (-5.0, 5.0)  # U[low, high] for x.
    input_dim = 1
    output_dim = 1

    def __post_init__(self):
        for name in ("amplitude_range", "phase_range", "input_range"):
            check_range(self, name)

    def sample_task_params(self, seed, num_tasks):
        s = tf.random.experimental.stateless_split(seed, 2)
        amp = tf.random.stateless_uniform([num_tasks, 1], s[0], *self.amplitude_range,
                                          alg="philox")
        phase = tf.random.stateless_uniform([num_tasks, 1], s[1], *self.phase_range,
                                            alg="philox")
        return tf.concat([amp, phase], axis=1)

    def sample_inputs(self, seed, num_tasks, num_points):
        return tf.random.stateless_uniform([num_tasks, num_points, 1], seed, *self.input_range,
                                           alg="philox")

    def evaluate(self, task_params, x):
        amp = task_params[:, None, 0:1]
        phase = task_params[:, None, 1:2]
        return amp * tf.sin(x - phase)


def sample_task_batch(tasks: RegressionTaskDistribution, seed, num_tasks: int, num_support: int,
                      num_query: int) -> TaskBatch:
    """Draws ``num_tasks`` tasks and, for each, ``num_support + num_query`` points.

    As in cbfinn/maml, each task's points are drawn together and split: the first ``num_support``
    feed the inner loop, the rest score the adapted model.

    Args:
      tasks: a task distribution.
      seed: stateless seed, int tensor of shape ``[2]``.
      num_tasks, num_support, num_query: static sizes.
    """
    seed = tf.convert_to_tensor(seed)
    s = tf.random.experimental.stateless_split(seed, 2)
    task_params = tasks.sample_task_params(s[0], num_tasks)
    return task_batch_from_params(tasks, s[1], task_params, num_support, num_query)


def task_batch_from_params(tasks: RegressionTaskDistribution, seed, task_params, num_support: int,
                           num_query: int) -> TaskBatch:
    """Support/query points for given tasks (e.g. a fixed held-out set of task parameters)."""
    num_tasks = tf.shape(task_params)[0]
    x = tasks.sample_inputs(seed, num_tasks, num_support + num_query)
    y = tasks.evaluate(task_params, x)
    return TaskBatch(x[:, :num_support], y[:, :num_support], x[:, num_support:],
                     y[:, num_support:], task_params)
