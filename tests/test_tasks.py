"""Task distributions: the MAML paper's sinusoid ranges, batching, seeds, user families."""
import math

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms import MAMLConfig, MAMLLearner
from metarl_tf.core import RegressionTaskDistribution
from metarl_tf.networks import mlp
from metarl_tf.tasks import SinusoidTasks, sample_task_batch


def test_sinusoid_batch_shapes_ranges_and_targets():
    b = sample_task_batch(SinusoidTasks(), tf.constant([0, 0], tf.int64), 2000, 10, 15)
    assert b.support_x.shape == (2000, 10, 1) and b.query_y.shape == (2000, 15, 1)
    amp, phase = b.task_params[:, 0].numpy(), b.task_params[:, 1].numpy()
    assert 0.1 <= amp.min() and amp.max() <= 5.0 and amp.max() - amp.min() > 4.5
    assert 0.0 <= phase.min() and phase.max() <= math.pi and phase.max() - phase.min() > 3.0
    x = np.concatenate([b.support_x.numpy(), b.query_x.numpy()], axis=1)
    assert -5.0 <= x.min() and x.max() <= 5.0
    y = np.concatenate([b.support_y.numpy(), b.query_y.numpy()], axis=1)
    np.testing.assert_allclose(y, amp[:, None, None] * np.sin(x - phase[:, None, None]),
                               rtol=1e-5, atol=1e-5)


def test_sampling_is_deterministic_per_seed():
    s = SinusoidTasks()
    a = sample_task_batch(s, tf.constant([1, 7], tf.int64), 3, 4, 4)
    b = sample_task_batch(s, tf.constant([1, 7], tf.int64), 3, 4, 4)
    c = sample_task_batch(s, tf.constant([1, 8], tf.int64), 3, 4, 4)
    np.testing.assert_array_equal(a.support_x.numpy(), b.support_x.numpy())
    assert not np.array_equal(a.support_x.numpy(), c.support_x.numpy())


def test_bad_ranges_are_refused_by_name():
    with pytest.raises(ValueError, match="amplitude_range"):
        SinusoidTasks(amplitude_range=(5.0, 0.1))
    with pytest.raises(ValueError, match="input_range"):
        SinusoidTasks(input_range=(-math.inf, 1.0))


class Lines:
    """A user's own family: y = a x + b."""

    input_dim, output_dim = 1, 1

    def sample_task_params(self, seed, num_tasks):
        return tf.random.stateless_uniform([num_tasks, 2], seed, -1.0, 1.0, alg="philox")

    def sample_inputs(self, seed, num_tasks, num_points):
        return tf.random.stateless_uniform([num_tasks, num_points, 1], seed, -5.0, 5.0,
                                               alg="philox")

    def evaluate(self, task_params, x):
        return task_params[:, None, 0:1] * x + task_params[:, None, 1:2]


def test_a_user_family_plugs_into_a_learner():
    assert isinstance(Lines(), RegressionTaskDistribution)
    learner = MAMLLearner(mlp(1, 1, (20,), init="glorot_uniform"), Lines(),
                          MAMLConfig(steps_per_execution=20, inner_lr=0.02))
    before = learner.evaluate(num_tasks=100, num_steps=1)["mse"][1]
    learner.train(400)
    after = learner.evaluate(num_tasks=100, num_steps=1)["mse"][1]
    assert after < 0.5 * before, (before, after)


def test_an_object_without_the_protocol_is_refused():
    with pytest.raises(TypeError, match="RegressionTaskDistribution"):
        MAMLLearner(mlp(1, 1), object(), MAMLConfig())
