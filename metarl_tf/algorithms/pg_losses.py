"""Policy-gradient objectives of gradient-based meta-RL, as pure TensorFlow functions.

Every function maps tensors to tensors (no NumPy, no Python side effects), so it traces into a
compiled train step and into an exported ``adapt`` signature alike. Shapes follow ``Episodes``:
``[T tasks, N episodes, H steps]``; per-task results are ``[T]``. Names follow rlax where a time
index matters (``logp_t``, ``adv_t``, ``m_t``).

**The inner step and its meta-gradient.** MAML-RL adapts with one vanilla policy-gradient step,
``theta' = theta + alpha * grad J_pre(theta)``, and meta-trains on the return of ``theta'``. The
pre-update episodes are *sampled from* ``pi_theta``, so the meta-gradient has to see that
dependence: the Hessian of the expected return is

    grad^2 E[R] = E[ sum_t (grad^2 log pi(a_t|s_t) + grad log pi(a_t|s_t) grad log pi(a_t|s_t)^T)
                     * A_t ] + (cross-time terms)

and differentiating the plain surrogate ``sum_t log pi(a_t|s_t) A_t`` twice gives only the first
term (the second, "sampling distribution" term is lost). Two estimators fix this; both are here:

* **LVC** (ProMP's low-variance curvature estimator, Rothfuss et al. 2018, arXiv:1810.06784), the
  default::

      J_LVC = 1/|valid| sum_{n,t} rho_t A_t,     rho_t = pi_theta(a_t|s_t) / perp(pi_old(a_t|s_t))

  Value and gradient are the usual ones at ``theta = old``; its Hessian has both per-step terms and
  drops the cross-time ones (biased, low variance -- ProMP's choice, and exact for one-step
  episodes).

* **DiCE** in its "loaded" form with a baseline (Foerster et al. 2018, arXiv:1802.05098; Farquhar
  et al. 2019, arXiv:1909.10549), unbiased to every order with ``A_t = G_t - V(s_t)`` (GAE with
  lambda = 1; lambda < 1 trades bias for variance)::

      W_t = sum_{t' <= t} (log pi_theta(a_t'|s_t') - log pi_old(a_t'|s_t'))
      J_DiCE = 1/|valid| sum_{n,t} (box(W_t) - box(W_t-1)) A_t
      box(x) = exp(x - perp(x)),   W_-1 = 0

  Its value is 0 at ``theta = old`` (only its derivatives carry information).

``perp`` is stop-gradient. With ``behaviour_log_probs`` (the sampling policy's log-probabilities,
constants) in place of ``perp(log pi_theta)``, both become importance-weighted estimators that stay
valid when the outer loop re-evaluates the inner step at a meta-parameter other than the sampling
one (TRPO's line search, ProMP's several outer steps); at the sampling point they are identical.

**Outer objectives** (on the post-adaptation episodes, sampled with the adapted ``theta'_old``)::

    r_t = pi_theta'(a_t|s_t) / pi_theta'_old(a_t|s_t)
    TRPO surrogate     L(theta)  = mean_t r_t A_t
    ProMP clipped      L(theta)  = mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)
    trust region       KL(theta) = mean_t KL(pi_theta'_old(.|s_t) || pi_theta'(.|s_t))
    ProMP KL penalty coefficient, per inner step (ProMP's adaptive rule):
        eta <- 2 eta if KL > 1.5 target;   eta <- eta / 2 if KL < target / 1.5
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

from metarl_tf.networks.policies import (GaussianHead, categorical_kl, categorical_log_prob,
                                         gaussian_kl, gaussian_log_prob, policy_apply_fn,
                                         split_gaussian)
from metarl_tf.rollouts.baselines import LinearFeatureBaseline
from metarl_tf.rollouts.episodes import Episodes
from metarl_tf.rollouts.returns import discounted_returns, gae, normalize_advantages

DISTRIBUTIONS = ("gaussian", "categorical")
ESTIMATORS = ("lvc", "dice")


# -- policies ------------------------------------------------------------------------------------
def policy_distribution(model: keras.Model) -> str:
    """``"gaussian"`` if ``model`` ends in a ``GaussianHead`` (``gaussian_mlp_policy``), else
    ``"categorical"`` (its output is read as logits)."""
    return "gaussian" if any(isinstance(layer, GaussianHead) for layer in model.layers) else \
        "categorical"


def resolve_policy(apply_fn_or_policy, distribution: str | None = None) -> tuple[Callable, str]:
    """``(apply_fn, distribution)`` from a Keras policy or an ``apply(params, obs)`` callable.

    A Keras model gives ``policy_apply_fn(model)`` and, unless ``distribution`` is given, the
    distribution its head implies. A plain callable needs ``distribution``.
    """
    if isinstance(apply_fn_or_policy, keras.Model):
        dist = distribution or policy_distribution(apply_fn_or_policy)
        fn = policy_apply_fn(apply_fn_or_policy)
    elif callable(apply_fn_or_policy):
        if distribution is None:
            raise ValueError("`distribution` ('gaussian' or 'categorical') is required when "
                             "`apply_fn_or_policy` is a function rather than a Keras policy")
        dist, fn = distribution, apply_fn_or_policy
    else:
        raise TypeError("`apply_fn_or_policy` must be a keras.Model or a callable "
                        f"apply(params, observations), got {type(apply_fn_or_policy).__name__}")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"`distribution` must be one of {DISTRIBUTIONS}, got {dist!r}")
    return fn, dist


def log_prob(outputs: tf.Tensor, actions: tf.Tensor, distribution: str) -> tf.Tensor:
    """``log pi(a | s)`` from the policy's outputs (``concat([mean, log_std])`` or logits)."""
    if distribution == "gaussian":
        mean, log_std = split_gaussian(outputs)
        return gaussian_log_prob(mean, log_std, tf.cast(actions, mean.dtype))
    return categorical_log_prob(outputs, actions)


def kl_divergence(outputs_old: tf.Tensor, outputs_new: tf.Tensor, distribution: str) -> tf.Tensor:
    """``KL(pi_old(.|s) || pi_new(.|s))`` from two policies' outputs at the same observations."""
    if distribution == "gaussian":
        return gaussian_kl(*split_gaussian(outputs_old), *split_gaussian(outputs_new))
    return categorical_kl(outputs_old, outputs_new)


# -- reductions ----------------------------------------------------------------------------------
def masked_mean(x_t: tf.Tensor, m_t: tf.Tensor) -> tf.Tensor:
    """Per-task mean over the valid steps: ``[T, ...] -> [T]`` (0 for a task with no valid step)."""
    m_t = tf.cast(m_t, x_t.dtype)
    axes = list(range(1, len(x_t.shape)))
    return tf.reduce_sum(x_t * m_t, axis=axes) / tf.maximum(tf.reduce_sum(m_t, axis=axes), 1.0)


def average_return(rewards: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean undiscounted episode return per task: ``[T, N, H] -> [T]``."""
    rewards = tf.convert_to_tensor(rewards)
    return tf.reduce_mean(tf.reduce_sum(rewards * tf.cast(mask, rewards.dtype), axis=-1), axis=-1)


# -- advantages ----------------------------------------------------------------------------------
def compute_advantages(episodes: Episodes, discount: float = 0.99, gae_lambda: float = 1.0,
                       baseline: LinearFeatureBaseline | None = None,
                       normalize: bool = True) -> tf.Tensor:
    """Advantages of MAML-RL / ProMP: linear feature baseline fitted per task, then GAE.

    ::

        G_t = discounted_returns(r, m, discount);   V = baseline.fit_predict(obs, G, m)
        A_t = gae(r, V, m, discount, gae_lambda)    (lambda = 1: G_t - V(s_t))
        A_t <- (A_t - mean_task) / (std_task + 1e-8)   if normalize (rllab's ``center_adv``)

    Returns:
      ``[T, N, H]`` float32 advantages, 0 on padding, gradients stopped (they are data).
    """
    baseline = LinearFeatureBaseline() if baseline is None else baseline
    rewards = tf.convert_to_tensor(episodes.rewards, tf.float32)
    mask = tf.cast(episodes.mask, tf.float32)
    returns = discounted_returns(rewards, mask, discount)
    values = baseline.fit_predict(tf.convert_to_tensor(episodes.observations, tf.float32), returns,
                                  mask)
    adv = gae(rewards, values, mask, discount, gae_lambda)
    if normalize:
        adv = normalize_advantages(adv, mask)
    return tf.stop_gradient(adv)


# -- estimators ----------------------------------------------------------------------------------
def importance_weighted_advantage(logp_t, old_logp_t, adv_t, m_t) -> tf.Tensor:
    """``mean_valid(exp(logp_t - old_logp_t) * adv_t)`` per task ``[T]``: TRPO / LVC surrogate."""
    ratio_t = tf.exp(logp_t - old_logp_t)
    return masked_mean(ratio_t * adv_t, m_t)


def lvc_objective(logp_t, adv_t, m_t, behaviour_logp_t=None) -> tf.Tensor:
    """ProMP's LVC objective per task ``[T]`` (to maximise); see the module docstring.

    Args:
      logp_t: ``[T, N, H]`` log-probabilities of the taken actions under the parameters being
        differentiated.
      adv_t: ``[T, N, H]`` advantages (constants).
      m_t: ``[T, N, H]`` mask.
      behaviour_logp_t: log-probabilities under the sampling policy (constants); default
        ``stop_gradient(logp_t)``.
    """
    old = tf.stop_gradient(logp_t) if behaviour_logp_t is None else \
        tf.stop_gradient(behaviour_logp_t)
    return importance_weighted_advantage(logp_t, old, adv_t, m_t)


def dice_objective(logp_t, adv_t, m_t, behaviour_logp_t=None) -> tf.Tensor:
    """Loaded DiCE objective per task ``[T]`` (to maximise); see the module docstring.

    Same arguments as ``lvc_objective``. The cumulative sum runs over the last (time) axis and only
    over valid steps.
    """
    old = tf.stop_gradient(logp_t) if behaviour_logp_t is None else \
        tf.stop_gradient(behaviour_logp_t)
    m_t = tf.cast(m_t, logp_t.dtype)
    w_t = tf.cumsum((logp_t - old) * m_t, axis=-1)                   # W_t
    w_tm1 = tf.cumsum((logp_t - old) * m_t, axis=-1, exclusive=True)  # W_t-1 (W_-1 = 0)
    # box(W) = exp(W - perp(W)) is 1 in value at the sampling point; off it (behaviour_logp given
    # and theta != old) it carries the cumulative importance weight exp(perp(W)) as well.
    box_t = tf.exp(w_t)
    box_tm1 = tf.exp(w_tm1)
    return masked_mean((box_t - box_tm1) * adv_t, m_t)


def inner_pg_loss(apply_fn_or_policy, params: Sequence[tf.Tensor], episodes: Episodes,
                  discount: float = 0.99, gae_lambda: float = 1.0,
                  baseline: LinearFeatureBaseline | None = None, normalize: bool = True,
                  estimator: str = "lvc", distribution: str | None = None,
                  advantages: tf.Tensor | None = None,
                  behaviour_log_probs: tf.Tensor | None = None) -> tf.Tensor:
    """The MAML-RL inner loss per task, ``[T]``: minus a policy-gradient objective whose
    derivatives of every order used by MAML are taken through the sampling distribution.

    This is the ``task_loss`` that ``adaptation.adapt`` differentiates::

        loss = lambda p: inner_pg_loss(policy, p, episodes)           # [T]
        adapted = adaptation.adapt(loss, params, adaptation.SGD(0.1), num_steps=1)

    Args:
      apply_fn_or_policy: a Keras policy (``gaussian_mlp_policy`` / ``categorical_mlp_policy``)
        or an ``apply(params, observations [T, ..., obs_dim]) -> outputs`` function.
      params: task-batched policy parameters (``[T, *shape]`` each).
      episodes: ``Episodes`` of ``[T, N, H, ...]`` tensors or arrays from the new tasks.
      discount, gae_lambda: for the returns and GAE (MAML-RL: 0.99 and 1.0).
      baseline: the per-task value baseline (default ``LinearFeatureBaseline()``).
      normalize: standardize advantages per task.
      estimator: ``"lvc"`` (ProMP, default) or ``"dice"`` (loaded DiCE).
      distribution: ``"gaussian"`` or ``"categorical"``; inferred from a Keras policy.
      advantages: precomputed ``compute_advantages(episodes, ...)`` (skips the baseline fit).
      behaviour_log_probs: ``[T, N, H]`` log-probabilities of the actions under the policy that
        sampled them; default: the current ``params`` (i.e. the episodes are on-policy).

    Returns:
      ``[T]`` losses (``-objective``). Pure TensorFlow: traceable, XLA-compilable, no side effects.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {ESTIMATORS}, got {estimator!r}")
    apply_fn, dist = resolve_policy(apply_fn_or_policy, distribution)
    obs = tf.convert_to_tensor(episodes.observations, tf.float32)
    mask = tf.cast(episodes.mask, tf.float32)
    if advantages is None:
        advantages = compute_advantages(episodes, discount, gae_lambda, baseline, normalize)
    logp = log_prob(apply_fn(list(params), obs), episodes.actions, dist)
    objective = lvc_objective if estimator == "lvc" else dice_objective
    return -objective(logp, tf.stop_gradient(advantages), mask, behaviour_log_probs)


def clipped_surrogate(logp_t, old_logp_t, adv_t, m_t, clip: float) -> tf.Tensor:
    """PPO / ProMP clipped surrogate per task ``[T]`` (to maximise)::

        r_t = exp(logp_t - old_logp_t)
        mean_valid(min(r_t A_t, clip(r_t, 1 - clip, 1 + clip) A_t))
    """
    ratio_t = tf.exp(logp_t - tf.stop_gradient(old_logp_t))
    clipped_t = tf.clip_by_value(ratio_t, 1.0 - clip, 1.0 + clip)
    return masked_mean(tf.minimum(ratio_t * adv_t, clipped_t * adv_t), m_t)


def trpo_surrogate(logp_t, old_logp_t, adv_t, m_t) -> tf.Tensor:
    """MAML-TRPO's outer surrogate per task ``[T]`` (to maximise): ``mean_valid(r_t A_t)`` with
    ``r_t = pi_theta'(a_t|s_t) / pi_theta'_old(a_t|s_t)`` on the post-adaptation episodes."""
    return importance_weighted_advantage(logp_t, tf.stop_gradient(old_logp_t), adv_t, m_t)


def mean_kl(outputs_old, outputs_new, m_t, distribution: str) -> tf.Tensor:
    """Per-task mean ``KL(pi_old || pi_new)`` over the valid steps ``[T]``."""
    return masked_mean(kl_divergence(tf.stop_gradient(outputs_old), outputs_new, distribution), m_t)


def adaptive_kl_coeff(coeff, kl, target):
    """ProMP's (and PPO's) adaptive penalty: ``x2`` above ``1.5 target``, ``/2`` below
    ``target / 1.5``, unchanged in between. Elementwise on tensors."""
    coeff = tf.convert_to_tensor(coeff)
    kl = tf.cast(kl, coeff.dtype)
    target = tf.cast(target, coeff.dtype)
    return tf.where(kl > 1.5 * target, coeff * 2.0, tf.where(kl < target / 1.5, coeff / 2.0, coeff))
