"""In-graph rollouts on ``PointNavTF``: a meta-batch of episodes as one traceable computation.

Where ``collect_episodes`` steps gymnasium environments from Python, these functions run ``N``
episodes for each of ``T`` tasks as a single ``tf.scan`` over the horizon, batched over ``[T, N]``,
so they can sit inside the same ``tf.function`` (``jit_compile=True`` included) as the inner loop and
the meta-update of a MAML-RL iteration. The result is the same ``Episodes`` structure, as tensors,
with gradients stopped: episodes are data, and a policy-gradient loss re-evaluates their log
probabilities under the parameters it differentiates.

All exploration noise of a rollout is drawn up front from one stateless seed (``[H, T, N, act]``
standard normals, Philox), so a rollout is a pure function of ``(params, goals, seed)``::

    a_t = mu(s_t) + exp(log_std) * eps_t,   eps_t ~ N(0, I)
    s_t+1, r_t, done_t = PointNavTF.step(s_t, a_t)
    m_t+1 = m_t * (1 - done_t),   m_0 = 1

Example::

    apply = policy_apply_fn(gaussian_mlp_policy(2, 2))
    @tf.function(jit_compile=True)
    def sample(params, goals, seed):
        return rollout_pointnav(apply, params, goals, seed, episodes_per_task=20, horizon=100)
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from metarl_tf.networks.policies import split_gaussian
from metarl_tf.rollouts.episodes import Episodes
from metarl_tf.tasks.pointnav import PointNavState, PointNavTF

ActionFn = Callable[[PointNavState, tf.Tensor], tf.Tensor]  # (state [T, N], noise) -> actions


def rollout_pointnav_actions(action_fn: ActionFn, goals, seed, episodes_per_task: int,
                             horizon: int = 100, env: PointNavTF | None = None) -> Episodes:
    """Rolls out any batched controller on ``PointNavTF``.

    Args:
      action_fn: ``(state, noise) -> actions``; ``state.position`` and ``state.goal`` are
        ``[T, N, 2]``, ``noise`` is this step's ``[T, N, 2]`` standard normals.
      goals: ``[T, 2]`` one goal per task.
      seed: stateless seed (int tensor ``[2]``) for the noise.
      episodes_per_task: ``N`` (static).
      horizon: ``H`` (static).
      env: the dynamics (default ``PointNavTF()``).

    Returns:
      ``Episodes`` of tensors ``[T, N, H, ...]``, gradients stopped, zero on padding.
    """
    for name, value in (("episodes_per_task", episodes_per_task), ("horizon", horizon)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    env = PointNavTF() if env is None else env
    goals = tf.stop_gradient(tf.convert_to_tensor(goals, tf.float32))
    num_tasks = tf.shape(goals)[0]
    goals_tn = tf.broadcast_to(goals[:, None, :], [num_tasks, episodes_per_task, 2])
    start = env.reset(goals_tn)
    noise = tf.random.stateless_normal([horizon, num_tasks, episodes_per_task, env.act_dim], seed,
                                       alg="philox")

    def step(carry, eps):
        position, alive = carry[0], carry[1]
        state = PointNavState(position, goals_tn)
        action = tf.convert_to_tensor(action_fn(state, eps), position.dtype)
        nxt, reward, done = env.step(state, action)
        m = tf.cast(alive, position.dtype)
        return (nxt.position, tf.logical_and(alive, tf.logical_not(done)), position * m[..., None],
                action * m[..., None], reward * m, m)

    zeros = tf.zeros_like(goals_tn)
    init = (start.position, tf.ones([num_tasks, episodes_per_task], tf.bool), zeros, zeros,
            zeros[..., 0], zeros[..., 0])
    _, _, obs, act, rew, mask = tf.scan(step, noise, initializer=init)   # each [H, T, N, ...]
    obs, act = (tf.transpose(x, [1, 2, 0, 3]) for x in (obs, act))
    rew, mask = (tf.transpose(x, [1, 2, 0]) for x in (rew, mask))
    return Episodes(*(tf.stop_gradient(x) for x in (obs, act, rew, mask)))


def rollout_pointnav(apply_fn: Callable, params: Sequence[tf.Tensor], goals, seed,
                     episodes_per_task: int, horizon: int = 100, env: PointNavTF | None = None,
                     deterministic: bool = False) -> Episodes:
    """``N`` episodes per task of a Gaussian policy with task-batched parameters.

    Args:
      apply_fn: ``(params, obs [T, N, 2]) -> [T, N, 4]`` = ``concat([mean, log_std])``
        (``policy_apply_fn(gaussian_mlp_policy(2, 2))``).
      params: task-batched parameters, ``[T, ...]`` each; task ``t`` acts with ``params[.][t]``.
      goals: ``[T, 2]``.
      seed: stateless seed ``[2]``.
      episodes_per_task, horizon: ``N`` and ``H`` (static).
      env: the dynamics (default ``PointNavTF()``).
      deterministic: act with the mean (no noise).

    Returns:
      ``Episodes`` of tensors: observations and actions ``[T, N, H, 2]``, rewards and mask
      ``[T, N, H]``.
    """
    params = [tf.stop_gradient(p) for p in params]

    def act(state, eps):
        mean, log_std = split_gaussian(apply_fn(params, state.position))
        return mean if deterministic else mean + tf.exp(log_std) * eps

    return rollout_pointnav_actions(act, goals, seed, episodes_per_task, horizon, env)


def pointnav_oracle(env: PointNavTF | None = None) -> ActionFn:
    """The goal-aware straight-line controller, as an ``action_fn`` (ignores the noise)."""
    env = PointNavTF() if env is None else env
    return lambda state, eps: env.oracle_action(state)
