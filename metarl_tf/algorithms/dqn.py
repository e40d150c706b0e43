"""DQN math as pure functions: TD targets, the Huber loss, n-step returns, target networks, epsilon.

Deep Q-networks (Mnih et al. 2015, Nature 518:529), double DQN (van Hasselt et al. 2016,
arXiv:1509.06461), n-step targets (Sutton 1988; Rainbow, Hessel et al. 2018, arXiv:1710.02298).
Tensors are named by time index as in rlax: ``q_tm1`` are the Q-values at the state where the action
``a_tm1`` was taken, ``r_t`` and ``discount_t`` what followed, ``q_t`` the Q-values at the next state::

    DQN:         y = r_t + discount_t * max_a q_target_t[a]
    double DQN:  y = r_t + discount_t * q_target_t[argmax_a q_online_t[a]]
    TD error:    delta = y - q_tm1[a_tm1]          (y is a constant: stop_gradient)
    Huber:       h(delta) = delta^2 / 2                  if |delta| <= kappa
                          = kappa (|delta| - kappa / 2)   otherwise

``discount_t`` carries termination: ``gamma^n (1 - terminated)``, zero after a terminal step, so
no value is bootstrapped from a state past the end of an episode (a time-limit truncation is not a
termination and does bootstrap).

Also here, built on that math: in-graph acting helpers for batched TF environments
(``collect_support``, ``greedy_returns``) and ``PerTaskDQNLearner``, independent from-scratch DQNs
batched over tasks: the per-task reference that Meta-DQN is compared with.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_float, check_int
from metarl_tf.networks.q_network import TaskConditionedQNetwork, q_values
from metarl_tf.rollouts.replay import (LoopState, TaskReplayBuffer, Transitions, collect,
                                       init_loop)


def huber_loss(x: tf.Tensor, delta: float = 1.0) -> tf.Tensor:
    """Elementwise Huber loss: quadratic for ``|x| <= delta``, linear beyond (slope ``delta``)."""
    abs_x = tf.abs(x)
    quadratic = tf.minimum(abs_x, delta)
    return 0.5 * tf.square(quadratic) + delta * (abs_x - quadratic)


def select(q: tf.Tensor, action: tf.Tensor) -> tf.Tensor:
    """``q[..., action]`` for integer actions with the shape of ``q`` minus its last axis."""
    return tf.gather(q, tf.cast(action, tf.int32), axis=-1, batch_dims=len(action.shape))


def q_learning_target(r_t: tf.Tensor, discount_t: tf.Tensor, q_target_t: tf.Tensor) -> tf.Tensor:
    """DQN's target ``r_t + discount_t max_a q_target_t[a]`` (gradient stopped)."""
    return tf.stop_gradient(r_t + discount_t * tf.reduce_max(q_target_t, axis=-1))


def double_q_learning_target(r_t: tf.Tensor, discount_t: tf.Tensor, q_online_t: tf.Tensor,
                             q_target_t: tf.Tensor) -> tf.Tensor:
    """Double DQN's target: the online network picks the action, the target network values it."""
    best = tf.argmax(q_online_t, axis=-1, output_type=tf.int32)
    return tf.stop_gradient(r_t + discount_t * select(q_target_t, best))


def td_loss(q_tm1: tf.Tensor, a_tm1: tf.Tensor, target: tf.Tensor, delta: float = 1.0,
            axis=-1) -> tf.Tensor:
    """Mean Huber TD loss over ``axis`` (the transitions of each task): ``[..., N] -> [...]``."""
    return tf.reduce_mean(huber_loss(target - select(q_tm1, a_tm1), delta), axis=axis)


class NStep(NamedTuple):
    """An n-step return and what to bootstrap it with.

    Attributes:
      reward: ``sum_{k < m} gamma^k r_k`` over the ``m`` steps before the episode ended (``m <= n``).
      discount: ``gamma^m (1 - terminated_{m-1})``, the weight of the bootstrap value.
      last: ``m - 1``, the offset of the transition whose next observation bootstraps.
    """

    reward: tf.Tensor
    discount: tf.Tensor
    last: tf.Tensor


def n_step_return(r: tf.Tensor, terminated: tf.Tensor, boundary: tf.Tensor,
                  gamma: float) -> NStep:
    """n-step returns from ``[..., n]`` consecutive transitions of one environment each.

    ``boundary[k]`` is 1 when the episode ended at step ``k`` (terminated or truncated by the time
    limit): later steps belong to another episode and are ignored. With ``n = 1`` this is the
    one-step target's ``(r, gamma (1 - terminated), 0)``.

    Example (gamma 0.5)::

        r = [1, 2, 4], terminated = boundary = [0, 1, 0]  ->  reward 1 + 0.5 * 2 = 2,
        discount 0.5^2 * (1 - 1) = 0, last 1
    """
    r = tf.convert_to_tensor(r)
    n = r.shape[-1]
    boundary = tf.cast(boundary, r.dtype)
    terminated = tf.cast(terminated, r.dtype)
    # alive[k] = 1 while no earlier step ended the episode: [1, 1 - b0, (1 - b0)(1 - b1), ...]
    alive = tf.math.cumprod(1.0 - boundary, axis=-1, exclusive=True)
    powers = tf.pow(tf.cast(gamma, r.dtype), tf.range(n, dtype=r.dtype))
    reward = tf.reduce_sum(alive * powers * r, axis=-1)
    steps = tf.reduce_sum(alive, axis=-1)  # m
    last = tf.cast(steps, tf.int32) - 1
    term_last = tf.gather(terminated, last[..., None], axis=-1,
                          batch_dims=len(last.shape))[..., 0]
    discount = tf.pow(tf.cast(gamma, r.dtype), steps) * (1.0 - term_last)
    return NStep(reward, discount, last)


def polyak_update(target: Sequence[tf.Tensor], online: Sequence[tf.Tensor], tau) -> list:
    """``target <- (1 - tau) target + tau online`` (Lillicrap et al. 2015, arXiv:1509.02971)."""
    return [(1.0 - tau) * t + tau * o for t, o in zip(target, online)]


def periodic_update(target: Sequence[tf.Tensor], online: Sequence[tf.Tensor], step,
                    period: int) -> list:
    """``online`` when ``step`` is a multiple of ``period``, else ``target`` (DQN's hard copy)."""
    copy = tf.equal(tf.math.floormod(step, period), 0)
    return [tf.where(copy, o, t) for t, o in zip(target, online)]


def linear_epsilon(step, start: float, end: float, decay_steps: int) -> tf.Tensor:
    """Epsilon decays linearly from ``start`` to ``end`` over ``decay_steps``, then stays at ``end``."""
    frac = tf.minimum(tf.cast(step, tf.float32) / float(max(decay_steps, 1)), 1.0)
    return start + frac * (end - start)


def epsilon_greedy(q: tf.Tensor, epsilon, seed: tf.Tensor) -> tf.Tensor:
    """Greedy actions of ``q`` ``[..., A]``, each replaced by a uniform one with probability epsilon."""
    shape = tf.shape(q)[:-1]
    num_actions = tf.shape(q)[-1]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    explore = tf.random.stateless_uniform(shape, seeds[0], alg="philox") < epsilon
    random = tf.random.stateless_uniform(shape, seeds[1], 0, num_actions, tf.int32, alg="philox")
    return tf.where(explore, random, tf.argmax(q, axis=-1, output_type=tf.int32))


# -- acting and evaluation in batched TF environments (``tasks.tf_env()``) ------------------------
def fold_seed(seed, *keys) -> tf.Tensor:
    """A stateless seed ``[2]`` int64 derived from ``seed`` and each of ``keys`` in turn."""
    seed = tf.cast(seed, tf.int64)
    for k in keys:
        seed = tf.cast(tf.random.experimental.stateless_fold_in(seed, k), tf.int64)
    return seed


def random_policy(num_actions: int):
    """``policy(obs [T, ...], seed) -> [T]`` uniformly random actions (for ``collect``)."""
    return lambda obs, seed: tf.random.stateless_uniform(
        tf.shape(obs)[:1], seed, 0, num_actions, tf.int32, alg="philox")


def collect_support(env, task: tf.Tensor, num_transitions: int, horizon: int, num_actions: int,
                    seed) -> Transitions:
    """``[T, num_transitions]`` transitions of a uniformly random policy on every task (one walk
    per task from a fresh reset, resetting when an episode ends)."""
    seed = tf.cast(seed, tf.int64)
    loop = init_loop(env, task, fold_seed(seed, 0))
    _, tr, _ = collect(env, task, loop, random_policy(num_actions), num_transitions, horizon,
                       fold_seed(seed, 1))
    return Transitions(*[tf.transpose(x, [1, 0] + list(range(2, len(x.shape)))) for x in tr])


def greedy_returns(env, task: tf.Tensor, q_fn, horizon: int, episodes: int, seed) -> tf.Tensor:
    """Mean return over ``episodes`` greedy episodes per task, ``[T]``.

    ``q_fn(observation [T, E, d]) -> [T, E, A]`` (each task's Q-values).
    """
    num_tasks = tf.shape(task)[0]
    flat_task = tf.repeat(task, episodes, axis=0)
    state, obs = env.reset(flat_task, seed)

    def body(i, state, obs, alive, total):
        q = q_fn(tf.reshape(obs, [num_tasks, episodes, -1]))
        action = tf.reshape(tf.argmax(q, axis=-1, output_type=tf.int32), [-1])
        state, obs, reward, terminated = env.step(flat_task, state, action)
        total += alive * reward
        alive *= 1.0 - tf.cast(terminated, tf.float32)
        return i + 1, state, obs, alive, total

    ones = tf.ones([num_tasks * episodes])
    _, _, _, _, total = tf.while_loop(lambda i, *_: i < horizon, body,
                                      (tf.constant(0), state, obs, ones, tf.zeros_like(ones)))
    return tf.reduce_mean(tf.reshape(total, [num_tasks, episodes]), axis=1)


def many_iterations(iteration, n):
    """``n`` (a scalar tensor >= 1) calls of ``iteration`` in one graph; the last metrics."""
    metrics = iteration()
    for _ in tf.range(n - 1):
        metrics = iteration()
    return metrics


def train_in_executions(train_fn, steps: int, steps_per_execution: int) -> dict[str, float]:
    """Runs ``steps`` iterations as calls ``train_fn(n)`` of at most ``steps_per_execution``
    each (a compiled ``many_iterations``); returns the last metrics as Python floats."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}")
    metrics = {}
    done = 0
    while done < steps:
        chunk = min(steps_per_execution, steps - done)
        metrics = train_fn(tf.constant(chunk, tf.int32))
        done += chunk
    return {k: float(v) for k, v in metrics.items()}


# -- the per-task reference: independent DQNs trained from scratch -------------------------------
@dataclasses.dataclass(frozen=True)
class PerTaskDQNConfig:
    """Independent double DQNs, one per task, trained from scratch (CartPole DQN practice)."""

    learning_rate: float = 1e-3  # Adam rate.
    discount: float = 0.99  # gamma.
    batch_size: int = 64  # Replay samples per task per update.
    replay_capacity: int = 50000  # Transitions kept per task.
    prefill_steps: int = 1000  # Random steps per task before learning.
    target_update_period: int = 500  # Env steps between hard target copies.
    epsilon_start: float = 1.0  # Exploration epsilon at step 0.
    epsilon_end: float = 0.05  # Final epsilon.
    epsilon_decay_steps: int = 10000  # Steps of linear epsilon decay.
    huber_delta: float = 1.0  # Huber kappa.
    steps_per_execution: int = 500  # Env steps (one update each) per compiled call.

    def __post_init__(self):
        check_float(self, "learning_rate")
        check_float(self, "discount", 0.0, 1.0)
        check_float(self, "huber_delta")
        check_float(self, "epsilon_start", 0.0, 1.0, low_inclusive=True)
        check_float(self, "epsilon_end", 0.0, 1.0, low_inclusive=True)
        for name in ("batch_size", "replay_capacity", "target_update_period",
                     "epsilon_decay_steps", "steps_per_execution"):
            check_int(self, name)
        check_int(self, "prefill_steps", minimum=0)


class PerTaskDQNLearner:
    """``T`` independent double DQNs trained from scratch, one per given task, batched over tasks.

    Each task has its own weights (a leading task axis on every variable), replay buffer and
    environment; one update per environment step. The per-task reference of Meta-DQN: what a
    task-specific learner reaches with a full budget on one task.

    Args:
      tasks_family: a discrete-action family (``tf_env``, ``horizon``, ``obs_dim``,
        ``num_actions``).
      tasks: ``[T, P]`` the tasks to learn.
      hidden, activation: the Q-network (a ``TaskConditionedQNetwork`` with ``z_dim=0``).

    ::

        learner = PerTaskDQNLearner(CartPoleDirTasks(), tasks, PerTaskDQNConfig())
        learner.train(50000)
        returns = learner.evaluate(episodes=10)      # [T] each DQN on its own task
    """

    def __init__(self, tasks_family, tasks, config: PerTaskDQNConfig | None = None,
                 hidden=(64, 64), activation: str = "relu", seed: int = 0):
        cfg = self.config = config or PerTaskDQNConfig()
        self.family, self.seed, self.activation = tasks_family, int(seed), activation
        self.tasks = tf.constant(np.asarray(tasks, np.float32))
        t = int(self.tasks.shape[0])
        self.env, self.horizon = tasks_family.tf_env(), int(tasks_family.horizon)
        self.num_actions = int(tasks_family.num_actions)
        nets = [TaskConditionedQNetwork(tasks_family.obs_dim, self.num_actions, 0, hidden,
                                        activation, seed=self.seed + 100 * i) for i in range(t)]
        self.params = [tf.Variable(tf.stack([tf.convert_to_tensor(n.trainable_variables[j])
                                             for n in nets]), name=f"param_{j}")
                       for j in range(len(nets[0].trainable_variables))]
        self.target = [tf.Variable(v, trainable=False) for v in self.params]
        self.optimizer = keras.optimizers.Adam(cfg.learning_rate)
        self.optimizer.build(self.params)
        self.replay = TaskReplayBuffer(t, cfg.replay_capacity, tasks_family.obs_dim)
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._base_seed = tf.constant([self.seed, 13], tf.int64)
        loop = init_loop(self.env, self.tasks, fold_seed(self._base_seed, 1))
        self.loop = [tf.Variable(x, trainable=False) for x in loop]
        self.z = tf.zeros([t, 0])
        self._train_fn = tf.function(lambda n: many_iterations(self._iteration, n))
        self._prefill()

    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    @tf.function
    def _prefill(self):
        if self.config.prefill_steps:
            loop, tr, _ = collect(self.env, self.tasks, LoopState(*self.loop),
                                  random_policy(self.num_actions), self.config.prefill_steps,
                                  self.horizon, fold_seed(self._base_seed, 2))
            self.replay.add(tr)
            for var, value in zip(self.loop, loop):
                var.assign(value)

    def train(self, steps: int) -> dict[str, float]:
        """Runs ``steps`` iterations; returns the last one's metrics (Python floats)."""
        return train_in_executions(self._train_fn, steps, self.config.steps_per_execution)

    def _iteration(self):
        cfg = self.config
        step = self.step_counter
        seed = fold_seed(self._base_seed, 3, step)
        params = [tf.convert_to_tensor(v) for v in self.params]
        epsilon = linear_epsilon(step, cfg.epsilon_start, cfg.epsilon_end,
                                 cfg.epsilon_decay_steps)
        policy = lambda obs, s: epsilon_greedy(  # noqa: E731
            q_values(params, obs[:, None], self.z, self.activation)[:, 0], epsilon, s)
        loop, tr, (ret_sum, count) = collect(self.env, self.tasks, LoopState(*self.loop), policy,
                                             1, self.horizon, fold_seed(seed, 0))
        self.replay.add(tr)
        for var, value in zip(self.loop, loop):
            var.assign(value)
        batch = self.replay.sample(fold_seed(seed, 1), cfg.batch_size)
        target = [tf.convert_to_tensor(v) for v in self.target]
        with tf.GradientTape() as tape:
            q_tm1 = q_values(self.params, batch.observation, self.z, self.activation)
            q_online_t = q_values(params, batch.next_observation, self.z, self.activation)
            q_target_t = q_values(target, batch.next_observation, self.z, self.activation)
            y = double_q_learning_target(batch.reward, cfg.discount * (1.0 - batch.terminated),
                                         q_online_t, q_target_t)
            loss = tf.reduce_sum(td_loss(q_tm1, batch.action, y, cfg.huber_delta))
        grads = tape.gradient(loss, self.params)
        self.optimizer.apply_gradients(zip(grads, self.params))
        new_target = periodic_update(target, [tf.convert_to_tensor(v) for v in self.params],
                                     step + 1, cfg.target_update_period)
        for var, value in zip(self.target, new_target):
            var.assign(value)
        self.step_counter.assign_add(1)
        return {"td_loss": loss / float(self.tasks.shape[0]), "epsilon": epsilon,
                "episode_return": tf.math.divide_no_nan(ret_sum, count)}

    def evaluate(self, episodes: int = 5, seed: int = 0, tasks=None) -> np.ndarray:
        """``[T]`` mean greedy return of each task's DQN on its own task (or on ``tasks``, one per
        network, to test a network on another variant)."""
        tasks = self.tasks if tasks is None else tf.constant(np.asarray(tasks, np.float32))
        params = [tf.convert_to_tensor(v) for v in self.params]
        q_fn = lambda obs: q_values(params, obs, self.z, self.activation)  # noqa: E731
        fn = tf.function(lambda t, s: greedy_returns(self.env, t, q_fn, self.horizon, episodes, s))
        return fn(tasks, tf.constant([seed, 17], tf.int64)).numpy()
