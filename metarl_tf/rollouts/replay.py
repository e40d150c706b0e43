"""A replay buffer per task that lives in TensorFlow, and in-graph collection of transitions.

``TaskReplayBuffer`` is a ring buffer of ``tf.Variable`` tensors with a task axis: one buffer per
task, all written in lock step (every task's environment steps once per ``add``), so one write
pointer serves them all. Adding, sampling and the DQN update therefore compile into one graph.
Slots are laid out ``[capacity, T, ...]`` (a write is one ``scatter_nd_update`` of whole rows).

Sampling draws, per task, uniform slots among the *filled* ones only (age ``0 .. size - n``, where
age 0 is the oldest kept transition); with ``n > 1`` it returns ``n`` consecutive transitions per
sample for n-step targets (``metarl_tf.algorithms.dqn.n_step_return``).

``collect`` steps a batched TF environment (``tasks.tf_env()``) with automatic resets::

    loop = init_loop(env, task, seed)
    loop, transitions, finished = collect(env, task, loop, policy, num_steps, horizon, seed)
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf


class Transitions(NamedTuple):
    """A batch of transitions; every field has the same leading axes (e.g. ``[T, N]``)."""

    observation: tf.Tensor  # [..., obs_dim] s_tm1
    action: tf.Tensor  # [...] int32 a_tm1
    reward: tf.Tensor  # [...] r_t
    next_observation: tf.Tensor  # [..., obs_dim] s_t
    terminated: tf.Tensor  # [...] 1.0 when s_t is terminal (no bootstrap)
    boundary: tf.Tensor  # [...] 1.0 when the episode ended at this step (terminated or time limit)


class TaskReplayBuffer(tf.Module):
    """``num_tasks`` ring buffers of ``capacity`` transitions each, as TF variables.

    Args:
      num_tasks: buffers (one per task).
      capacity: transitions kept per task; older ones are overwritten.
      obs_dim: observation size.
    """

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, name: str = "replay"):
        super().__init__(name=name)
        for arg, value in (("num_tasks", num_tasks), ("capacity", capacity), ("obs_dim", obs_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be an integer >= 1, got {value!r}")
        self.num_tasks, self.capacity, self.obs_dim = num_tasks, capacity, obs_dim
        c, t = capacity, num_tasks
        self.observation = tf.Variable(tf.zeros([c, t, obs_dim]), trainable=False, name="obs")
        self.action = tf.Variable(tf.zeros([c, t], tf.int32), trainable=False, name="action")
        self.reward = tf.Variable(tf.zeros([c, t]), trainable=False, name="reward")
        self.next_observation = tf.Variable(tf.zeros([c, t, obs_dim]), trainable=False,
                                            name="next_obs")
        self.terminated = tf.Variable(tf.zeros([c, t]), trainable=False, name="terminated")
        self.boundary = tf.Variable(tf.zeros([c, t]), trainable=False, name="boundary")
        self.pointer = tf.Variable(0, dtype=tf.int32, trainable=False, name="pointer")
        self.size = tf.Variable(0, dtype=tf.int32, trainable=False, name="size")

    def _fields(self):
        return (self.observation, self.action, self.reward, self.next_observation,
                self.terminated, self.boundary)

    def add(self, transitions: Transitions) -> None:
        """Appends ``K`` steps of every task: fields shaped ``[K, T, ...]`` (or ``[T, ...]``, K = 1)."""
        fields = [tf.convert_to_tensor(x) for x in transitions]
        if len(fields[1].shape) == 1:
            fields = [x[None] for x in fields]
        k = tf.shape(fields[1])[0]
        slots = tf.math.floormod(self.pointer + tf.range(k), self.capacity)[:, None]
        for var, value in zip(self._fields(), fields):
            var.scatter_nd_update(slots, tf.cast(value, var.dtype))
        self.pointer.assign(tf.math.floormod(self.pointer + k, self.capacity))
        self.size.assign(tf.minimum(self.size + k, self.capacity))

    def clear(self) -> None:
        self.pointer.assign(0)
        self.size.assign(0)

    def sample(self, seed: tf.Tensor, batch_size: int, n: int = 1,
               tasks: tf.Tensor | None = None) -> Transitions:
        """``batch_size`` uniform samples per task from the filled slots.

        Args:
          seed: stateless seed ``[2]``.
          batch_size: samples per task.
          n: consecutive transitions per sample (n-step); fields get an extra axis of size ``n``
            after the sample axis when ``n > 1``.
          tasks: ``[T']`` int32 task indices to sample for (default: every task).

        Returns:
          ``Transitions`` shaped ``[T', batch_size, ...]`` (``[T', batch_size, n, ...]`` for n > 1).
        """
        tasks = tf.range(self.num_tasks) if tasks is None else tf.cast(tasks, tf.int32)
        num = tf.shape(tasks)[0]
        size = self.size
        tf.debugging.assert_greater_equal(size, n, message=(
            f"the replay buffer holds fewer than n={n} transitions per task"))
        oldest = tf.math.floormod(self.pointer - size, self.capacity)
        age = tf.random.stateless_uniform([num, batch_size], seed, 0, size - n + 1, tf.int32,
                                          alg="philox")
        offsets = tf.range(n)
        slot = tf.math.floormod(oldest + age[..., None] + offsets, self.capacity)  # [T', B, n]
        task_idx = tf.broadcast_to(tasks[:, None, None], tf.shape(slot))
        index = tf.stack([slot, task_idx], axis=-1)
        # (gather from the read value: XLA has no kernel for a gather_nd on a resource variable)
        out = [tf.gather_nd(tf.convert_to_tensor(var), index) for var in self._fields()]
        if n == 1:
            out = [x[:, :, 0] for x in out]
        return Transitions(*out)

    def sample_window(self, seed: tf.Tensor, length: int,
                      tasks: tf.Tensor | None = None) -> Transitions:
        """One window of ``length`` consecutive filled slots per task, at a uniform start.

        A window of a buffer filled by one policy's walk is itself a walk of that policy, so its
        share of rare events (a sparse reward) varies as a fresh walk's would; ``sample`` draws
        slots independently and smooths that out.

        Returns:
          ``Transitions`` shaped ``[T', length, ...]``.
        """
        if length == 1:
            return self.sample(seed, 1, 1, tasks)
        # one run of `length` consecutive slots per task: the n-step sampler with one sample
        return Transitions(*[x[:, 0] for x in self.sample(seed, 1, length, tasks)])

    def all(self, tasks: tf.Tensor | None = None) -> Transitions:
        """Every slot, oldest first, ``[T', capacity, ...]``; meaningful once the buffer is full."""
        order = tf.math.floormod(self.pointer + tf.range(self.capacity), self.capacity)
        out = [tf.gather(tf.convert_to_tensor(var), order) for var in self._fields()]
        out = [tf.transpose(x, [1, 0] + list(range(2, len(x.shape)))) for x in out]
        if tasks is not None:
            out = [tf.gather(x, tf.cast(tasks, tf.int32)) for x in out]
        return Transitions(*out)


class LoopState(NamedTuple):
    """The running state of ``T`` environments between calls of ``collect``."""

    env_state: tf.Tensor  # the environment's batched state
    observation: tf.Tensor  # [T, obs_dim]
    t: tf.Tensor  # [T] int32 steps into the current episode
    episode_return: tf.Tensor  # [T] return so far in the current episode


def init_loop(env, task: tf.Tensor, seed: tf.Tensor) -> LoopState:
    state, obs = env.reset(task, seed)
    n = tf.shape(task)[0]
    return LoopState(state, obs, tf.zeros([n], tf.int32), tf.zeros([n]))


def collect(env, task: tf.Tensor, loop: LoopState, policy: Callable, num_steps: int,
            horizon: int, seed: tf.Tensor):
    """``num_steps`` steps of every environment, resetting those whose episode ended.

    Args:
      env: a batched TF environment (``reset``/``step``).
      task: ``[T, P]`` task parameters.
      loop: the running ``LoopState``.
      policy: ``(observation [T, d], seed [2]) -> action [T] int32``.
      num_steps: steps (a Python int; the loop is a ``tf.while_loop`` inside ``tf.function``).
      horizon: time limit; reaching it ends the episode without termination (bootstraps).
      seed: stateless seed ``[2]``.

    Returns:
      ``(loop, transitions [num_steps, T, ...], finished)`` where ``finished`` is
      ``(sum of returns of the episodes that ended, number of episodes that ended)``.
    """
    n = tf.shape(task)[0]
    arrays = [tf.TensorArray(dtype, size=num_steps) for dtype in
              (tf.float32, tf.int32, tf.float32, tf.float32, tf.float32, tf.float32)]

    def body(i, loop, arrays, ret_sum, count):
        step_seed = tf.random.experimental.stateless_fold_in(seed, i)
        seeds = tf.random.experimental.stateless_split(step_seed, 2)
        action = policy(loop.observation, seeds[0])
        state, obs, reward, terminated = env.step(task, loop.env_state, action)
        t = loop.t + 1
        ended = terminated | (t >= horizon)
        values = (loop.observation, action, reward, obs, tf.cast(terminated, tf.float32),
                  tf.cast(ended, tf.float32))
        arrays = [a.write(i, v) for a, v in zip(arrays, values)]
        ep_ret = loop.episode_return + reward
        ret_sum += tf.reduce_sum(tf.where(ended, ep_ret, 0.0))
        count += tf.reduce_sum(tf.cast(ended, tf.float32))
        reset_state, reset_obs = env.reset(task, seeds[1])
        e = ended[:, None]
        loop = LoopState(tf.where(tf.reshape(ended, [-1] + [1] * (len(state.shape) - 1)),
                                  reset_state, state),
                         tf.where(e, reset_obs, obs), tf.where(ended, 0, t),
                         tf.where(ended, 0.0, ep_ret))
        return i + 1, loop, arrays, ret_sum, count

    _, loop, arrays, ret_sum, count = tf.while_loop(
        lambda i, *_: i < num_steps, body,
        (tf.constant(0), loop, arrays, tf.constant(0.0), tf.constant(0.0)))
    del n
    return loop, Transitions(*[a.stack() for a in arrays]), (ret_sum, count)
