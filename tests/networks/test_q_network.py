"""q_values: the functional Q-network equals the Keras model, with shared or per-task weights."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.networks.q_network import TaskConditionedQNetwork, q_values


def test_q_values_equal_the_keras_model_shared_and_per_task():
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=4, z_dim=2, hidden=(8, 8), seed=1)
    obs = tf.random.stateless_normal([2, 5, 3], [0, 1])
    z = tf.random.stateless_normal([2, 2], [0, 2])
    params = net.params()
    expected = np.stack([net([obs[t], tf.tile(z[t:t + 1], [5, 1])]).numpy() for t in range(2)])
    np.testing.assert_allclose(q_values(params, obs, z), expected, rtol=1e-5, atol=1e-6)
    batched = [tf.stack([p, p]) for p in params]
    np.testing.assert_allclose(q_values(batched, obs, z), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`num_actions` must be an integer >= 2"):
        TaskConditionedQNetwork(3, 1)
