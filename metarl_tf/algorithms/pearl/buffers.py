"""Per-task transition buffers for PEARL, as TensorFlow variables (checkpointed with the learner).

Unlike ``metarl_tf.rollouts.replay.TaskReplayBuffer`` (every task written in lock step, discrete
actions), PEARL refreshes a few tasks per iteration and clears a task's encoder buffer before
refilling it, so each task here has its own write pointer and fill level, and actions are vectors.
Layout ``[num_tasks, capacity, ...]``; sampling draws uniformly among a task's filled slots.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Batch(NamedTuple):
    """Transitions ``[T, N, ...]``: ``observation`` (s_tm1), ``action`` in [-1, 1], ``reward``
    (r_t), ``next_observation`` (s_t), ``terminated`` (1.0 when s_t is terminal)."""

    observation: tf.Tensor
    action: tf.Tensor
    reward: tf.Tensor
    next_observation: tf.Tensor
    terminated: tf.Tensor


class TaskBuffers(tf.Module):
    """``num_tasks`` ring buffers of ``capacity`` transitions each.

    Args:
      num_tasks, capacity, obs_dim, act_dim: sizes (integers >= 1).
    """

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int,
                 name: str = "buffers"):
        super().__init__(name=name)
        for arg, value in (("num_tasks", num_tasks), ("capacity", capacity), ("obs_dim", obs_dim),
                           ("act_dim", act_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be an integer >= 1, got {value!r}")
        self.num_tasks, self.capacity = num_tasks, capacity
        t, c = num_tasks, capacity
        self.observation = tf.Variable(tf.zeros([t, c, obs_dim]), trainable=False, name="obs")
        self.action = tf.Variable(tf.zeros([t, c, act_dim]), trainable=False, name="action")
        self.reward = tf.Variable(tf.zeros([t, c]), trainable=False, name="reward")
        self.next_observation = tf.Variable(tf.zeros([t, c, obs_dim]), trainable=False,
                                            name="next_obs")
        self.terminated = tf.Variable(tf.zeros([t, c]), trainable=False, name="terminated")
        self.pointer = tf.Variable(tf.zeros([t], tf.int32), trainable=False, name="pointer")
        self.size = tf.Variable(tf.zeros([t], tf.int32), trainable=False, name="size")

    def _fields(self):
        return (self.observation, self.action, self.reward, self.next_observation, self.terminated)

    def add(self, task: int, batch: Batch) -> None:
        """Appends ``n`` transitions (fields ``[n, ...]``, NumPy or tensors) to buffer ``task``;
        beyond ``capacity`` the oldest are overwritten."""
        task = int(task)
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"`task` must be in [0, {self.num_tasks}), got {task}")
        fields = [np.asarray(x, np.float32) for x in batch]
        n = fields[2].shape[0]
        if n == 0:
            return
        if n > self.capacity:
            fields, n = [x[-self.capacity:] for x in fields], self.capacity
        start = int(self.pointer[task].numpy())
        slots = (start + np.arange(n)) % self.capacity
        index = np.stack([np.full(n, task), slots], -1).astype(np.int32)
        for var, value in zip(self._fields(), fields):
            var.scatter_nd_update(index, value)
        self.pointer.scatter_nd_update([[task]], [(start + n) % self.capacity])
        self.size.scatter_nd_update([[task]], [min(int(self.size[task].numpy()) + n,
                                                   self.capacity)])

    def clear(self, task: int) -> None:
        self.pointer.scatter_nd_update([[int(task)]], [0])
        self.size.scatter_nd_update([[int(task)]], [0])

    def sample(self, tasks: tf.Tensor, batch_size: int, seed: tf.Tensor) -> Batch:
        """``batch_size`` uniform draws from the filled slots of each of ``tasks`` ``[T']``.

        Returns:
          ``Batch`` ``[T', batch_size, ...]``.
        """
        tasks = tf.cast(tasks, tf.int32)
        size = tf.gather(tf.convert_to_tensor(self.size), tasks)
        tf.debugging.assert_positive(size, message="sampling a task whose buffer is empty")
        u = tf.random.stateless_uniform([tf.shape(tasks)[0], batch_size], seed, alg="philox")
        slot = tf.minimum(tf.cast(u * tf.cast(size[:, None], tf.float32), tf.int32),
                          size[:, None] - 1)
        index = tf.stack([tf.broadcast_to(tasks[:, None], tf.shape(slot)), slot], -1)
        return Batch(*[tf.gather_nd(tf.convert_to_tensor(v), index) for v in self._fields()])

    def nbytes(self) -> int:
        """Bytes held by the buffers' variables (what they add to a checkpoint)."""
        return int(sum(int(np.prod(v.shape)) * v.dtype.size for v in self.variables))
