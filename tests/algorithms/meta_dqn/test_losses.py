"""Meta-DQN's pure losses: TD losses worked by hand on a linear Q, the heads' losses by hand, one
inner step against its formula, the meta-gradient against finite differences, bad input by name."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms.meta_dqn.losses import (adapt_embedding, embedding_rule, finetune,
                                                  inner_loss, inner_td_loss, model_loss,
                                                  outer_td_loss, reward_logits, reward_loss)
from metarl_tf.networks.q_network import TaskConditionedQNetwork, q_values
from metarl_tf.rollouts.replay import Transitions

COMPILED = [False, True]


def maybe_compiled(fn, compiled):
    return tf.function(fn) if compiled else fn


# A linear Q-network, obs_dim 1, z_dim 1, 2 actions: Q(s, z) = [s, z] W + b. W = I, b = 0 gives
# Q(s, z) = [s, z]; the target network W' = diag(0.5, 2) gives Q'(s, z) = [0.5 s, 2 z].
ONLINE = [tf.eye(2), tf.zeros([2])]
TARGET = [tf.constant([[0.5, 0.0], [0.0, 2.0]]), tf.zeros([2])]


def transitions(s, a, r, s2, terminated, boundary=None):
    """One task's transitions ``[1, K]`` (observations ``[1, K, 1]``)."""
    f = lambda x: tf.constant([x], tf.float32)  # noqa: E731
    boundary = terminated if boundary is None else boundary
    return Transitions(f(s)[..., None], tf.constant([a], tf.int32), f(r), f(s2)[..., None],
                       f(terminated), f(boundary))


@pytest.mark.parametrize("compiled", COMPILED)
def test_inner_td_loss_and_one_inner_step_by_hand(compiled):
    # z = 0.5. Transition 1: s=1, a=0, r=1, s'=2, not terminal: y = 1 + 0.9 max(2, 0.5) = 2.8,
    #   Q(s, 0) = 1, delta = 1.8 -> Huber (kappa 1) 1.8 - 0.5 = 1.3.
    # Transition 2: s=0, a=1, r=0, s'=3, terminal: y = 0, Q(s, 1) = z = 0.5, delta = -0.5 -> 0.125.
    # Mean: (1.3 + 0.125) / 2 = 0.7125.
    batch = transitions([1.0, 0.0], [0, 1], [1.0, 0.0], [2.0, 3.0], [0.0, 1.0])
    z = tf.constant([[0.5]])
    loss = maybe_compiled(lambda: inner_td_loss(ONLINE, z, batch, 0.9), compiled)()
    np.testing.assert_allclose(loss, [0.7125], rtol=1e-6)
    # Only Q(s, 1) = z depends on z (the targets are stopped): d/dz (y - z)^2 / 2 = -(y - z) = 0.5,
    # averaged over the 2 transitions: 0.25. One SGD step at rate 0.4: z = 0.5 - 0.4 * 0.25 = 0.4.
    step = maybe_compiled(lambda: adapt_embedding(ONLINE, tf.constant([0.5]), batch,
                                                  embedding_rule(0.4), 1, 0.9), compiled)()
    np.testing.assert_allclose(step.params[0], [[0.4]], rtol=1e-6)
    np.testing.assert_allclose(step.support_loss, [0.7125], rtol=1e-6)  # the loss before the step
    # per-dimension rates (Meta-SGD) and per-step rates: step 0 uses row 0 (0.4), step 1 row 1 (2):
    # at z = 0.4, dL/dz = -(0 - 0.4) / 2 = 0.2, so z = 0.4 - 2 * 0.2 = 0.0
    per_dim = adapt_embedding(ONLINE, tf.constant([0.5]), batch, embedding_rule(tf.constant([0.4])),
                              1, 0.9).params[0]
    np.testing.assert_allclose(per_dim, [[0.4]], rtol=1e-6)
    per_step = adapt_embedding(ONLINE, tf.constant([0.5]), batch,
                               embedding_rule(tf.constant([[0.4], [2.0]])), 2, 0.9).params[0]
    np.testing.assert_allclose(per_step, [[0.0]], atol=1e-6)


@pytest.mark.parametrize("compiled", COMPILED)
def test_outer_td_loss_double_dqn_and_n_step_by_hand(compiled):
    # z = 0.5, gamma 0.9, online Q(s) = [s, 0.5], target Q'(s) = [0.5 s, 1].
    # Transition 1: s=1, a=0, r=1, s'=2: the online net picks argmax [2, 0.5] = 0, the target net
    #   values it 0.5 * 2 = 1: y = 1 + 0.9 * 1 = 1.9; Q(s, 0) = 1, delta 0.9 -> 0.405.
    # Transition 2: s=0, a=1, r=0, s'=3: argmax [3, 0.5] = 0, Q'(s')[0] = 1.5, y = 1.35;
    #   Q(s, 1) = 0.5, delta 0.85 -> 0.36125.   Mean: 0.383125.
    # (Plain DQN would take max Q'(s') = max(1.5, 1) = 1.5 for transition 2 as well: here the
    # choice matters for transition 1 only if the nets disagree; see tests/algorithms/test_dqn.py.)
    batch = transitions([1.0, 0.0], [0, 1], [1.0, 0.0], [2.0, 3.0], [0.0, 0.0])
    z = tf.constant([[0.5]])
    loss = maybe_compiled(lambda: outer_td_loss(ONLINE, TARGET, z, batch, 0.9), compiled)()
    np.testing.assert_allclose(loss, [0.383125], rtol=1e-6)
    # 2-step: (s=1, a=0, r=1, s'=2), (s=2, a=1, r=2, s'=3), no episode end:
    #   R = 1 + 0.9 * 2 = 2.8, discount 0.81, bootstrap from s' = 3: argmax [3, 0.5] = 0 ->
    #   Q'(3)[0] = 1.5: y = 2.8 + 0.81 * 1.5 = 4.015; Q(1, 0) = 1, delta 3.015 -> 2.515.
    f = lambda x: tf.constant([[x]], tf.float32)  # noqa: E731  [T=1, B=1, n=2]
    two = Transitions(f([1.0, 2.0])[..., None], tf.constant([[[0, 1]]], tf.int32), f([1.0, 2.0]),
                      f([2.0, 3.0])[..., None], f([0.0, 0.0]), f([0.0, 0.0]))
    loss = maybe_compiled(lambda: outer_td_loss(ONLINE, TARGET, z, two, 0.9, n_step=2), compiled)()
    np.testing.assert_allclose(loss, [2.515], rtol=1e-6)


def random_batch(num_tasks=3, k=16, obs_dim=3, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num_tasks, k, obs_dim)).astype(np.float32)
    return Transitions(tf.constant(obs), tf.constant(rng.integers(0, 2, (num_tasks, k)), tf.int32),
                       tf.constant(rng.uniform(size=(num_tasks, k)).astype(np.float32)),
                       tf.constant(obs + 0.1), tf.constant((rng.uniform(size=(num_tasks, k)) < 0.2)
                                                           .astype(np.float32)),
                       tf.zeros([num_tasks, k]))


def test_meta_gradient_through_the_inner_steps_equals_finite_differences():
    """z after 2 inner steps on the reward head's loss (smooth, no stopped targets, so central
    differences see what the tape sees): the gradient of a function of that z with respect to the
    inner rates, and to the head's P (second order: P reaches z only through the inner
    gradient), equals central differences; first order cuts the second path exactly."""
    support = random_batch(seed=1)
    rng = np.random.default_rng(3)
    p = tf.constant(rng.normal(size=(4, 2)).astype(np.float32) * 0.5)
    c = tf.constant([0.2])
    weights = tf.constant([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.3]])  # the outer "loss": sum w * z
    z0 = tf.constant([0.1, -0.2])

    def outer(rates, p, first_order=False):
        z = adapt_embedding([], z0, support, embedding_rule(rates), 2, 0.9,
                            inner_loss_kind="reward", head=[p, c],
                            first_order=first_order).params[0]
        return tf.reduce_sum(weights * z)

    rates = tf.constant([0.5, 0.3])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([rates, p])
        loss, fo = outer(rates, p), outer(rates, p, first_order=True)
    g_rates, g_p = tape.gradient(loss, [rates, p])
    h = 1e-2
    for i in range(2):
        e = tf.one_hot(i, 2) * h
        fd = (outer(rates + e, p) - outer(rates - e, p)) / (2 * h)
        np.testing.assert_allclose(g_rates[i], fd, rtol=1e-2, atol=1e-4)
    for index in ((0, 0), (2, 1), (3, 0)):
        e = tf.scatter_nd([index], [h], p.shape)
        fd = (outer(rates, p + e) - outer(rates, p - e)) / (2 * h)
        np.testing.assert_allclose(g_p[index], fd, rtol=1e-2, atol=1e-4)
        assert abs(float(fd)) > 1e-3  # a path that exists
    first_order = tape.gradient(fo, p, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert float(tf.reduce_max(tf.abs(first_order))) == 0.0


@pytest.mark.parametrize("compiled", COMPILED)
def test_reward_head_loss_and_its_gradient_on_z_by_hand(compiled):
    """P(r = 1 | s', z) = sigmoid(u), u = c - |[s', 1] P - z|^2; the loss is the cross-entropy
    r softplus(-u) + (1 - r) softplus(u); its gradient on z is (2/K) sum_k (sigmoid(u_k) - r_k)
    (e_k - z) with e_k = [s'_k, 1] P: a rewarded transition the head gives ~0 pulls z towards e_k."""
    support = random_batch(seed=2)  # obs_dim 3: P [4, 2]
    rng = np.random.default_rng(5)
    p = tf.constant(rng.normal(size=(4, 2)).astype(np.float32) * 0.5)
    c = tf.constant([0.7])
    z = tf.constant(rng.normal(size=(3, 2)).astype(np.float32))
    x = np.concatenate([support.next_observation.numpy(), np.ones((3, 16, 1), np.float32)], -1)
    e = np.einsum("tki,ij->tkj", x, p.numpy())
    u = 0.7 - np.sum((e - z.numpy()[:, None]) ** 2, -1)
    sig = 1.0 / (1.0 + np.exp(-u))
    r = support.reward.numpy()
    np.testing.assert_allclose(maybe_compiled(reward_logits, compiled)([p, c], z, support), u,
                               rtol=1e-5, atol=1e-5)
    want = np.mean(r * np.log1p(np.exp(-u)) + (1 - r) * np.log1p(np.exp(u)), -1)
    np.testing.assert_allclose(maybe_compiled(reward_loss, compiled)([p, c], z, support), want,
                               rtol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(reward_loss([p, c], z, support))
    grad = 2.0 / 16 * np.einsum("tk,tkj->tj", sig - r, e - z.numpy()[:, None])
    np.testing.assert_allclose(tape.gradient(loss, z), grad, rtol=1e-4, atol=1e-6)
    # the inner loss of kind "reward" is that loss, and one normalised step has the rate's length
    np.testing.assert_allclose(inner_loss([], z, support, 0.9, "reward", [p, c]), want, rtol=1e-5)
    one = adapt_embedding([], tf.zeros([2]), support, embedding_rule(0.3), 1, 0.9,
                          inner_loss_kind="reward", head=[p, c], normalize_grad=True).params[0]
    np.testing.assert_allclose(tf.norm(one, axis=-1), [0.3] * 3, rtol=1e-5)
    with pytest.raises(ValueError, match=r"the next_logistic reward head `P` \[3, 2\]"):
        reward_loss([p[:3], c], z, support)


def test_model_head_loss_by_hand_and_refuses_a_head_of_the_wrong_width():
    """The head on s has num_actions * (obs_dim + 1) outputs; for the taken action they predict
    (r, s' - s). obs_dim 1, 2 actions: outputs (r_0, ds_0, r_1, ds_1); action 1 reads out[2:4]."""
    head = TaskConditionedQNetwork(obs_dim=1, num_actions=4, z_dim=2, hidden=(8,), seed=5)
    one = transitions([0.5], [1], [2.0], [0.8], [0.0])
    z = tf.constant([[0.3, -0.1]])
    out = q_values(head.params(), one.observation, z)[0, 0].numpy()
    by_hand = (out[2] - 2.0) ** 2 + (out[3] - (0.8 - 0.5)) ** 2
    np.testing.assert_allclose(model_loss(head.params(), z, one), [by_hand], rtol=1e-5)
    np.testing.assert_allclose(inner_loss([], z, one, 0.9, "model", head.params()), [by_hand],
                               rtol=1e-5)
    bad = TaskConditionedQNetwork(obs_dim=1, num_actions=3, z_dim=2, hidden=(8,), seed=5)
    with pytest.raises(ValueError, match=r"num_actions \* \(obs_dim \+ 1\) = num_actions \* 2"):
        model_loss(bad.params(), z, one)
    with pytest.raises(ValueError, match="`inner_loss` 'model' needs `head`"):
        inner_loss([], z, one, 0.9, "model")
    with pytest.raises(ValueError, match="`inner_loss` must be one of"):
        inner_loss([], z, one, 0.9, "td+reward", head.params())


def test_normalized_inner_step_moves_each_task_by_its_rate_along_the_gradient():
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=2, z_dim=4, hidden=(16,), seed=2)
    support = random_batch(seed=1)
    z0 = tf.constant([0.1, -0.2, 0.3, 0.0])
    plain = adapt_embedding(net.params(), z0, support, embedding_rule(0.5), 1, 0.9).params[0]
    unit = adapt_embedding(net.params(), z0, support, embedding_rule(0.5), 1, 0.9,
                           normalize_grad=True).params[0]
    # the step is the plain one's direction with length 0.5 (the rate), in every task
    np.testing.assert_allclose(tf.norm(unit - z0, axis=-1), [0.5] * 3, rtol=1e-5)
    cos = tf.reduce_sum((unit - z0) * (plain - z0), -1) / (
        tf.norm(unit - z0, axis=-1) * tf.norm(plain - z0, axis=-1))
    np.testing.assert_allclose(cos, [1.0] * 3, rtol=1e-5)
    # per-dimension rates scale the unit direction elementwise
    rates = tf.constant([1.0, 2.0, 0.0, 1.0])
    per_dim = adapt_embedding(net.params(), z0, support, embedding_rule(rates), 1, 0.9,
                              normalize_grad=True).params[0]
    np.testing.assert_allclose(per_dim - z0, (unit - z0) / 0.5 * rates, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"inner rates must be a number, \[z_dim\] or"):
        embedding_rule(tf.zeros([1, 2, 3]))


def test_finetune_takes_sgd_steps_on_every_weight_of_each_task_copy():
    """One fine-tuning step at rate 0.1 is theta - 0.1 d/dtheta TD(theta) per task, z included;
    the tasks' copies differ (each follows its own transitions)."""
    batch = transitions([1.0, 0.0], [0, 1], [1.0, 0.0], [2.0, 3.0], [0.0, 1.0])
    other = transitions([1.0, 0.0], [1, 0], [0.0, 1.0], [2.0, 3.0], [0.0, 0.0])
    two = Transitions(*[tf.concat([x, y], 0) for x, y in zip(batch, other)])  # 2 tasks
    weights, z = finetune(ONLINE, tf.constant([0.5]), two, 0.1, 1, 0.9)
    params = [tf.tile(p[None], [2] + [1] * len(p.shape)) for p in ONLINE]
    z0 = tf.constant([[0.5], [0.5]])
    with tf.GradientTape() as tape:
        tape.watch([z0, *params])
        loss = tf.reduce_sum(inner_td_loss(params, z0, two, 0.9))
    grads = tape.gradient(loss, [z0, *params])
    for got, p, g in zip([z, *weights], [z0, *params], grads):
        np.testing.assert_allclose(got, p - 0.1 * g, rtol=1e-6, atol=1e-7)
    assert not np.allclose(weights[0][0], weights[0][1])  # each copy follows its own task
