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
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf


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
