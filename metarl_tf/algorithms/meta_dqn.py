"""Meta-DQN: a task-conditioned Q-network whose task embedding z is inferred by a few gradient steps.

Context adaptation in the spirit of CAVIA (Zintgraf et al. 2019, arXiv:1810.03642) applied to deep
Q-learning (DQN, Mnih et al. 2015; double DQN, van Hasselt et al. 2016, arXiv:1509.06461). One
network ``Q(s, a; theta, z)`` serves a whole task family; only the low-dimensional embedding ``z``
is adapted to a task, from a meta-learned start ``z_0``, on the TD loss of a handful of that task's
transitions. The network and ``z_0`` (and the per-dimension inner rates) are meta-learned through
the adaptation.

One meta-iteration, with a fixed pool of ``N`` training tasks, each with its own replay buffer and a
*random buffer* of uniformly-random-policy transitions (support sets of ``support_size`` are drawn
from it: at test time the agent adapts from such transitions)::

    for every pool task i (all at once):       z_i = adapt(z_0; support_i)
        step its environment with epsilon-greedy Q(s, .; theta, z_i); append to replay_i
    meta-batch B of T pool tasks:
        z_i  = adapt(z_0; support_i)                            (differentiable in theta, z_0, alpha)
        L    = mean_i TD_huber(theta, z_i; query_i ~ replay_i + random_i, target network theta^-)
        (theta, z_0, alpha) <- Adam(grad L)
    theta^- <- theta every ``target_update_period`` iterations (or Polyak)

    adapt(z_0; D):  z <- z - alpha (*) d/dz mean_{(s,a,r,s',d) in D} h(y - Q(s, a; theta, z))
                    y = r + gamma (1 - d) max_a' Q(s', a'; theta, z)       (gradient stopped)

``adapt`` is ``metarl_tf.adaptation.adapt`` applied to ``z`` alone (the one inner loop of the
library; the exported ``adapt`` signature traces the same code). Its TD targets come from the online
network: a deployed network has no target copy, so training adapts exactly as deployment does.
``first_order=True`` stops the gradient through the inner gradients.

``MetaDQNConfig.inner_loss`` can replace the TD loss of ``adapt``: ``"reward"`` adapts z on the
squared error of a z-conditioned reward head ``r_hat(s, a, s', z)`` (meta-learned with the network;
the outer loss then adds the head's error on the query), ``"td+reward"`` on their sum; and
``normalize_inner_grad`` makes every inner step of unit length per task before the rates scale it.
On the grid-world the TD inner loss does not learn and the reward head with normalised steps does
(``docs/algorithms/meta-dqn.md``). Every environment is a batched
TF one (``tasks.tf_env()``), so collection, adaptation and the update are one compiled function.

Also here: ``PerTaskDQNLearner`` (independent double DQNs, one per task, trained from scratch,
batched over tasks: the per-task reference of the benchmark) and ``finetune`` (the fine-tuning
baseline: the whole network adapted by SGD on the same support transitions).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf._checks import check_bool, check_float, check_int
from metarl_tf.algorithms import dqn
from metarl_tf.networks.q_network import TaskConditionedQNetwork, q_values
from metarl_tf.rollouts.replay import (LoopState, TaskReplayBuffer, Transitions, collect,
                                       init_loop)

TARGET_UPDATES = ("periodic", "polyak")
EVAL_ADAPTATIONS = ("z", "finetune")
SUPPORT_SAMPLINGS = ("uniform", "window")
INNER_LOSSES = ("td", "reward", "td+reward", "model")
REWARD_HEADS = ("mlp", "bilinear", "distance", "next_distance", "next_logistic")


def _check_choice(config, name, choices):
    if getattr(config, name) not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {getattr(config, name)!r}")


@dataclasses.dataclass(frozen=True)
class MetaDQNConfig:
    """Meta-DQN settings (defaults: the CartPoleDir preset). DQN settings follow common CartPole
    DQN practice (Adam 1e-3, Huber, double DQN, gamma 0.99); CAVIA's context defaults: z starts at
    0, a few inner steps with a large inner rate (CAVIA RL: 1 step, rate 10; here learned rates)."""

    z_dim: int = 8  # Task-embedding size.
    inner_steps: int = 3  # Gradient steps on z in training and evaluation (0: task-agnostic DQN).
    inner_lr: float = 1.0  # Inner rate on z (initial value when learn_inner_lr).
    learn_inner_lr: bool = True  # Meta-learn one inner rate per z dimension (Meta-SGD on z).
    per_step_inner_lr: bool = False  # With learn_inner_lr: one learned rate per inner step and z
    # dimension (MAML++'s per-step rates, arXiv:1810.09502), so the steps can go coarse to fine.
    inner_lr_decay: float = 1.0  # Per-step rates start at inner_lr * inner_lr_decay**k for step
    # k (per_step_inner_lr only): < 1 starts them as a decaying schedule, which lets a long inner
    # loop settle near the inner loss's minimum instead of oscillating around it.
    learn_z_init: bool = True  # Meta-learn z_0 (False: z_0 stays 0, as CAVIA's context reset).
    first_order: bool = False  # Stop the gradient through the inner gradients.
    inner_loss: str = "td"  # What z adapts on: "td" (the TD loss of the support set), "reward"
    # (the squared error of a z-conditioned reward head r(s, a, s', z) on the support rewards) or
    # "td+reward" (their sum, the reward term weighted by reward_loss_weight), or "model" (the
    # squared error of a z-conditioned one-step model head predicting (r, s' - s) from (s, a):
    # for families whose tasks differ in their dynamics, as CartPoleDir, where the reward is 1 on
    # every step and says nothing). With a head the outer loss is TD + reward_loss_weight *
    # the head's error of the adapted z on the query.
    reward_loss_weight: float = 1.0  # Weight of the reward-prediction error (inner and outer).
    reward_hidden: int = 64  # Width of the reward head's two hidden layers (inner_loss != "td").
    reward_head: str = "mlp"  # The reward head's form (inner_loss != "td"): "mlp" (an MLP on
    # concat(s, s') and z, one output per action) or "bilinear" (r_hat = [s, s', 1]^T M [z, 1],
    # linear in the observations and in z: no cell can be memorised as "never rewarded", and the
    # first inner step moves z along M's image of the rewarded transitions) or "distance"
    # (r_hat = a exp(-|[s, s', 1] P - z|^2) + b: reward where an affine embedding of the
    # transition is near z) or "next_distance" (the same on [s', 1] alone: reward where the
    # state reached is near z in an affine embedding, the prior of goal-reaching tasks) or
    # "next_logistic" (a logistic model of 0/1 rewards on the same embedding, P(r = 1) =
    # sigmoid(c - |[s', 1] P - z|^2), fitted by cross-entropy: far from the rewarded states its
    # gradient on z does not vanish but pulls z straight at their embedding, so the inner loop
    # also reaches goals outside the training goals' range; rewards must lie in [0, 1]); see
    # reward_prediction and reward_loss.
    task_loss_weight: float = 0.0  # Weight of an auxiliary meta-training loss: a meta-learned
    # linear decoder of the adapted z must predict the task's parameters (standardised over the
    # pool), the privileged task information of meta-training only (as Humplik et al. 2019,
    # arXiv:1905.06424, supervise task inference); adaptation itself never sees them. 0: off.
    normalize_inner_grad: bool = False  # Each inner step moves z along its gradient scaled to unit
    # norm per task (z <- z - alpha (*) g / |g|): the step no longer scales with the loss.
    outer_loss_steps: int = 1  # The outer loss averages over the z of the last outer_loss_steps
    # inner steps (1: the final z only). MAML++'s multi-step loss (arXiv:1810.09502) over the
    # final steps: z must be good there and stay good, so the inner loop learns to settle (where
    # it settles is the inner loss's minimum, defined for held-out tasks too) rather than to land
    # on the training tasks' z after exactly inner_steps steps.
    num_train_tasks: int = 32  # Pool of training tasks, each with its own replay buffer.
    meta_batch_size: int = 16  # Pool tasks per meta-update.
    support_size: int = 200  # Random-policy transitions per task that z adapts on (the issue: <= 200).
    random_buffer_size: int = 1000  # Random-policy transitions kept per pool task (one walk);
    # each support set is a fresh draw of support_size of them (see support_sampling), so z learns
    # to adapt from varied support sets.
    support_sampling: str = "uniform"  # How a meta-training support set is drawn from the
    # random buffer: "uniform" (support_size independent slots) or "window" (support_size
    # consecutive slots: a random walk of support_size steps, as evaluation and deployment
    # collect one, so supports with few or no rare rewards occur at their real rate).
    support_reward_dropout: float = 0.0  # Share of meta-training support sets whose rewarded
    # transitions are replaced by unrewarded ones of the same set (without_rewards): a support
    # that saw no reward, as a short random walk far from a sparse goal gives, still carries where
    # the goal is NOT, and the outer loss (on the task's real query) trains z to use it. 0: off.
    query_random_fraction: float = 0.5  # Share of each query batch drawn from the random buffer
    # (the rest from the epsilon-greedy replay): keeps rare rewards in the outer loss early on.
    query_batch_size: int = 64  # Replay transitions per task in the outer TD loss.
    replay_capacity: int = 20000  # Transitions kept per task.
    prefill_steps: int = 500  # Random-policy steps per task into replay before training.
    env_steps_per_iteration: int = 1  # Environment steps per pool task per meta-iteration.
    act_refresh_every: int = 10  # Meta-iterations between re-adapting the pool tasks' acting z.
    discount: float = 0.99  # gamma.
    n_step: int = 1  # n-step targets in the outer loss (1 = one-step).
    double_dqn: bool = True  # Double-DQN targets in the outer loss (else max over the target net).
    huber_delta: float = 1.0  # Huber loss kappa.
    learning_rate: float = 1e-3  # Adam rate for theta, z_0 and the inner rates.
    max_grad_norm: float = 10.0  # Global gradient-norm clip of the meta-gradient.
    target_update: str = "periodic"  # "periodic" (hard copy) or "polyak".
    target_update_period: int = 250  # Meta-iterations between hard copies.
    polyak_tau: float = 0.005  # Polyak rate per meta-iteration.
    epsilon_start: float = 1.0  # Exploration epsilon at iteration 0.
    epsilon_end: float = 0.05  # Final epsilon.
    epsilon_decay_steps: int = 5000  # Meta-iterations of linear epsilon decay.
    eval_episodes: int = 2  # Greedy episodes per held-out task in evaluate().
    eval_adaptation: str = "z"  # evaluate() adapts "z" (Meta-DQN) or "finetune"s the whole network.
    finetune_lr: float = 0.01  # SGD rate of whole-network fine-tuning (eval_adaptation "finetune").
    steps_per_execution: int = 50  # Meta-iterations per compiled call.
    jit_compile: bool = False  # XLA-compile the train step.

    def __post_init__(self):
        check_int(self, "z_dim", minimum=0)
        check_int(self, "inner_steps", minimum=0)
        check_float(self, "inner_lr")
        for name in ("learn_inner_lr", "learn_z_init", "first_order", "double_dqn", "jit_compile",
                     "normalize_inner_grad", "per_step_inner_lr"):
            check_bool(self, name)
        for name in ("num_train_tasks", "meta_batch_size", "support_size", "random_buffer_size",
                     "query_batch_size",
                     "replay_capacity", "env_steps_per_iteration", "act_refresh_every", "n_step",
                     "target_update_period", "epsilon_decay_steps", "eval_episodes",
                     "steps_per_execution"):
            check_int(self, name)
        check_int(self, "prefill_steps", minimum=0)
        check_float(self, "inner_lr_decay")
        if self.per_step_inner_lr and not self.learn_inner_lr:
            raise ValueError("`per_step_inner_lr` needs `learn_inner_lr` (the per-step rates are "
                             "learned)")
        if self.inner_lr_decay != 1.0 and not self.per_step_inner_lr:
            raise ValueError(f"`inner_lr_decay` ({self.inner_lr_decay}) needs "
                             "`per_step_inner_lr` (it sets the per-step rates' start)")
        if self.per_step_inner_lr and self.inner_steps < 1:
            raise ValueError("`per_step_inner_lr` needs `inner_steps` >= 1")
        check_int(self, "outer_loss_steps")
        if self.outer_loss_steps > max(self.inner_steps, 1):
            raise ValueError(f"`outer_loss_steps` ({self.outer_loss_steps}) must be <= "
                             f"`inner_steps` ({self.inner_steps}) (or 1 with no inner step)")
        if self.support_size > self.random_buffer_size:
            raise ValueError(f"`support_size` ({self.support_size}) must be <= "
                             f"`random_buffer_size` ({self.random_buffer_size})")
        check_float(self, "query_random_fraction", 0.0, 1.0, low_inclusive=True)
        check_float(self, "support_reward_dropout", 0.0, 1.0, low_inclusive=True)
        if self.meta_batch_size > self.num_train_tasks:
            raise ValueError(f"`meta_batch_size` ({self.meta_batch_size}) must be <= "
                             f"`num_train_tasks` ({self.num_train_tasks})")
        if self.prefill_steps + self.env_steps_per_iteration < self.n_step:
            raise ValueError("`prefill_steps` + `env_steps_per_iteration` must be >= `n_step`")
        check_float(self, "discount", 0.0, 1.0)
        check_float(self, "huber_delta")
        check_float(self, "learning_rate")
        check_float(self, "max_grad_norm")
        check_float(self, "polyak_tau", 0.0, 1.0)
        check_float(self, "epsilon_start", 0.0, 1.0, low_inclusive=True)
        check_float(self, "epsilon_end", 0.0, 1.0, low_inclusive=True)
        check_float(self, "finetune_lr")
        check_float(self, "reward_loss_weight")
        check_float(self, "task_loss_weight", low_inclusive=True)
        check_int(self, "reward_hidden")
        _check_choice(self, "inner_loss", INNER_LOSSES)
        _check_choice(self, "reward_head", REWARD_HEADS)
        if self.inner_loss == "model" and self.reward_head != "mlp":
            raise ValueError("`reward_head` must be 'mlp' with `inner_loss` 'model' (the one-step "
                             f"model head is an MLP), got {self.reward_head!r}")
        _check_choice(self, "support_sampling", SUPPORT_SAMPLINGS)
        _check_choice(self, "target_update", TARGET_UPDATES)
        _check_choice(self, "eval_adaptation", EVAL_ADAPTATIONS)


# -- the inner loop: TD loss of z and its adaptation ----------------------------------------------
def inner_td_loss(params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions, discount: float,
                  huber_delta: float = 1.0, activation: str = "relu") -> tf.Tensor:
    """Per-task TD loss ``[T]`` of ``Q(.; params, z)`` on ``[T, K]`` one-step transitions.

    ``y = r + gamma (1 - terminated) max_a Q(s', a; params, z)`` with the gradient stopped (the
    online network bootstraps itself, as a deployed network must).
    """
    q_tm1 = q_values(params, batch.observation, z, activation)
    q_t = q_values(params, batch.next_observation, z, activation)
    discount_t = discount * (1.0 - tf.cast(batch.terminated, q_t.dtype))
    target = dqn.q_learning_target(tf.cast(batch.reward, q_t.dtype), discount_t, q_t)
    return dqn.td_loss(q_tm1, batch.action, target, huber_delta)


def reward_head_kind(reward_params: Sequence[tf.Tensor], obs_dim: int | None = None) -> str:
    """A guess at the head's form (``MetaDQNConfig.reward_head``) from its parameter list, for
    callers that were not told it (the learner and the export always pass ``reward_head``): ``[M]`` is
    ``"bilinear"``, ``[P, (a, b)]`` is ``"distance"`` (``P`` with ``2 obs_dim + 1`` rows) or
    ``"next_distance"`` (``obs_dim + 1`` rows; told apart only when ``obs_dim`` is given), a
    ``TaskConditionedQNetwork``'s weights (two hidden layers: 6 tensors) are ``"mlp"``;
    ``[P, (c,)]`` is ``"next_logistic"``."""
    params = list(reward_params)
    if len(params) == 2 and len(params[0].shape) == 2 and params[1].shape.as_list() == [1]:
        return "next_logistic"
    if len(params) == 1 and len(params[0].shape) == 2:
        return "bilinear"
    if len(params) == 2 and len(params[0].shape) == 2 and params[1].shape.as_list() == [2]:
        if obs_dim is not None and int(params[0].shape[0]) == int(obs_dim) + 1:
            return "next_distance"
        return "distance"
    return "mlp"


def structured_reward_init(kind: str, obs_dim: int, z_dim: int, seed: int = 0) -> list:
    """Initial parameters of a ``"bilinear"`` head (``M`` ``[2 obs_dim + 1, z_dim + 1]``), a
    ``"distance"`` head (``P`` ``[2 obs_dim + 1, z_dim]``, ``(a, b) = (1, 0)``) or a
    ``"next_distance"`` head (``P`` ``[obs_dim + 1, z_dim]``), Glorot uniform (a zero ``M`` would
    give z a zero inner gradient), or a ``"next_logistic"`` head (``P`` as next_distance's, the
    logit offset ``c = 0``)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    if kind == "bilinear":
        return [tf.convert_to_tensor(init((2 * obs_dim + 1, z_dim + 1)), tf.float32)]
    if kind in ("distance", "next_distance"):
        rows = 2 * obs_dim + 1 if kind == "distance" else obs_dim + 1
        return [tf.convert_to_tensor(init((rows, z_dim)), tf.float32), tf.constant([1.0, 0.0])]
    if kind == "next_logistic":
        return [tf.convert_to_tensor(init((obs_dim + 1, z_dim)), tf.float32), tf.constant([0.0])]
    raise ValueError("`reward_head` must be 'bilinear', 'distance', 'next_distance' or "
                     f"'next_logistic' here, got {kind!r}")


def _head_form(reward_params, obs_dim: int, reward_head: str | None) -> str:
    if reward_head is None:
        return reward_head_kind(reward_params, obs_dim)
    if reward_head not in REWARD_HEADS:
        raise ValueError(f"`reward_head` must be one of {REWARD_HEADS}, got {reward_head!r}")
    return reward_head


def reward_prediction(reward_params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions,
                      activation: str = "relu", reward_head: str | None = None) -> tf.Tensor:
    """The reward head's prediction ``[T, K]`` of ``r`` for ``[T, K]`` one-step transitions.

    ``reward_head`` names the head's form (``MetaDQNConfig.reward_head``); None guesses it from
    the parameters' shapes (``reward_head_kind``).

    ``"mlp"`` head: a ``TaskConditionedQNetwork`` on ``concat(s, s')`` with one output per
    action: ``r_hat(s, a, s', z) = head(concat(s, s'), z)[a]``.

    ``"distance"`` head (``reward_params == [P, (a, b)]``, ``P`` ``[2 obs_dim + 1, z_dim]``)::

        r_hat(s, a, s', z) = a exp(-|x^T P - z|^2) + b,   x = [s, s', 1]

    ``"next_distance"`` head (``P`` ``[obs_dim + 1, z_dim]``): the same with ``x = [s', 1]``.

    ``"next_logistic"`` head (``reward_params == [P, (c,)]``, ``P`` ``[obs_dim + 1, z_dim]``): the
    probability of a reward of 1, ``sigmoid(reward_logits)``::

        P(r = 1 | s', z) = sigmoid(c - |x^T P - z|^2),   x = [s', 1]

    ``"bilinear"`` head (``reward_params == [M]``, ``M`` ``[2 obs_dim + 1, z_dim + 1]``)::

        r_hat(s, a, s', z) = x^T M [z, 1],   x = [s, s', 1]        (the action plays no part)

    Being linear in z, its squared error is quadratic in z; from z = 0 the gradient on z is
    ``(2/K) M_z^T sum_k (r_hat_k - r_k) x_k``, i.e. it points along ``M_z^T`` times the
    reward-weighted sum of the transitions' ``x`` (plus a task-independent offset), a smooth
    (affine) code of where reward was seen, whatever the cell.
    """
    obs_dim = int(batch.observation.shape[-1])
    kind = _head_form(reward_params, obs_dim, reward_head)
    if kind == "next_logistic":
        return tf.sigmoid(reward_logits(reward_params, z, batch))
    if kind in ("bilinear", "distance", "next_distance"):
        m = reward_params[0]
        ones = tf.ones_like(batch.observation[..., :1])
        x = (tf.concat([batch.next_observation, ones], axis=-1) if kind == "next_distance" else
             tf.concat([batch.observation, batch.next_observation, ones], axis=-1))
        extra = 1 if kind == "bilinear" else 0
        if int(x.shape[-1]) != int(m.shape[0]) or int(z.shape[-1]) + extra != int(m.shape[1]):
            raise ValueError(
                f"the {kind} reward head `{'M' if extra else 'P'}` {m.shape.as_list()} does not "
                f"fit observations of size {obs_dim} and z of size {int(z.shape[-1])}: it must "
                f"be [2 obs_dim + 1, z_dim{' + 1' if extra else ''}] (or [obs_dim + 1, z_dim] "
                "for next_distance)")
        if kind == "bilinear":
            zt = tf.concat([z, tf.ones_like(z[:, :1])], axis=-1)  # [T, z_dim + 1]
            return tf.reduce_sum(x * tf.matmul(zt, m, transpose_b=True)[:, None, :], axis=-1)
        e = tf.einsum("tki,ij->tkj", x, m)  # [T, K, z_dim]
        d2 = tf.reduce_sum(tf.square(e - z[:, None, :]), axis=-1)
        return reward_params[1][0] * tf.exp(-d2) + reward_params[1][1]
    pair = tf.concat([batch.observation, batch.next_observation], axis=-1)
    return dqn.select(q_values(reward_params, pair, z, activation), batch.action)


def reward_logits(reward_params: Sequence[tf.Tensor], z: tf.Tensor,
                  batch: Transitions) -> tf.Tensor:
    """The ``"next_logistic"`` head's logits ``[T, K]``: ``c - |[s', 1] P - z|^2``."""
    m, c = reward_params
    obs_dim = int(batch.observation.shape[-1])
    if (len(m.shape) != 2 or int(m.shape[0]) != obs_dim + 1 or int(m.shape[1]) != int(z.shape[-1])
            or c.shape.as_list() != [1]):
        raise ValueError(
            f"the next_logistic reward head `P` {m.shape.as_list()}, `c` {c.shape.as_list()} does "
            f"not fit observations of size {obs_dim} and z of size {int(z.shape[-1])}: it must be "
            "[obs_dim + 1, z_dim] and [1]")
    x = tf.concat([batch.next_observation, tf.ones_like(batch.next_observation[..., :1])], -1)
    e = tf.einsum("tki,ij->tkj", x, m)  # [T, K, z_dim]
    return c[0] - tf.reduce_sum(tf.square(e - z[:, None, :]), axis=-1)


def reward_loss(reward_params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions,
                activation: str = "relu", reward_head: str | None = None) -> tf.Tensor:
    """Per-task mean error ``[T]`` of the reward head on ``batch``'s rewards: the squared error,
    or for the ``"next_logistic"`` head the binary cross-entropy
    ``r softplus(-u) + (1 - r) softplus(u)`` of its logits ``u`` (rewards in [0, 1])."""
    if _head_form(reward_params, int(batch.observation.shape[-1]), reward_head) == "next_logistic":
        u = reward_logits(reward_params, z, batch)
        r = tf.cast(batch.reward, u.dtype)
        return tf.reduce_mean(r * tf.nn.softplus(-u) + (1.0 - r) * tf.nn.softplus(u), axis=-1)
    pred = reward_prediction(reward_params, z, batch, activation, reward_head)
    return tf.reduce_mean(tf.square(pred - tf.cast(batch.reward, pred.dtype)), axis=-1)


def model_loss(model_params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions,
               activation: str = "relu") -> tf.Tensor:
    """Per-task squared error ``[T]`` of a one-step model head on ``[T, K]`` transitions.

    The head is a ``TaskConditionedQNetwork`` on ``s`` with ``num_actions * (obs_dim + 1)``
    outputs; for the taken action its ``obs_dim + 1`` outputs predict ``(r, s' - s)``. The error
    is summed over those and averaged over the transitions. Terminal transitions count too (their
    ``s'`` is the state the step reached, not a reset).
    """
    out = q_values(model_params, batch.observation, z, activation)  # [T, K, A (D + 1)]
    dim = int(batch.observation.shape[-1]) + 1
    if int(out.shape[-1]) % dim:
        raise ValueError(f"the model head has {int(out.shape[-1])} outputs: it must have "
                         f"num_actions * (obs_dim + 1) = num_actions * {dim}")
    out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [int(out.shape[-1]) // dim, dim]], 0))
    pred = tf.gather(out, tf.cast(batch.action, tf.int32), axis=2, batch_dims=2)  # [T, K, D+1]
    target = tf.concat([tf.cast(batch.reward, pred.dtype)[..., None],
                        batch.next_observation - batch.observation], axis=-1)
    return tf.reduce_mean(tf.reduce_sum(tf.square(pred - target), axis=-1), axis=-1)


def head_loss(head_params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions, kind: str,
              activation: str = "relu", reward_head: str | None = None) -> tf.Tensor:
    """The head's per-task error ``[T]``: ``model_loss`` for ``inner_loss`` "model", else
    ``reward_loss`` of the ``reward_head`` form."""
    if kind == "model":
        return model_loss(head_params, z, batch, activation)
    return reward_loss(head_params, z, batch, activation, reward_head)


def inner_loss(params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions, discount: float,
               huber_delta: float = 1.0, activation: str = "relu", kind: str = "td",
               reward_params: Sequence[tf.Tensor] | None = None,
               reward_weight: float = 1.0, reward_head: str | None = None) -> tf.Tensor:
    """The per-task loss ``[T]`` that z adapts on (``MetaDQNConfig.inner_loss``): the TD loss,
    the reward head's squared error (times ``reward_weight``; the head's form is
    ``reward_head``), their sum, or the one-step model head's squared error (times
    ``reward_weight``; ``reward_params`` is then the model head)."""
    if kind not in INNER_LOSSES:
        raise ValueError(f"`inner_loss` must be one of {INNER_LOSSES}, got {kind!r}")
    if kind != "td" and reward_params is None:
        raise ValueError(f"`inner_loss` {kind!r} needs `reward_params` (the reward head)")
    loss = 0.0
    if kind in ("td", "td+reward"):
        loss = inner_td_loss(params, z, batch, discount, huber_delta, activation)
    if kind != "td":
        loss = loss + reward_weight * head_loss(reward_params, z, batch, kind, activation,
                                                reward_head)
    return loss


class NormalizedGradient:
    """Wraps an update rule on ``[T, z_dim]`` embeddings: each task's gradient is divided by its
    Euclidean norm (``sqrt(|g|^2 + eps^2)``) before the rule applies it."""

    def __init__(self, rule: adaptation.UpdateRule, eps: float = 1e-8):
        self.rule, self.eps = rule, eps

    def init_state(self, params):
        return self.rule.init_state(params)

    def update(self, params, grads, state, loss):
        # sqrt(|g|^2 + eps^2): finite (and differentiable) at g = 0
        unit = [g * tf.math.rsqrt(tf.reduce_sum(tf.square(g), axis=-1, keepdims=True) + self.eps ** 2)
                for g in grads]
        return self.rule.update(params, unit, state, loss)


def embedding_rule(inner_lr, rates=None, per_step: bool = False) -> adaptation.UpdateRule:
    """SGD on z with one rate, Meta-SGD with one (learned) rate per z dimension (``rates``
    ``[z_dim]``), or per step and z dimension (``per_step``: ``rates`` ``[S, z_dim]``)."""
    if per_step:
        if rates is None or len(rates.shape) != 2:
            raise ValueError("per-step rates must be a [steps, z_dim] tensor, got "
                             f"{None if rates is None else rates.shape}")
        return adaptation.PerStepSGD([rates])
    if rates is not None:
        return adaptation.PerParameterSGD([rates])
    return adaptation.SGD(inner_lr)


def adapt_embedding(params: Sequence[tf.Tensor], z_init: tf.Tensor, batch: Transitions,
                    rule: adaptation.UpdateRule, num_steps, discount: float,
                    huber_delta: float = 1.0, activation: str = "relu",
                    first_order: bool = False, inner_loss_kind: str = "td",
                    reward_params: Sequence[tf.Tensor] | None = None,
                    reward_weight: float = 1.0,
                    normalize_grad: bool = False,
                    reward_head: str | None = None,
                    keep_trajectory: bool = False) -> adaptation.Adapted:
    """Adapts z alone, from ``z_init`` ``[z_dim]``, for every task of ``batch`` ``[T, K, ...]``.

    The network parameters (and the reward head's) are constants of the inner loop (the gradient
    is taken only with respect to z); ``adaptation.adapt`` does the steps on ``inner_loss`` of kind
    ``inner_loss_kind`` (with a reward head of form ``reward_head``). Returns its ``Adapted`` whose ``params`` is ``[z]`` with ``z``
    ``[T, z_dim]`` (and, with ``keep_trajectory``, z after every step).
    """
    num_tasks = tf.shape(batch.action)[0]
    z0 = tf.tile(tf.convert_to_tensor(z_init)[None], [num_tasks, 1])
    loss = lambda zs: inner_loss(params, zs[0], batch, discount, huber_delta,  # noqa: E731
                                 activation, inner_loss_kind, reward_params, reward_weight,
                                 reward_head)
    if normalize_grad:
        rule = NormalizedGradient(rule)
    return adaptation.adapt(loss, [z0], rule, num_steps, first_order=first_order,
                            keep_trajectory=keep_trajectory)


def finetune(params: Sequence[tf.Tensor], z_init: tf.Tensor, batch: Transitions, learning_rate,
             num_steps, discount: float, huber_delta: float = 1.0,
             activation: str = "relu") -> tuple[list, tf.Tensor]:
    """The fine-tuning baseline: SGD on the whole network (and z) on each task's ``batch``.

    Every task of ``batch`` gets its own copy of the weights (a leading task axis), adapted by
    ``adaptation.adapt`` with ``SGD(learning_rate)`` on the same TD loss as ``adapt_embedding``.

    Returns:
      ``(params, z)``: per-task weights ``[T, ...]`` and embeddings ``[T, z_dim]``.
    """
    num_tasks = tf.shape(batch.action)[0]
    tiled = [tf.tile(tf.convert_to_tensor(p)[None], [num_tasks] + [1] * len(p.shape))
             for p in params]
    z0 = tf.tile(tf.convert_to_tensor(z_init)[None], [num_tasks, 1])
    loss = lambda ps: inner_td_loss(ps[1:], ps[0], batch, discount, huber_delta,  # noqa: E731
                                    activation)
    out = adaptation.adapt(loss, [z0, *tiled], adaptation.SGD(learning_rate), num_steps,
                           first_order=True).params
    return out[1:], out[0]


def check_transitions(observations, actions, rewards, next_observations, dones, obs_dim: int,
                      num_actions: int, unit_rewards: bool = False) -> Transitions:
    """One task's transitions as a ``[1, K]`` ``Transitions`` batch, or a ValueError naming the bad
    input (lengths that disagree, actions out of range, NaN/Inf, dones other than 0/1, and with
    ``unit_rewards`` rewards outside [0, 1])."""
    obs = np.asarray(observations, np.float32)
    nxt = np.asarray(next_observations, np.float32)
    act = np.asarray(actions)
    rew = np.asarray(rewards, np.float32)
    done = np.asarray(dones, np.float32)
    if rew.ndim != 1 or len(rew) == 0:
        raise ValueError(f"`rewards` must be a non-empty vector [K], got shape {rew.shape}")
    k = len(rew)
    for name, arr, shape in (("observations", obs, (k, obs_dim)), ("actions", act, (k,)),
                             ("next_observations", nxt, (k, obs_dim)), ("dones", done, (k,))):
        if arr.shape != shape:
            raise ValueError(f"`{name}` must have shape {list(shape)} (one entry per transition, "
                             f"like `rewards`), got {list(arr.shape)}")
    for name, arr in (("observations", obs), ("rewards", rew), ("next_observations", nxt),
                      ("dones", done)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must be finite, got NaN or Inf")
    if not np.issubdtype(act.dtype, np.integer) or np.any(act < 0) or np.any(act >= num_actions):
        raise ValueError(f"`actions` must be integers in [0, {num_actions}), got "
                         f"{np.unique(act)[:10].tolist()}")
    if not np.all((done == 0) | (done == 1)):
        raise ValueError("`dones` must hold only 0 and 1")
    if unit_rewards and np.any((rew < 0) | (rew > 1)):
        raise ValueError("`rewards` must lie in [0, 1] for the next_logistic reward head, got "
                         f"values in [{rew.min()}, {rew.max()}]")
    t = lambda x, dt=tf.float32: tf.constant(x[None], dt)  # noqa: E731
    return Transitions(t(obs), t(act.astype(np.int32), tf.int32), t(rew), t(nxt), t(done), t(done))


def outer_td_loss(params, target_params, z, query: Transitions, config: MetaDQNConfig,
                  activation: str = "relu") -> tf.Tensor:
    """Per-task TD loss ``[T]`` of the adapted Q on query transitions (``[T, B]`` or n-step
    ``[T, B, n]``), bootstrapped from the target network (double DQN when configured)."""
    if config.n_step > 1:
        ret = dqn.n_step_return(query.reward, query.terminated, query.boundary, config.discount)
        # each sample's n steps -> one transition: first observation/action, last next-observation
        flat = lambda x: tf.reshape(x, [-1, config.n_step] + x.shape[3:].as_list())  # noqa: E731
        shape = tf.shape(query.action)[:2]
        last_obs = tf.gather(flat(query.next_observation), tf.reshape(ret.last, [-1]), axis=1,
                             batch_dims=1)
        last_obs = tf.reshape(last_obs, tf.concat([shape, [-1]], 0))
        obs, action = query.observation[:, :, 0], query.action[:, :, 0]
        reward, discount_t = ret.reward, ret.discount
    else:
        obs, action, last_obs = query.observation, query.action, query.next_observation
        reward = query.reward
        discount_t = config.discount * (1.0 - query.terminated)
    q_tm1 = q_values(params, obs, z, activation)
    z_sg = tf.stop_gradient(z)
    q_target_t = q_values(target_params, last_obs, z_sg, activation)
    if config.double_dqn:
        q_online_t = q_values(params, last_obs, z_sg, activation)
        target = dqn.double_q_learning_target(reward, discount_t, q_online_t, q_target_t)
    else:
        target = dqn.q_learning_target(reward, discount_t, q_target_t)
    return dqn.td_loss(q_tm1, action, target, config.huber_delta)


def _fold(seed, *keys):
    seed = tf.cast(seed, tf.int64)
    for k in keys:
        seed = tf.cast(tf.random.experimental.stateless_fold_in(seed, k), tf.int64)
    return seed


def _train_in_executions(learner, steps: int) -> dict[str, float]:
    """Runs ``steps`` of ``learner._iteration``, ``config.steps_per_execution`` per compiled call
    (``learner._train_fn`` compiles ``_many_iterations``); returns the last metrics as floats."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}")
    metrics = {}
    done = 0
    while done < steps:
        chunk = min(learner.config.steps_per_execution, steps - done)
        metrics = learner._train_fn(tf.constant(chunk, tf.int32))
        done += chunk
    return {k: float(v) for k, v in metrics.items()}


def _many_iterations(iteration, n):
    """``n`` (a scalar tensor >= 1) calls of ``iteration`` in one graph; the last metrics."""
    metrics = iteration()
    for _ in tf.range(n - 1):
        metrics = iteration()
    return metrics


def _ci95(rows: np.ndarray) -> float:
    return float(1.96 * rows.std() / math.sqrt(max(len(rows), 1)))


def without_rewards(support: Transitions, mask) -> Transitions:
    """``support`` ``[T, N]`` with, in each task where ``mask`` ``[T]`` holds, every transition
    with a nonzero reward replaced by one of the task's unrewarded transitions (cycling through
    them in order). A task with no unrewarded transition is left as it is."""
    rewarded = tf.not_equal(support.reward, 0.0)
    n = tf.shape(rewarded)[1]
    order = tf.argsort(tf.cast(rewarded, tf.int32), axis=1, stable=True)  # unrewarded first
    num_plain = tf.reduce_sum(tf.cast(~rewarded, tf.int32), axis=1)
    position = tf.broadcast_to(tf.range(n)[None], tf.shape(order))
    pick = tf.gather(order, tf.math.floormod(position, tf.maximum(num_plain, 1)[:, None]),
                     batch_dims=1)
    replace = rewarded & tf.cast(mask, tf.bool)[:, None] & (num_plain > 0)[:, None]
    index = tf.where(replace, pick, position)
    return Transitions(*[tf.gather(x, index, batch_dims=1) for x in support])


def random_policy(num_actions: int):
    return lambda obs, seed: tf.random.stateless_uniform(
        tf.shape(obs)[:1], seed, 0, num_actions, tf.int32, alg="philox")


def collect_support(env, task: tf.Tensor, num_transitions: int, horizon: int, num_actions: int,
                    seed) -> Transitions:
    """``[T, num_transitions]`` transitions of a uniformly random policy on every task."""
    seed = tf.cast(seed, tf.int64)
    loop = init_loop(env, task, _fold(seed, 0))
    _, tr, _ = collect(env, task, loop, random_policy(num_actions), num_transitions, horizon,
                       _fold(seed, 1))
    return Transitions(*[tf.transpose(x, [1, 0] + list(range(2, len(x.shape)))) for x in tr])


def greedy_returns(env, task: tf.Tensor, q_fn, horizon: int, episodes: int, seed) -> tf.Tensor:
    """Mean return over ``episodes`` greedy episodes per task, ``[T]``.

    ``q_fn(observation [T, E, d]) -> [T, E, A]`` (each task's adapted Q).
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


class MetaDQNLearner:
    """Meta-trains a ``TaskConditionedQNetwork`` and its initial embedding on a task family.

    Args:
      network: the Q-network (its ``z_dim`` must equal ``config.z_dim``).
      tasks: a discrete-action family (``CartPoleDirTasks``, ``GridWorldTasks``,
        ``MountainCarLRTasks``): ``sample``, ``tf_env``, ``horizon``, ``obs_dim``, ``num_actions``.
      config: ``MetaDQNConfig``.
      seed: base seed (pool tasks, environments, sampling).

    The loop ``training.run`` drives::

        learner = MetaDQNLearner(TaskConditionedQNetwork(4, 2, z_dim=8), CartPoleDirTasks(),
                                 MetaDQNConfig())
        while learner.step < 20000:
            metrics = learner.train(50)
        curve = learner.evaluate(num_tasks=20, num_steps=3)    # returns after 0..3 steps on z
    """

    def __init__(self, network: TaskConditionedQNetwork, tasks, config: MetaDQNConfig,
                 seed: int = 0):
        if not isinstance(config, MetaDQNConfig):
            raise TypeError(f"`config` must be a MetaDQNConfig, got {type(config).__name__}")
        if not isinstance(network, TaskConditionedQNetwork):
            raise TypeError("`network` must be a TaskConditionedQNetwork, got "
                            f"{type(network).__name__}")
        if network.z_dim != config.z_dim:
            raise ValueError(f"`network.z_dim` ({network.z_dim}) must equal `z_dim` "
                             f"({config.z_dim})")
        if network.obs_dim != tasks.obs_dim or network.num_actions != tasks.num_actions:
            raise ValueError(f"the network ({network.obs_dim} observations, {network.num_actions} "
                             f"actions) does not fit the tasks ({tasks.obs_dim}, "
                             f"{tasks.num_actions})")
        cfg = self.config = config
        self.network, self.tasks, self.seed = network, tasks, int(seed)
        self.activation = network.activation_name
        self.env = tasks.tf_env()
        self.horizon = int(tasks.horizon)
        self.num_actions = int(tasks.num_actions)
        self.params = list(network.trainable_variables)
        self.z_init = tf.Variable(tf.zeros([cfg.z_dim]), name="z_init")
        if cfg.per_step_inner_lr:
            start = cfg.inner_lr * cfg.inner_lr_decay ** np.arange(cfg.inner_steps)
            start = np.repeat(start[:, None], cfg.z_dim, axis=1).astype(np.float32)
        else:
            start = np.full([cfg.z_dim], cfg.inner_lr, np.float32)
        self.inner_rates = (tf.Variable(start, name="inner_rates") if cfg.learn_inner_lr
                            else None)
        # the reward head r(s, a, s', z) when z adapts on reward prediction (inner_loss != "td")
        self.reward_network = None
        self.reward_structured = None  # the "bilinear" or "distance" head's tf.Variables
        self.reward_params: list = []
        if cfg.inner_loss != "td" and cfg.reward_head != "mlp":
            self.reward_params = [
                tf.Variable(p, name=f"reward_head_{i}") for i, p in enumerate(
                    structured_reward_init(cfg.reward_head, network.obs_dim, cfg.z_dim,
                                           network.seed + 1000))]
            self.reward_structured = tf.train.Checkpoint(
                **{f"v{i}": v for i, v in enumerate(self.reward_params)})
        elif cfg.inner_loss != "td":
            # an MLP head: the one-step model (r, s' - s) per action on s, or the reward per
            # action on concat(s, s')
            obs, a = network.obs_dim, network.num_actions
            inputs, outputs, name = ((obs, a * (obs + 1), "model_head")
                                     if cfg.inner_loss == "model" else (2 * obs, a, "reward_head"))
            self.reward_network = TaskConditionedQNetwork(
                inputs, outputs, cfg.z_dim, (cfg.reward_hidden, cfg.reward_hidden),
                network.activation_name, seed=network.seed + 1000, name=name)
            self.reward_params = list(self.reward_network.trainable_variables)
        self.meta_variables = self.params + [self.z_init] + (
            [self.inner_rates] if cfg.learn_inner_lr else []) + self.reward_params
        # the task decoder [z, 1] -> standardised task parameters (task_loss_weight > 0)
        self.task_decoder = None
        if cfg.task_loss_weight > 0:
            init = keras.initializers.GlorotUniform(seed=network.seed + 2000)
            self.task_decoder = tf.Variable(init((cfg.z_dim + 1, int(tasks.task_dim))),
                                            name="task_decoder")
            self.meta_variables = self.meta_variables + [self.task_decoder]
        # gradients of frozen meta-variables (z_0 when learn_z_init is False) are zeroed
        self._frozen = {len(self.params)} if not cfg.learn_z_init else set()
        self.target = [tf.Variable(v, trainable=False, name=f"target_{i}")
                       for i, v in enumerate(self.params)]
        self.optimizer = keras.optimizers.Adam(cfg.learning_rate, global_clipnorm=cfg.max_grad_norm)
        self.optimizer.build(self.meta_variables)
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.env_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_steps")
        base = tf.constant([self.seed, 7], tf.int64)
        self._base_seed = base
        n = cfg.num_train_tasks
        self.pool = tf.Variable(tasks.sample(n, self.seed, "train"), trainable=False, name="pool")
        pool = self.pool.numpy()
        self._task_mean = tf.constant(pool.mean(0), tf.float32)
        self._task_std = tf.constant(np.maximum(pool.std(0), 1e-6), tf.float32)
        self.replay = TaskReplayBuffer(n, cfg.replay_capacity, tasks.obs_dim, name="replay")
        self.support = TaskReplayBuffer(n, cfg.random_buffer_size, tasks.obs_dim, name="random")
        loop = init_loop(self.env, self.pool, _fold(base, 1))
        self.loop = [tf.Variable(x, trainable=False, name=f"loop_{i}") for i, x in enumerate(loop)]
        self.z_act = tf.Variable(tf.zeros([n, cfg.z_dim]), trainable=False, name="z_act")
        self._train_fn = tf.function(lambda n: _many_iterations(self._iteration, n),
                                     jit_compile=cfg.jit_compile)
        self._eval_fns: dict = {}
        self._prefill()

    # -- state ----------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    def checkpoint_items(self) -> dict:
        items = {"network": self.network, "z_init": self.z_init, "optimizer": self.optimizer,
                 "step": self.step_counter, "env_steps": self.env_steps,
                 "target": tf.train.Checkpoint(**{f"v{i}": v for i, v in enumerate(self.target)})}
        if self.inner_rates is not None:
            items["inner_rates"] = self.inner_rates
        if self.reward_network is not None:
            items["reward_network"] = self.reward_network
        if self.reward_structured is not None:
            items["reward_head"] = self.reward_structured
        if self.task_decoder is not None:
            items["task_decoder"] = self.task_decoder
        return items

    def update_rule(self) -> adaptation.UpdateRule:
        return embedding_rule(self.config.inner_lr, self.inner_rates,
                              self.config.per_step_inner_lr)

    # -- collection -----------------------------------------------------------------------------
    @tf.function
    def _prefill(self):
        cfg = self.config
        support = collect_support(self.env, self.pool, cfg.random_buffer_size, self.horizon,
                                  self.num_actions, _fold(self._base_seed, 2))
        self.support.add(Transitions(*[tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))
                                       for x in support]))
        if cfg.prefill_steps:
            loop = LoopState(*self.loop)
            loop, tr, _ = collect(self.env, self.pool, loop, random_policy(self.num_actions),
                                  cfg.prefill_steps, self.horizon, _fold(self._base_seed, 3))
            self.replay.add(tr)
            for var, value in zip(self.loop, loop):
                var.assign(value)
            self.env_steps.assign_add(cfg.prefill_steps * cfg.num_train_tasks)

    def _support_sample(self, seed, tasks=None) -> Transitions:
        """A support set per task (every pool task, or ``tasks``) from the random buffer."""
        size = self.config.support_size
        if self.config.support_sampling == "window":
            return self.support.sample_window(seed, size, tasks)
        return self.support.sample(seed, size, tasks=tasks)

    def _adapt(self, params, z_init, support: Transitions, num_steps, rule=None,
               first_order: bool = True, reward_params=None,
               keep_trajectory: bool = False) -> adaptation.Adapted:
        """``adapt_embedding`` with this learner's inner loss (and reward head)."""
        cfg = self.config
        if reward_params is None:
            reward_params = [tf.convert_to_tensor(v) for v in self.reward_params] or None
        return adapt_embedding(params, z_init, support, rule or self.update_rule(), num_steps,
                               cfg.discount, cfg.huber_delta, self.activation,
                               first_order=first_order, inner_loss_kind=cfg.inner_loss,
                               reward_params=reward_params,
                               reward_weight=cfg.reward_loss_weight,
                               normalize_grad=cfg.normalize_inner_grad,
                               reward_head=cfg.reward_head, keep_trajectory=keep_trajectory)

    def adapted_z(self, params, support: Transitions, first_order: bool = True):
        return self._adapt(params, self.z_init, support, self.config.inner_steps,
                           first_order=first_order).params[0]

    def adapt(self, observations, actions, rewards, next_observations, dones,
              num_steps: int | None = None) -> np.ndarray:
        """z ``[z_dim]`` adapted on one task's transitions (what the exported ``adapt`` computes).

        Arrays: ``observations`` / ``next_observations`` ``[K, obs_dim]``, ``actions`` int ``[K]``,
        ``rewards`` ``[K]``, ``dones`` ``[K]`` (1 = terminal). Bad input raises ValueError naming it.
        """
        num_steps = self.config.inner_steps if num_steps is None else num_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"`num_steps` must be an integer >= 0, got {num_steps!r}")
        batch = check_transitions(observations, actions, rewards, next_observations, dones,
                                  self.network.obs_dim, self.num_actions,
                                  unit_rewards=self.config.inner_loss != "td"
                                  and self.config.reward_head == "next_logistic")
        params = [tf.convert_to_tensor(v) for v in self.params]
        z = self._adapt(params, self.z_init, batch, num_steps).params[0]
        return z[0].numpy()

    def q_values(self, observation, z=None) -> np.ndarray:
        """``[N, num_actions]`` Q-values for ``[N, obs_dim]`` observations and ``z`` (default z_0)."""
        z = self.z_init if z is None else tf.constant(np.asarray(z, np.float32))
        obs = tf.constant(np.asarray(observation, np.float32))
        return q_values([tf.convert_to_tensor(v) for v in self.params], obs[None],
                        tf.convert_to_tensor(z)[None], self.activation)[0].numpy()

    # -- training -------------------------------------------------------------------------------
    def train(self, steps: int) -> dict[str, float]:
        """Runs ``steps`` meta-iterations; returns the last one's metrics (Python floats)."""
        return _train_in_executions(self, steps)

    def _iteration(self):
        cfg = self.config
        step = self.step_counter
        seed = _fold(self._base_seed, 4, step)
        params = [tf.convert_to_tensor(v) for v in self.params]
        # 1. act in every pool task with its adapted z (re-adapted every act_refresh_every
        #    iterations: the network moves slowly), epsilon-greedy
        if tf.equal(tf.math.floormod(step, cfg.act_refresh_every), 0):
            acting_support = self._support_sample(_fold(seed, 5))
            self.z_act.assign(tf.stop_gradient(self.adapted_z(params, acting_support)))
        z_act = tf.convert_to_tensor(self.z_act)
        epsilon = dqn.linear_epsilon(step, cfg.epsilon_start, cfg.epsilon_end,
                                     cfg.epsilon_decay_steps)
        policy = lambda obs, s: dqn.epsilon_greedy(  # noqa: E731
            q_values(params, obs[:, None], z_act, self.activation)[:, 0], epsilon, s)
        loop, tr, (ret_sum, ret_count) = collect(
            self.env, self.pool, LoopState(*self.loop), policy, cfg.env_steps_per_iteration,
            self.horizon, _fold(seed, 0))
        self.replay.add(tr)
        for var, value in zip(self.loop, loop):
            var.assign(value)
        self.env_steps.assign_add(cfg.env_steps_per_iteration * cfg.num_train_tasks)
        # 2. meta-update on a meta-batch of pool tasks
        order = tf.argsort(tf.random.stateless_uniform([cfg.num_train_tasks], _fold(seed, 1),
                                                        alg="philox"))
        tasks = order[:cfg.meta_batch_size]
        support = self._support_sample(_fold(seed, 3), tasks)
        if cfg.support_reward_dropout:
            drop = tf.random.stateless_uniform([cfg.meta_batch_size], _fold(seed, 6),
                                               alg="philox") < cfg.support_reward_dropout
            support = without_rewards(support, drop)
        num_random = int(round(cfg.query_random_fraction * cfg.query_batch_size))
        parts = []
        if num_random < cfg.query_batch_size:
            parts.append(self.replay.sample(_fold(seed, 2), cfg.query_batch_size - num_random,
                                            cfg.n_step, tasks))
        if num_random:
            parts.append(self.support.sample(_fold(seed, 4), num_random, cfg.n_step, tasks))
        query = Transitions(*[tf.concat(f, axis=1) for f in zip(*parts)])
        target = [tf.convert_to_tensor(v) for v in self.target]
        with tf.GradientTape() as tape:
            theta = [tf.convert_to_tensor(v) for v in self.meta_variables]
            tape.watch(theta)
            num_net = len(self.params)
            net, z0 = theta[:num_net], theta[num_net]
            rates = theta[num_net + 1] if cfg.learn_inner_lr else None
            first_head = num_net + 1 + int(cfg.learn_inner_lr)
            head = theta[first_head:first_head + len(self.reward_params)] or None
            adapted = self._adapt(net, z0, support, cfg.inner_steps,
                                  embedding_rule(cfg.inner_lr, rates, cfg.per_step_inner_lr),
                                  cfg.first_order, head, keep_trajectory=cfg.inner_steps > 0)
            # the z of the last outer_loss_steps steps (the final z last), or z_0 with no step
            scored = ([t[0] for t in adapted.trajectory[-cfg.outer_loss_steps:]]
                      if cfg.inner_steps else adapted.params)
            parts = []  # (td, reward_err, task_err) of each scored z
            first = query if cfg.n_step == 1 else Transitions(*[x[:, :, 0] for x in query])
            for z in scored:
                td = tf.reduce_mean(outer_td_loss(net, target, z, query, cfg, self.activation))
                reward_err = task_err = tf.constant(0.0)
                if head is not None:  # the adapted z must also predict the query's rewards
                    reward_err = tf.reduce_mean(head_loss(head, z, first, cfg.inner_loss,
                                                          self.activation, cfg.reward_head))
                if self.task_decoder is not None:  # privileged: z must also encode the task
                    zt = tf.concat([z, tf.ones_like(z[:, :1])], axis=-1)
                    task = (tf.gather(tf.convert_to_tensor(self.pool), tasks)
                            - self._task_mean) / self._task_std
                    task_err = tf.reduce_mean(tf.square(tf.matmul(zt, theta[-1]) - task))
                parts.append((td, reward_err, task_err))
            loss = tf.add_n([td + cfg.reward_loss_weight * r + cfg.task_loss_weight * e
                             for td, r, e in parts]) / len(parts)
            td, reward_err, task_err = parts[-1]  # the metrics: the final z's
        grads = tape.gradient(loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.zeros_like(g) if i in self._frozen else g for i, g in enumerate(grads)]
        self.optimizer.apply_gradients(zip(grads, self.meta_variables))
        # 3. target network
        online = [tf.convert_to_tensor(v) for v in self.params]
        if cfg.target_update == "polyak":
            new_target = dqn.polyak_update(target, online, cfg.polyak_tau)
        else:
            new_target = dqn.periodic_update(target, online, step + 1, cfg.target_update_period)
        for var, value in zip(self.target, new_target):
            var.assign(value)
        self.step_counter.assign_add(1)
        support_after = tf.reduce_mean(inner_loss(
            net, z, support, cfg.discount, cfg.huber_delta, self.activation, cfg.inner_loss,
            head, cfg.reward_loss_weight, cfg.reward_head))
        support_before = (tf.reduce_mean(adapted.support_loss) if adapted.support_loss is not None
                          else support_after)
        extra = {"reward_loss": reward_err} if head is not None else {}
        if self.task_decoder is not None:
            extra["task_loss"] = task_err
        return {"td_loss": td, **extra, "support_loss_before": support_before,
                "support_loss_after": support_after, "epsilon": epsilon,
                "episode_return": tf.math.divide_no_nan(ret_sum, ret_count),
                "env_steps": tf.cast(self.env_steps, tf.float32)}

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, num_tasks: int = 20, num_steps: int | None = None, seed: int | None = None,
                 tasks=None, support_size: int | None = None, episodes: int | None = None,
                 adaptation_mode: str | None = None, finetune_lr: float | None = None) -> dict:
        """Greedy return on held-out tasks after adapting from random-policy transitions.

        For each task: ``support_size`` transitions of a uniformly random policy, then 0 ..
        ``num_steps`` inner steps (on z, or on the whole network when ``adaptation_mode`` is
        ``"finetune"``), then ``episodes`` greedy episodes per step count.

        Returns:
          ``{"returns": [R_0 .. R_num_steps], "ci95": [...], "num_tasks", "support_size",
          "per_task": [[...] per step count], "success": [...], "support_rewarded": [...]}``;
          ``success`` is the fraction of tasks whose every greedy episode had a positive return
          (the grid-world reached its goal); ``support_rewarded`` counts each task's support
          transitions with a nonzero reward (0: the support says nothing about a sparse goal).
        """
        cfg = self.config
        num_steps = cfg.inner_steps if num_steps is None else num_steps
        seed = self.seed if seed is None else int(seed)
        support_size = cfg.support_size if support_size is None else support_size
        episodes = cfg.eval_episodes if episodes is None else episodes
        mode = cfg.eval_adaptation if adaptation_mode is None else adaptation_mode
        lr = cfg.finetune_lr if finetune_lr is None else finetune_lr
        for name, value, low in (("num_steps", num_steps, 0), ("support_size", support_size, 1),
                                 ("episodes", episodes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
        if mode not in EVAL_ADAPTATIONS:
            raise ValueError(f"`adaptation_mode` must be one of {EVAL_ADAPTATIONS}, got {mode!r}")
        if tasks is None:
            if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
                raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
            tasks = self.tasks.sample(num_tasks, seed, "test")
        tasks = tf.constant(np.asarray(tasks, np.float32))
        key = (int(tasks.shape[0]), num_steps, support_size, episodes, mode)
        if key not in self._eval_fns:
            self._eval_fns[key] = tf.function(
                lambda t, s, lr: self._eval_graph(t, s, num_steps, support_size, episodes, mode,
                                                  lr))
        rows, rewarded = self._eval_fns[key](tasks, tf.constant([seed, 11], tf.int64),
                                             tf.constant(lr, tf.float32))
        rows = rows.numpy()
        return {"returns": [float(r.mean()) for r in rows], "ci95": [_ci95(r) for r in rows],
                "success": [float(np.mean(r > 0)) for r in rows], "per_task": rows.tolist(),
                "support_rewarded": rewarded.numpy().tolist(),
                "num_tasks": int(tasks.shape[0]), "support_size": support_size,
                "adaptation": mode}

    def _eval_graph(self, tasks, seed, num_steps, support_size, episodes, mode, lr):
        cfg = self.config
        params = [tf.convert_to_tensor(v) for v in self.params]
        support = collect_support(self.env, tasks, support_size, self.horizon, self.num_actions,
                                  _fold(seed, 0))
        rows = []
        for k in range(num_steps + 1):
            if mode == "z":
                z = self._adapt(params, self.z_init, support, k).params[0]
                weights = params
            else:
                weights, z = finetune(params, self.z_init, support, lr, k, cfg.discount,
                                      cfg.huber_delta, self.activation)
            q_fn = lambda obs, w=weights, z=z: q_values(w, obs, z, self.activation)  # noqa: E731
            rows.append(greedy_returns(self.env, tasks, q_fn, self.horizon, episodes,
                                       _fold(seed, 1)))
        rewarded = tf.reduce_sum(tf.cast(tf.not_equal(support.reward, 0.0), tf.int32), axis=1)
        return tf.stack(rows), rewarded


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
        for name in ("batch_size", "replay_capacity", "target_update_period",
                     "epsilon_decay_steps", "steps_per_execution"):
            check_int(self, name)
        check_int(self, "prefill_steps", minimum=0)


class PerTaskDQNLearner:
    """``T`` independent DQNs trained from scratch, one per given task, batched over tasks.

    Each task has its own weights (a leading task axis on every variable), replay buffer and
    environment; one update per environment step. The per-task reference of the Meta-DQN benchmark.

    Args:
      tasks_family: the family (for ``tf_env``, ``horizon``, sizes).
      tasks: ``[T, P]`` the tasks to learn.
      hidden, activation: the Q-network (a ``TaskConditionedQNetwork`` with ``z_dim=0``).
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
        self.params = [tf.Variable(tf.stack([tf.convert_to_tensor(n.trainable_variables[j]) for n in nets]),
                                   name=f"param_{j}") for j in range(len(nets[0].trainable_variables))]
        self.target = [tf.Variable(v, trainable=False) for v in self.params]
        self.optimizer = keras.optimizers.Adam(cfg.learning_rate)
        self.optimizer.build(self.params)
        self.replay = TaskReplayBuffer(t, cfg.replay_capacity, tasks_family.obs_dim)
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._base_seed = tf.constant([self.seed, 13], tf.int64)
        loop = init_loop(self.env, self.tasks, _fold(self._base_seed, 1))
        self.loop = [tf.Variable(x, trainable=False) for x in loop]
        self.z = tf.zeros([t, 0])
        self._train_fn = tf.function(lambda n: _many_iterations(self._iteration, n))
        self._prefill()

    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    @tf.function
    def _prefill(self):
        if self.config.prefill_steps:
            loop, tr, _ = collect(self.env, self.tasks, LoopState(*self.loop),
                                  random_policy(self.num_actions), self.config.prefill_steps,
                                  self.horizon, _fold(self._base_seed, 2))
            self.replay.add(tr)
            for var, value in zip(self.loop, loop):
                var.assign(value)

    def train(self, steps: int) -> dict[str, float]:
        """Runs ``steps`` iterations; returns the last one's metrics (Python floats)."""
        return _train_in_executions(self, steps)

    def _iteration(self):
        cfg = self.config
        step = self.step_counter
        seed = _fold(self._base_seed, 3, step)
        params = [tf.convert_to_tensor(v) for v in self.params]
        epsilon = dqn.linear_epsilon(step, cfg.epsilon_start, cfg.epsilon_end,
                                     cfg.epsilon_decay_steps)
        policy = lambda obs, s: dqn.epsilon_greedy(  # noqa: E731
            q_values(params, obs[:, None], self.z, self.activation)[:, 0], epsilon, s)
        loop, tr, (ret_sum, count) = collect(self.env, self.tasks, LoopState(*self.loop), policy,
                                             1, self.horizon, _fold(seed, 0))
        self.replay.add(tr)
        for var, value in zip(self.loop, loop):
            var.assign(value)
        batch = self.replay.sample(_fold(seed, 1), cfg.batch_size)
        target = [tf.convert_to_tensor(v) for v in self.target]
        with tf.GradientTape() as tape:
            q_tm1 = q_values(self.params, batch.observation, self.z, self.activation)
            q_online_t = q_values(params, batch.next_observation, self.z, self.activation)
            q_target_t = q_values(target, batch.next_observation, self.z, self.activation)
            y = dqn.double_q_learning_target(batch.reward, cfg.discount * (1.0 - batch.terminated),
                                             q_online_t, q_target_t)
            loss = tf.reduce_sum(dqn.td_loss(q_tm1, batch.action, y, cfg.huber_delta))
        grads = tape.gradient(loss, self.params)
        self.optimizer.apply_gradients(zip(grads, self.params))
        new_target = dqn.periodic_update(target, [tf.convert_to_tensor(v) for v in self.params],
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
