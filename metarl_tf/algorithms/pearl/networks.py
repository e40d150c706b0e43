"""PEARL's networks: the context encoder, the tanh-Gaussian actor and the twin critics.

Every network is a Keras MLP (``metarl_tf.networks.mlp``, Glorot kernels, zero biases, linear
output) that the learner and the export evaluate as a *function of its weight list*
(``dense_apply``), so training, ``evaluate`` and the SavedModel run the same arithmetic::

    encoder  phi(c_n) -> (mu_n, sigma_n^2 = softplus(.))   c_n = (s, a, r[, s'])  per transition
    q(z | c) = prod_n N(mu_n, sigma_n^2)                   (products.product_of_gaussians)
    actor    pi(a | s, z) = tanh(N(mu(s, z), sigma(s, z)^2)), log sigma clipped to [-20, 2]
    critics  Q_1(s, a, z), Q_2(s, a, z)  and their Polyak-averaged targets

Actions are kept in ``[-1, 1]`` inside the agent (what the tanh produces, what the buffers and
the context hold); ``to_env_action`` / ``from_env_action`` map them to the environment's Box, as
oyster's ``NormalizedBoxEnv`` does.

Oyster (``launch_experiment.py``) also trains a state-value network V(s, z) with a target copy
(SAC as first published, Haarnoja et al. 2018, arXiv:1801.01290). Here the critics' targets are
Polyak copies of the twin Q-networks and no V network is kept (SAC as revised, Haarnoja et al.
2018, arXiv:1812.05905): one network fewer to train and to checkpoint, the same fixed point.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from metarl_tf.algorithms.pearl import losses
from metarl_tf.networks.mlp import mlp

ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.tanh}
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's TanhGaussianPolicy bounds on log sigma.


def dense_apply(params: Sequence[tf.Tensor], x: tf.Tensor, activation: str = "relu") -> tf.Tensor:
    """An MLP ``[W_0, b_0, ..., W_L, b_L]`` on ``x [..., d_in]`` (hidden ``activation``, linear out)."""
    act = ACTIVATIONS[activation]
    lead = tf.shape(x)[:-1]
    h = tf.reshape(x, [-1, x.shape[-1]])
    n = len(params) // 2
    for i in range(n):
        h = tf.matmul(h, params[2 * i]) + params[2 * i + 1]
        if i < n - 1:
            h = act(h)
    return tf.reshape(h, tf.concat([lead, [h.shape[-1]]], 0))


def context_rows(observation, action, reward, next_observation=None) -> tf.Tensor:
    """The encoder's input rows ``concat(s, a, r[, s'])`` ``[..., context_dim]``."""
    parts = [observation, action, reward[..., None]]
    if next_observation is not None:
        parts.append(next_observation)
    return tf.concat(parts, axis=-1)


def encode(params, context: tf.Tensor, mask: tf.Tensor, latent_dim: int,
           information_bottleneck: bool = True, activation: str = "relu"):
    """The posterior over z of each task from its context.

    Args:
      params: the encoder's weights.
      context: ``[T, N, context_dim]`` rows (``context_rows``).
      mask: ``[T, N]`` 1 for real transitions, 0 for padding.
      latent_dim: size of z.
      information_bottleneck: a Gaussian product (True) or the masked mean of the encodings with
        zero variance (False: the deterministic encoder).

    Returns:
      ``(mean, var)`` each ``[T, latent_dim]``; a task without a real transition gets the prior
      N(0, I) (deterministic encoder: mean 0).
    """
    out = dense_apply(params, context, activation)
    mu = out[..., :latent_dim]
    if information_bottleneck:
        sigma2 = tf.nn.softplus(out[..., latent_dim:])
        return losses.product_of_gaussians(mu, sigma2, mask)
    mask = tf.cast(mask, mu.dtype)
    count = tf.reduce_sum(mask, axis=-1, keepdims=True)
    mean = tf.math.divide_no_nan(tf.reduce_sum(mu * mask[..., None], axis=-2), count)
    return mean, tf.zeros_like(mean)


def actor_outputs(params, observation: tf.Tensor, z: tf.Tensor, activation: str = "relu"):
    """``(mean, log_std)`` of the pre-tanh Gaussian; ``z`` broadcasts over ``observation``'s rows."""
    z = tf.broadcast_to(z, tf.concat([tf.shape(observation)[:-1], tf.shape(z)[-1:]], 0))
    out = dense_apply(params, tf.concat([observation, z], axis=-1), activation)
    mean, log_std = tf.split(out, 2, axis=-1)
    return mean, tf.clip_by_value(log_std, LOG_STD_MIN, LOG_STD_MAX)


def q_apply(params, observation, action, z, activation: str = "relu") -> tf.Tensor:
    """``Q(s, a, z)`` ``[...]``; ``z`` broadcasts over the rows."""
    z = tf.broadcast_to(z, tf.concat([tf.shape(observation)[:-1], tf.shape(z)[-1:]], 0))
    return dense_apply(params, tf.concat([observation, action, z], axis=-1), activation)[..., 0]


def sample_action(params, observation, z, noise, activation: str = "relu"):
    """A reparameterised tanh-Gaussian draw: ``(action in [-1, 1], log_prob, mean, log_std)``."""
    mean, log_std = actor_outputs(params, observation, z, activation)
    pre_tanh = mean + tf.exp(log_std) * noise
    return (tf.tanh(pre_tanh), losses.tanh_gaussian_log_prob(pre_tanh, mean, log_std), mean,
            log_std)


def to_env_action(action, low, high):
    """``[-1, 1]`` -> the environment's ``[low, high]`` (NumPy or TF)."""
    return low + (action + 1.0) * 0.5 * (high - low)


def from_env_action(action, low, high):
    """The environment's ``[low, high]`` -> ``[-1, 1]``."""
    return 2.0 * (action - low) / (high - low) - 1.0


@dataclasses.dataclass
class PEARLNetworks:
    """The four Keras MLPs of a PEARL agent and the sizes they were built for.

    Built by ``make_networks``; ``context_dim`` is ``obs + act + 1`` (``+ obs`` with next
    observations in the context); ``action_low`` / ``action_high`` are the environment's bounds.
    """

    encoder: keras.Model
    actor: keras.Model
    q1: keras.Model
    q2: keras.Model
    obs_dim: int
    act_dim: int
    latent_dim: int
    context_dim: int
    information_bottleneck: bool
    use_next_obs: bool
    action_low: np.ndarray
    action_high: np.ndarray
    activation: str = "relu"
    hidden: tuple = (300, 300, 300)
    encoder_hidden: tuple = (200, 200, 200)


def make_networks(obs_dim: int, act_dim: int, action_low, action_high, latent_dim: int = 5,
                  hidden=(300, 300, 300), encoder_hidden=(200, 200, 200),
                  activation: str = "relu", information_bottleneck: bool = True,
                  use_next_obs: bool = False, seed: int = 0) -> PEARLNetworks:
    """Builds the encoder, actor and twin critics (oyster's sizes by default)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)} for PEARL, got "
                         f"{activation!r}")
    low = np.broadcast_to(np.asarray(action_low, np.float32), (act_dim,)).copy()
    high = np.broadcast_to(np.asarray(action_high, np.float32), (act_dim,)).copy()
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise ValueError(f"PEARL needs a bounded action space (finite low < high), got low {low}, "
                         f"high {high}")
    context_dim = obs_dim + act_dim + 1 + (obs_dim if use_next_obs else 0)
    enc_out = 2 * latent_dim if information_bottleneck else latent_dim
    kw = dict(activation=activation, init="glorot_uniform")
    return PEARLNetworks(
        encoder=mlp(context_dim, enc_out, encoder_hidden, seed=seed, name="context_encoder", **kw),
        actor=mlp(obs_dim + latent_dim, 2 * act_dim, hidden, seed=seed + 100, name="actor", **kw),
        q1=mlp(obs_dim + act_dim + latent_dim, 1, hidden, seed=seed + 200, name="q1", **kw),
        q2=mlp(obs_dim + act_dim + latent_dim, 1, hidden, seed=seed + 300, name="q2", **kw),
        obs_dim=obs_dim, act_dim=act_dim, latent_dim=latent_dim, context_dim=context_dim,
        information_bottleneck=information_bottleneck, use_next_obs=use_next_obs,
        action_low=low, action_high=high, activation=activation, hidden=tuple(hidden),
        encoder_hidden=tuple(encoder_hidden))
