"""Returns and advantages of padded episode batches, as pure TensorFlow functions.

All functions take time on the LAST axis (``[..., H]``: ``[B, H]`` or ``[T, N, H]``) and a mask that
is 1 on real steps and 0 on the padding after an episode ends. An episode end is terminal: nothing is
bootstrapped past it (the MAML-RL and ProMP codes do the same at their fixed horizon). Naming follows
rlax: ``r_t`` the reward of step ``t``, ``v_t`` the value estimate at step ``t``, ``discount_t`` the
discount applied between ``t`` and ``t + 1``, ``m_t`` the mask.

The recursions, run backwards from ``G_H = A_H = 0``::

    G_t     = m_t (r_t + discount_t G_t+1)                                   discounted_returns
    delta_t = r_t + discount_t m_t+1 v_t+1 - v_t
    A_t     = m_t (delta_t + discount_t lambda A_t+1)                         gae (Schulman et al.
                                                                              2015, arXiv:1506.02438)

With ``lambda = 1`` GAE is ``G_t - v_t`` on valid steps (what MAML-RL uses with its linear baseline);
with ``lambda = 0`` it is the one-step TD error.
"""
from __future__ import annotations

import tensorflow as tf


def _time_major(x):
    rank = len(x.shape)
    return tf.transpose(x, [rank - 1] + list(range(rank - 1)))


def _batch_major(x):
    rank = len(x.shape)
    return tf.transpose(x, list(range(1, rank)) + [0])


def _reverse_accumulate(x_t, decay_t):
    """``y_t = x_t + decay_t y_t+1`` with ``y_H = 0``, over the last axis (a reverse ``tf.scan``)."""
    xs, ds = _time_major(x_t), _time_major(decay_t)
    ys = tf.scan(lambda acc, elem: elem[0] + elem[1] * acc, (xs, ds), initializer=tf.zeros_like(xs[0]),
                 reverse=True)
    return _batch_major(ys)


def _prepare(rewards, mask, discount):
    r_t = tf.convert_to_tensor(rewards)
    m_t = tf.cast(mask, r_t.dtype)
    discount_t = tf.broadcast_to(tf.cast(discount, r_t.dtype), tf.shape(r_t))
    return r_t, m_t, discount_t


def discounted_returns(rewards, mask, discount) -> tf.Tensor:
    """Discounted reward-to-go ``G_t`` of every step, zero on padding.

    Args:
      rewards: ``[..., H]`` rewards ``r_t``.
      mask: ``[..., H]`` 1 on valid steps, 0 on padding.
      discount: a scalar or a tensor broadcastable to ``rewards`` (``discount_t``).

    Returns:
      ``[..., H]`` returns ``G_t = m_t (r_t + discount_t G_t+1)``.
    """
    r_t, m_t, discount_t = _prepare(rewards, mask, discount)
    return _reverse_accumulate(m_t * r_t, m_t * discount_t)


def gae(rewards, values, mask, discount, lam) -> tf.Tensor:
    """Generalized advantage estimates ``A_t`` (Schulman et al. 2015, arXiv:1506.02438).

    Args:
      rewards: ``[..., H]`` rewards ``r_t``.
      values: ``[..., H]`` value estimates ``v_t`` (ignored on padded steps).
      mask: ``[..., H]`` 1 on valid steps, 0 on padding.
      discount: scalar or broadcastable ``discount_t``.
      lam: the GAE ``lambda`` in [0, 1] (scalar).

    Returns:
      ``[..., H]`` advantages, zero on padding::

          delta_t = r_t + discount_t m_t+1 v_t+1 - v_t
          A_t     = m_t (delta_t + discount_t lam A_t+1)
    """
    r_t, m_t, discount_t = _prepare(rewards, mask, discount)
    v_t = tf.cast(values, r_t.dtype) * m_t
    # v_t+1 with a zero past the horizon; padding already zeroed, so m_t+1 v_t+1 = v_tp1.
    v_tp1 = tf.concat([v_t[..., 1:], tf.zeros_like(v_t[..., :1])], axis=-1)
    delta_t = r_t + discount_t * v_tp1 - v_t
    lam = tf.cast(lam, r_t.dtype)
    return _reverse_accumulate(m_t * delta_t, m_t * discount_t * lam)


def normalize_advantages(advantages, mask, epsilon: float = 1e-8) -> tf.Tensor:
    """Standardizes advantages per task over its valid steps (rllab's ``center_adv``).

    Args:
      advantages: ``[T, ...]``; every axis after the first (task) axis is pooled.
      mask: same shape, 1 on valid steps.
      epsilon: added to the standard deviation.

    Returns:
      ``(A - mean_T) / (std_T + epsilon)`` on valid steps, 0 on padding; mean and (population) std
      are taken per task over the valid steps.
    """
    adv = tf.convert_to_tensor(advantages)
    m = tf.cast(mask, adv.dtype)
    axes = list(range(1, len(adv.shape)))
    count = tf.maximum(tf.reduce_sum(m, axis=axes, keepdims=True), 1.0)
    mean = tf.reduce_sum(adv * m, axis=axes, keepdims=True) / count
    var = tf.reduce_sum(tf.square(adv - mean) * m, axis=axes, keepdims=True) / count
    return m * (adv - mean) / (tf.sqrt(var) + epsilon)
