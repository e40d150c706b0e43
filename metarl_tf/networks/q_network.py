"""A task-conditioned Q-network ``Q(s, a, z)``: one network for a family of tasks, told the task by z.

The network of Meta-DQN (``metarl_tf.algorithms.meta_dqn``), in the spirit of CAVIA (Zintgraf et
al. 2019, arXiv:1810.03642): the observation and a low-dimensional task embedding ``z`` are
concatenated at the input, and the network outputs one Q-value per discrete action::

    h_0 = concat(s, z)                                   [obs_dim + z_dim]
    h_l = act(h_l-1 W_l + b_l)                           l = 1 .. L (the hidden widths)
    Q(s, ., z) = h_L W_out + b_out                       [num_actions]

Only ``z`` is adapted to a new task (a few gradient steps on a TD loss); the weights are
meta-learned through that adaptation. Because ``concat(s, z) W_0 = s W_0[:obs_dim] + z W_0[obs_dim:]``,
``q_values`` evaluates a meta-batch of tasks with one shared weight set and one ``z`` per task
without copying ``z`` onto every observation.

Parameter layout (``model.trainable_variables``, the list every function here takes)::

    [W_0 [obs_dim + z_dim, h_1], b_0 [h_1], ..., W_out [h_L, num_actions], b_out [num_actions]]

Example::

    net = TaskConditionedQNetwork(obs_dim=4, num_actions=2, z_dim=8, hidden=(64, 64))
    q = net([observation, z])                         # [B, 4], [B, 8] -> [B, 2]
    params = [tf.convert_to_tensor(v) for v in net.trainable_variables]
    q_t = q_values(params, obs_t, z_t)                # [T, N, 4], [T, 8] -> [T, N, 2]
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from metarl_tf.networks.mlp import check_mlp_args


def check_q_network_args(obs_dim, num_actions, z_dim, hidden, activation) -> None:
    """Validates ``TaskConditionedQNetwork`` arguments; errors name the argument."""
    for name, value, low in (("obs_dim", obs_dim, 1), ("num_actions", num_actions, 2),
                             ("z_dim", z_dim, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    check_mlp_args(1, 1, tuple(hidden), activation, "glorot_uniform")


@keras.saving.register_keras_serializable(package="metarl_tf")
class TaskConditionedQNetwork(keras.Model):
    """``Q(s, ., z)``: inputs ``[observation, z]``, output Q-values for every action.

    A functional Keras 3 model (``Concatenate`` then ``Dense`` layers), so ``stateless_call`` and
    saving work as for any model.

    Args:
      obs_dim: observation size.
      num_actions: number of discrete actions (>= 2).
      z_dim: task-embedding size (0 gives a plain, task-agnostic Q-network whose ``z`` input is
        empty).
      hidden: hidden widths.
      activation: hidden activation (a Keras activation name).
      seed: kernel initializer seed (Glorot uniform; biases zero).
    """

    def __init__(self, obs_dim: int, num_actions: int, z_dim: int = 8,
                 hidden: Sequence[int] = (64, 64), activation: str = "relu", seed: int = 0,
                 name: str = "task_conditioned_q", **kwargs):
        hidden = tuple(int(h) if isinstance(h, float) and h == int(h) else h for h in hidden)
        check_q_network_args(obs_dim, num_actions, z_dim, hidden, activation)
        observation = keras.Input((obs_dim,), name="observation")
        z = keras.Input((z_dim,), name="z")
        h = keras.layers.Concatenate(axis=-1, name="concat")([observation, z])
        widths = list(hidden) + [num_actions]
        for i, width in enumerate(widths):
            h = keras.layers.Dense(
                width, activation=activation if i < len(hidden) else None,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
                bias_initializer="zeros", name=f"dense_{i}" if i < len(hidden) else "q_values")(h)
        super().__init__(inputs=[observation, z], outputs=h, name=name, **kwargs)
        self.obs_dim, self.num_actions, self.z_dim = obs_dim, num_actions, z_dim
        self.hidden, self.activation_name, self.seed = tuple(hidden), activation, seed

    def get_config(self):
        return {"obs_dim": self.obs_dim, "num_actions": self.num_actions, "z_dim": self.z_dim,
                "hidden": list(self.hidden), "activation": self.activation_name,
                "seed": self.seed, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def params(self) -> list:
        """The current weights as tensors, in the layout of the module docstring."""
        return [tf.convert_to_tensor(v) for v in self.trainable_variables]


def q_values(params: Sequence[tf.Tensor], observation: tf.Tensor, z: tf.Tensor,
             activation: str = "relu", obs_dim: int | None = None) -> tf.Tensor:
    """Q-values of every action for a batch of tasks: ``[T, N, obs_dim], [T, z_dim] -> [T, N, A]``.

    Equal to ``TaskConditionedQNetwork.stateless_call`` on ``concat(s, z)`` (tested).

    Args:
      params: the network's parameters in layout order, either shared by all tasks (each tensor
        with its variable's shape) or one set per task (a leading axis ``T`` on every tensor, as
        when fine-tuning the whole network per task).
      observation: ``[T, N, obs_dim]``.
      z: ``[T, z_dim]``, one embedding per task.
      activation: the hidden activation the network was built with.
      obs_dim: observation size (default: the rows of ``W_0`` minus ``z``'s size).
    """
    params = list(params)
    act = keras.activations.get(activation)
    w0, b0 = params[0], params[1]
    if obs_dim is None:  # rows of W_0 not multiplying z
        obs_dim = int(w0.shape[-2]) - int(z.shape[-1])
    batched = len(w0.shape) == 3
    if batched:  # per-task weights
        h = tf.matmul(observation, w0[:, :obs_dim]) + tf.matmul(z[:, None, :], w0[:, obs_dim:])
        h = h + b0[:, None, :]
    else:
        h = tf.matmul(observation, w0[:obs_dim]) + tf.matmul(z, w0[obs_dim:])[:, None, :] + b0
    for i in range(2, len(params), 2):
        h = act(h)
        w, b = params[i], params[i + 1]
        h = tf.matmul(h, w) + (b[:, None, :] if batched else b)
    return h
