"""Evaluation: adaptation curves on held-out tasks, and the "pretrained" baseline.

The protocol follows cbfinn/maml ``test()``: held-out tasks, K support points to adapt on, fresh
query points to score on, the mean loss after 0, 1, ..., N inner steps, with a 95% confidence
interval ``1.96 * std / sqrt(num_tasks)``. Held-out tasks are drawn with the seed ``(seed, -1)``
(test) or ``(seed, -2)`` (validation, for tuning); training draws meta-step ``n`` with
``(seed, n)``, n >= 0, so none share a stream (``metarl_tf.tasks.splits``).
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.core import RegressionTaskDistribution
from metarl_tf.params import FunctionalModel, mse
from metarl_tf.tasks.regression import sample_task_batch
from metarl_tf.tasks.splits import split_seed


def ci95(values) -> float:
    """Half width of the normal 95% interval of the mean of ``values`` (1-D): ``1.96 * std /
    sqrt(n)``, the per-task interval every learner's ``evaluate`` reports."""
    values = np.asarray(values, np.float64).reshape(-1)
    return float(1.96 * values.std() / math.sqrt(max(values.size, 1)))


def held_out_seed(seed: int, split: str = "test") -> tf.Tensor:
    return split_seed(seed, split)


def adaptation_curve(fmodel: FunctionalModel, params, tasks: RegressionTaskDistribution,
                     rule: adaptation.UpdateRule, num_tasks: int = 600, num_support: int = 10,
                     num_query: int = 100, num_steps: int = 10, seed: int = 0,
                     split: str = "test") -> dict:
    """Query MSE on ``num_tasks`` held-out tasks after each of 0..``num_steps`` inner steps.

    ``split`` is ``"test"`` (the final evaluation) or ``"validation"`` (for tuning).

    Returns:
      ``{"mse": [N+1 floats], "ci95": [N+1 floats], "num_tasks": ..., "num_support": ...,
      "num_query": ...}``; ``mse[k]`` is the mean query MSE after ``k`` steps.
    """
    curve = per_task_curve(fmodel, params, tasks, rule, num_tasks, num_support, num_query,
                           num_steps, seed, split)
    return {
        "mse": [float(row.mean()) for row in curve],
        "ci95": [ci95(row) for row in curve],
        "num_tasks": num_tasks, "num_support": num_support, "num_query": num_query,
    }


def per_task_curve(fmodel: FunctionalModel, params, tasks: RegressionTaskDistribution,
                   rule: adaptation.UpdateRule, num_tasks: int = 600, num_support: int = 10,
                   num_query: int = 100, num_steps: int = 10, seed: int = 0,
                   split: str = "test"):
    """The per-task losses behind ``adaptation_curve``: a ``[num_steps + 1, num_tasks]`` array,
    row ``k`` the query MSE of each held-out task after ``k`` steps. Two learners scored with the
    same ``seed`` see the same tasks in the same order, so their rows can be compared task by
    task (a paired difference)."""
    batch = sample_task_batch(tasks, held_out_seed(seed, split), num_tasks, num_support, num_query)
    curve = _curve_fn(fmodel, rule, num_steps)(list(params), batch.support_x, batch.support_y,
                                                batch.query_x, batch.query_y)
    return curve.numpy()


def _curve_fn(fmodel, rule, num_steps):
    @tf.function
    def curve(params, sx, sy, qx, qy):
        p = fmodel.tile(params, tf.shape(sx)[0])
        loss = lambda q: mse(fmodel.apply_batched(q, sx), sy)
        state = rule.init_state(p)
        rows = [mse(fmodel.apply_batched(p, qx), qy)]
        for _ in range(num_steps):
            p, state, _ = adaptation.inner_step(loss, p, rule, state, first_order=True)
            rows.append(mse(fmodel.apply_batched(p, qx), qy))
        return tf.stack(rows)

    return curve


def pretrain_jointly(model: keras.Model, tasks: RegressionTaskDistribution, steps: int,
                     batch_tasks: int = 25, points_per_task: int = 20, learning_rate: float = 1e-3,
                     seed: int = 0) -> list:
    """The "pretrained" baseline of the MAML paper: one network fit to all tasks jointly.

    Plain supervised regression on points from freshly sampled tasks (no inner loop), Adam; the
    result is then fine-tuned per task with ``adaptation_curve`` like any meta-learned init.
    Returns the trained parameters (the model's variables are trained in place).
    """
    fmodel = FunctionalModel(model)
    opt = keras.optimizers.Adam(learning_rate)
    opt.build(fmodel.variables)
    counter = tf.Variable(0, dtype=tf.int64)

    @tf.function(jit_compile=True)
    def run(n):
        loss = tf.constant(0.0)
        for _ in tf.range(n):
            b = sample_task_batch(tasks, tf.stack([tf.constant(seed, tf.int64), counter]),
                                  batch_tasks, points_per_task, 0)
            x = tf.reshape(b.support_x, [-1, tasks.input_dim])
            y = tf.reshape(b.support_y, [-1, tasks.output_dim])
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(fmodel.apply(fmodel.variables, x) - y))
            grads = tape.gradient(loss, fmodel.variables)
            opt.apply_gradients(zip(grads, fmodel.variables))
            counter.assign_add(1)
        return loss

    done = 0
    while done < steps:
        n = min(500, steps - done)
        run(tf.constant(n))
        done += n
    return fmodel.params()
