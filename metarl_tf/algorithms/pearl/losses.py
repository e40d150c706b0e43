"""PEARL's math as pure functions: the Gaussian posterior, its KL, and SAC's losses.

Names follow rlax: ``_tm1`` for the transition's start (s, a), ``_t`` for where it lands (s').

Posterior (Rakelly et al. 2019, arXiv:1903.08254, eq. 3-4; oyster ``agent.py``): each context
transition n gives a Gaussian factor N(mu_n, sigma_n^2); the posterior is their product::

    1 / sigma^2 = sum_n m_n / sigma_n^2          mu = sigma^2 * sum_n m_n mu_n / sigma_n^2

with m_n the mask (0 for padding), so padded rows change nothing. With no real row the product is
empty; the prior N(0, I) is returned.

SAC with fixed or learned entropy weight alpha (Haarnoja et al. 2018, arXiv:1812.05905)::

    y        = reward_scale * r_t + gamma (1 - d_t) (min_i Q'_i(s_t, a~_t, z) - alpha log pi(a~_t|s_t, z))
    L_Q      = mean (Q_1(s_tm1, a_tm1, z) - y)^2 + mean (Q_2(s_tm1, a_tm1, z) - y)^2
    L_pi     = mean (alpha log pi(a~|s, z) - min_i Q_i(s, a~, z)) + w_mu mean mu^2 + w_s mean log_std^2
    L_alpha  = -mean log(alpha) (log pi(a~|s, z) + target_entropy)
    L_enc    = L_Q + kl_lambda * sum_tasks KL(q(z|c) || N(0, I))

The encoder learns from L_enc only: z enters the critics with its gradient and the actor (and the
targets) with it stopped, as in oyster's ``sac.py``.
"""
from __future__ import annotations

import math

import tensorflow as tf

MIN_VARIANCE = 1e-7  # oyster's clamp on each factor's variance before the product.
_LOG_2PI = math.log(2.0 * math.pi)


def product_of_gaussians(mu: tf.Tensor, sigma2: tf.Tensor, mask: tf.Tensor):
    """The masked product of Gaussian factors along axis -2.

    Args:
      mu: ``[..., N, L]`` factor means.
      sigma2: ``[..., N, L]`` factor variances (clamped below at ``MIN_VARIANCE``).
      mask: ``[..., N]`` 1 for a real factor, 0 for padding.

    Returns:
      ``(mean, var)`` ``[..., L]``; the prior ``(0, 1)`` where no factor is real.
    """
    sigma2 = tf.maximum(sigma2, MIN_VARIANCE)
    m = tf.cast(mask, mu.dtype)[..., None]
    precision = tf.reduce_sum(m / sigma2, axis=-2)
    empty = tf.equal(tf.reduce_sum(m, axis=-2), 0.0)
    var = 1.0 / tf.where(empty, tf.ones_like(precision), precision)
    mean = var * tf.reduce_sum(m * mu / sigma2, axis=-2)
    return tf.where(empty, tf.zeros_like(mean), mean), tf.where(empty, tf.ones_like(var), var)


def kl_to_unit_prior(mean: tf.Tensor, var: tf.Tensor) -> tf.Tensor:
    """``KL(N(mean, diag var) || N(0, I))`` summed over the last axis: ``[...]``.

    ``0.5 * sum_l (var_l + mean_l^2 - 1 - log var_l)``.
    """
    return 0.5 * tf.reduce_sum(var + tf.square(mean) - 1.0 - tf.math.log(var), axis=-1)


def tanh_gaussian_log_prob(pre_tanh: tf.Tensor, mean: tf.Tensor, log_std: tf.Tensor) -> tf.Tensor:
    """``log pi(tanh(u))`` for ``u ~ N(mean, exp(log_std)^2)``, summed over the action axis.

    ``sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2)]``, the second term in the stable
    form ``2 (log 2 - u - softplus(-2u))``.
    """
    z = (pre_tanh - mean) * tf.exp(-log_std)
    gauss = -0.5 * tf.square(z) - log_std - 0.5 * _LOG_2PI
    log_det = 2.0 * (math.log(2.0) - pre_tanh - tf.nn.softplus(-2.0 * pre_tanh))
    return tf.reduce_sum(gauss - log_det, axis=-1)


def soft_q_target(r_t, d_t, q1_t, q2_t, log_pi_t, discount: float, reward_scale: float,
                  alpha) -> tf.Tensor:
    """``reward_scale r_t + discount (1 - d_t)(min(q1_t, q2_t) - alpha log_pi_t)``, stopped."""
    v_t = tf.minimum(q1_t, q2_t) - alpha * log_pi_t
    return tf.stop_gradient(reward_scale * r_t + discount * (1.0 - d_t) * v_t)


def critic_loss(q1_tm1, q2_tm1, target) -> tf.Tensor:
    """The twin critics' squared errors to one target: ``mean (q1 - y)^2 + mean (q2 - y)^2``."""
    return tf.reduce_mean(tf.square(q1_tm1 - target)) + tf.reduce_mean(tf.square(q2_tm1 - target))


def actor_loss(log_pi, q1, q2, alpha, mean, log_std, mean_reg: float = 0.0,
               std_reg: float = 0.0) -> tf.Tensor:
    """``mean(alpha log_pi - min(q1, q2)) + mean_reg mean(mean^2) + std_reg mean(log_std^2)``."""
    return (tf.reduce_mean(alpha * log_pi - tf.minimum(q1, q2))
            + mean_reg * tf.reduce_mean(tf.square(mean))
            + std_reg * tf.reduce_mean(tf.square(log_std)))


def alpha_loss(log_alpha, log_pi, target_entropy: float) -> tf.Tensor:
    """``-mean(log_alpha (log_pi + target_entropy))`` with log_pi stopped (SAC v2's temperature)."""
    return -tf.reduce_mean(log_alpha * tf.stop_gradient(log_pi + target_entropy))
