"""Meta-DQN's losses and its inner loop on z, as pure functions of explicit parameters.

Tensors are task-batched: transitions ``[T, K]`` (``Transitions`` of ``metarl_tf.rollouts.replay``),
embeddings ``z`` ``[T, z_dim]``. ``params`` are the Q-network's weights
(``TaskConditionedQNetwork.trainable_variables`` as tensors), ``head`` the weights of the model or
reward head when z adapts on one. The inner loop is ``metarl_tf.adaptation.adapt`` on ``[z]``
alone; ``export/qnetwork.py`` traces ``adapt_embedding`` for the exported ``adapt`` signature::

    adapt(z_0; D):  z <- z - alpha (*) d/dz mean_D loss(z)       (alpha: learned, per dimension)
      "td":      loss = h(y - Q(s, a; z)),  y = r + gamma (1 - d) max_a' Q(s', a'; z)  (stopped)
      "reward":  loss = r softplus(-u) + (1 - r) softplus(u),  u = c - |[s', 1] P - z|^2
      "model":   loss = |head(s, z)[a] - (r, s' - s)|^2
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.algorithms import dqn
from metarl_tf.algorithms.meta_dqn.config import INNER_LOSSES
from metarl_tf.networks.q_network import q_values
from metarl_tf.rollouts.replay import Transitions


def inner_td_loss(params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions, discount: float,
                  huber_delta: float = 1.0, activation: str = "relu") -> tf.Tensor:
    """Per-task TD loss ``[T]`` of ``Q(.; params, z)`` on ``[T, K]`` one-step transitions.

    ``y = r + gamma (1 - terminated) max_a Q(s', a; params, z)`` with the gradient stopped: the
    online network bootstraps itself, as a deployed network (which has no target copy) must.
    """
    q_tm1 = q_values(params, batch.observation, z, activation)
    q_t = q_values(params, batch.next_observation, z, activation)
    discount_t = discount * (1.0 - tf.cast(batch.terminated, q_t.dtype))
    target = dqn.q_learning_target(tf.cast(batch.reward, q_t.dtype), discount_t, q_t)
    return dqn.td_loss(q_tm1, batch.action, target, huber_delta)


def outer_td_loss(params: Sequence[tf.Tensor], target_params: Sequence[tf.Tensor], z: tf.Tensor,
                  query: Transitions, discount: float, n_step: int = 1, huber_delta: float = 1.0,
                  activation: str = "relu") -> tf.Tensor:
    """Per-task double-DQN TD loss ``[T]`` of the adapted Q on query transitions (``[T, B]``, or
    ``[T, B, n]`` consecutive steps for ``n_step`` targets), bootstrapped from the target network.

    z reaches the targets with its gradient stopped: the meta-gradient flows through
    ``Q(s, a; z)`` only.
    """
    if n_step > 1:
        ret = dqn.n_step_return(query.reward, query.terminated, query.boundary, discount)
        # each sample's n steps -> one transition: first observation/action, last next-observation
        flat = lambda x: tf.reshape(x, [-1, n_step] + x.shape[3:].as_list())  # noqa: E731
        shape = tf.shape(query.action)[:2]
        last_obs = tf.gather(flat(query.next_observation), tf.reshape(ret.last, [-1]), axis=1,
                             batch_dims=1)
        last_obs = tf.reshape(last_obs, tf.concat([shape, [-1]], 0))
        obs, action = query.observation[:, :, 0], query.action[:, :, 0]
        reward, discount_t = ret.reward, ret.discount
    else:
        obs, action, last_obs = query.observation, query.action, query.next_observation
        reward = query.reward
        discount_t = discount * (1.0 - query.terminated)
    q_tm1 = q_values(params, obs, z, activation)
    z_sg = tf.stop_gradient(z)
    q_target_t = q_values(target_params, last_obs, z_sg, activation)
    q_online_t = q_values(params, last_obs, z_sg, activation)
    target = dqn.double_q_learning_target(reward, discount_t, q_online_t, q_target_t)
    return dqn.td_loss(q_tm1, action, target, huber_delta)


def reward_logits(head: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions) -> tf.Tensor:
    """The ``"next_logistic"`` reward head's logits ``[T, K]`` of ``P(r = 1 | s', z)``.

    ``head == [P, (c,)]`` with ``P`` ``[obs_dim + 1, z_dim]``::

        u = c - |[s', 1] P - z|^2

    Reward where the state reached lies near z in an affine embedding (the prior of goal-reaching
    tasks). Far from the rewarded states the cross-entropy's gradient on z does not vanish (as a
    bump's squared error would) but pulls z straight at their embedding.
    """
    m, c = head
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


def reward_loss(head: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions) -> tf.Tensor:
    """Per-task mean binary cross-entropy ``[T]`` of the reward head on ``batch``'s rewards (in
    [0, 1]): ``r softplus(-u) + (1 - r) softplus(u)`` with ``u = reward_logits``."""
    u = reward_logits(head, z, batch)
    r = tf.cast(batch.reward, u.dtype)
    return tf.reduce_mean(r * tf.nn.softplus(-u) + (1.0 - r) * tf.nn.softplus(u), axis=-1)


def model_loss(head: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions,
               activation: str = "relu") -> tf.Tensor:
    """Per-task squared error ``[T]`` of a one-step model head on ``[T, K]`` transitions.

    The head is a ``TaskConditionedQNetwork`` on ``s`` with ``num_actions * (obs_dim + 1)``
    outputs; for the taken action its ``obs_dim + 1`` outputs predict ``(r, s' - s)``. The error
    is summed over those and averaged over the transitions. Terminal transitions count too (their
    ``s'`` is the state the step reached, not a reset).
    """
    out = q_values(head, batch.observation, z, activation)  # [T, K, A (D + 1)]
    dim = int(batch.observation.shape[-1]) + 1
    if int(out.shape[-1]) % dim:
        raise ValueError(f"the model head has {int(out.shape[-1])} outputs: it must have "
                         f"num_actions * (obs_dim + 1) = num_actions * {dim}")
    out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [int(out.shape[-1]) // dim, dim]], 0))
    pred = tf.gather(out, tf.cast(batch.action, tf.int32), axis=2, batch_dims=2)  # [T, K, D+1]
    target = tf.concat([tf.cast(batch.reward, pred.dtype)[..., None],
                        batch.next_observation - batch.observation], axis=-1)
    return tf.reduce_mean(tf.reduce_sum(tf.square(pred - target), axis=-1), axis=-1)


def head_loss(kind: str, head: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions,
              activation: str = "relu") -> tf.Tensor:
    """The head's per-task error ``[T]``: ``model_loss`` for ``kind`` "model", ``reward_loss``
    for "reward"."""
    if kind == "model":
        return model_loss(head, z, batch, activation)
    return reward_loss(head, z, batch)


def inner_loss(params: Sequence[tf.Tensor], z: tf.Tensor, batch: Transitions, discount: float,
               kind: str = "td", head: Sequence[tf.Tensor] = (), activation: str = "relu",
               huber_delta: float = 1.0) -> tf.Tensor:
    """The per-task loss ``[T]`` that z adapts on (``MetaDQNConfig.inner_loss``)."""
    if kind not in INNER_LOSSES:
        raise ValueError(f"`inner_loss` must be one of {INNER_LOSSES}, got {kind!r}")
    if kind == "td":
        return inner_td_loss(params, z, batch, discount, huber_delta, activation)
    if not head:
        raise ValueError(f"`inner_loss` {kind!r} needs `head` (the {kind} head's weights)")
    return head_loss(kind, head, z, batch, activation)


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


def embedding_rule(rates) -> adaptation.UpdateRule:
    """The inner update of z: ``SGD`` for a Python number, ``PerParameterSGD`` for rates
    ``[z_dim]`` (one per dimension, Meta-SGD), ``PerStepSGD`` for rates ``[steps, z_dim]``."""
    if isinstance(rates, (int, float)):
        return adaptation.SGD(rates)
    if len(rates.shape) == 2:
        return adaptation.PerStepSGD([rates])
    if len(rates.shape) == 1:
        return adaptation.PerParameterSGD([rates])
    raise ValueError(f"inner rates must be a number, [z_dim] or [steps, z_dim], got shape "
                     f"{rates.shape}")


def adapt_embedding(params: Sequence[tf.Tensor], z_init: tf.Tensor, batch: Transitions,
                    rule: adaptation.UpdateRule, num_steps, discount: float, *,
                    inner_loss_kind: str = "td", head: Sequence[tf.Tensor] = (),
                    normalize_grad: bool = False, activation: str = "relu",
                    huber_delta: float = 1.0, first_order: bool = False,
                    keep_trajectory: bool = False) -> adaptation.Adapted:
    """Adapts z alone, from ``z_init`` ``[z_dim]``, for every task of ``batch`` ``[T, K, ...]``.

    The network and head weights are constants of the inner loop (the gradient is taken with
    respect to z only); ``adaptation.adapt`` takes the steps on ``inner_loss`` of kind
    ``inner_loss_kind``, with ``NormalizedGradient(rule)`` when ``normalize_grad``. A Python int
    ``num_steps`` unrolls the steps (training differentiates through them), a tensor runs a
    ``tf.while_loop`` (the export).

    Returns:
      ``adaptation.Adapted`` whose ``params`` is ``[z]``, ``z`` ``[T, z_dim]`` (and, with
      ``keep_trajectory``, z after every step).
    """
    num_tasks = tf.shape(batch.action)[0]
    z0 = tf.tile(tf.convert_to_tensor(z_init)[None], [num_tasks, 1])
    loss = lambda zs: inner_loss(params, zs[0], batch, discount, inner_loss_kind,  # noqa: E731
                                 head, activation, huber_delta)
    if normalize_grad:
        rule = NormalizedGradient(rule)
    return adaptation.adapt(loss, [z0], rule, num_steps, first_order=first_order,
                            keep_trajectory=keep_trajectory)


def finetune(params: Sequence[tf.Tensor], z_init: tf.Tensor, batch: Transitions, learning_rate,
             num_steps, discount: float, huber_delta: float = 1.0,
             activation: str = "relu") -> tuple[list, tf.Tensor]:
    """The fine-tuning baseline: SGD on the whole network (and z) on each task's ``batch``.

    Every task of ``batch`` gets its own copy of the weights (a leading task axis), adapted by
    ``adaptation.adapt`` with ``SGD(learning_rate)`` on the TD loss of ``inner_td_loss``.

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
