"""MAML-RL: policy-gradient math by hand, the meta-gradient against a closed form, the learners."""
import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.algorithms import pg_losses, trpo
from metarl_tf.algorithms.maml_rl import (MAMLRLConfig, MAMLRLLearner, MetaSGDRLLearner,
                                          ReptileRLConfig, ReptileRLLearner, pretrained_baseline)
from metarl_tf.networks import categorical_mlp_policy, gaussian_mlp_policy
from metarl_tf.rollouts import Episodes, make_vector_env
from metarl_tf.tasks import PointNavTasks

LN3 = math.log(3.0)


def maybe_compiled(fn, graph):
    return tf.function(fn) if graph else fn


# -- the pure functions, by hand -----------------------------------------------------------------
def test_lvc_and_dice_first_and_second_derivatives_by_hand():
    # One task, one episode of three valid steps (+ one padded), advantages A = (1, 2, 3).
    # At the sampling point both objectives have gradient A_t / n w.r.t. log pi_t (n = 3 valid):
    #   LVC  = 1/n sum_t exp(l_t - perp l_t) A_t          -> d2/dl_s dl_r = [s = r] A_s / n
    #   DiCE = 1/n sum_t (box(W_t) - box(W_t-1)) A_t        -> d2/dl_s dl_r = A_max(s, r) / n
    # (d2 box(W_t) / dl_s dl_r = 1 when s, r <= t, so the telescoping sum keeps t = max(s, r)).
    adv = tf.constant([[[1.0, 2.0, 3.0, 7.0]]])
    mask = tf.constant([[[1.0, 1.0, 1.0, 0.0]]])
    logp0 = tf.constant([[[-0.5, -1.0, -2.0, -0.1]]])
    results = {}
    for name, fn in (("lvc", pg_losses.lvc_objective), ("dice", pg_losses.dice_objective)):
        with tf.GradientTape() as outer:
            outer.watch(logp0)
            with tf.GradientTape() as inner:
                inner.watch(logp0)
                value = fn(logp0, adv, mask)[0]
            grad = inner.gradient(value, logp0)[0, 0]
        hess = outer.jacobian(grad, logp0)[:, 0, 0]                # [4, 4]
        results[name] = (float(value), grad.numpy(), hess.numpy())
    value, grad, hess = results["lvc"]
    assert value == pytest.approx(2.0)                               # (1 + 2 + 3) / 3
    np.testing.assert_allclose(grad, [1 / 3, 2 / 3, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(hess[:3, :3], np.diag([1.0, 2.0, 3.0]) / 3, atol=1e-6)
    value, grad, hess = results["dice"]
    assert value == pytest.approx(0.0)
    np.testing.assert_allclose(grad, [1 / 3, 2 / 3, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(hess[:3, :3], np.array([[1, 2, 3], [2, 2, 3], [3, 3, 3]]) / 3,
                               atol=1e-6)
    np.testing.assert_allclose(hess[3], 0.0)                         # padding carries nothing


def test_importance_weights_with_behaviour_log_probs():
    # Behaviour log-probs (ln 0.5, ln 0.5), current (ln 0.25, ln 0.5): r = (0.5, 1).
    # LVC = mean(r A) = (0.5 * 2 + 1 * 4) / 2 = 2.5
    logp = tf.math.log(tf.constant([[[0.25, 0.5]]]))
    old = tf.math.log(tf.constant([[[0.5, 0.5]]]))
    adv = tf.constant([[[2.0, 4.0]]])
    mask = tf.ones([1, 1, 2])
    assert float(pg_losses.lvc_objective(logp, adv, mask, old)[0]) == pytest.approx(2.5, rel=1e-6)
    assert float(pg_losses.trpo_surrogate(logp, old, adv, mask)[0]) == pytest.approx(2.5, rel=1e-6)
    # DiCE: cumulative weights 0.5, 0.5 -> (0.5 - 1) 2 + (0.5 - 0.5) 4 = -1, / 2 valid steps.
    assert float(pg_losses.dice_objective(logp, adv, mask, old)[0]) == pytest.approx(-0.5, rel=1e-6)


def test_clipped_surrogate_by_hand():
    # r = (0.5, 1.5, 1.0), A = (1, 1, -1), eps = 0.2:
    #   min(0.5, 0.8) = 0.5;  min(1.5, 1.2) = 1.2;  min(-1, -1) = -1;  mean = 0.7 / 3
    logp = tf.math.log(tf.constant([[[0.5, 1.5, 1.0]]]))
    out = pg_losses.clipped_surrogate(logp, tf.zeros([1, 1, 3]), tf.constant([[[1.0, 1.0, -1.0]]]),
                                      tf.ones([1, 1, 3]), 0.2)
    assert float(out[0]) == pytest.approx(0.7 / 3, rel=1e-6)


def test_adaptive_kl_coefficient_rule():
    # target 0.01: KL 0.02 > 0.015 doubles, KL 0.005 < 0.00667 halves, KL 0.01 keeps.
    out = pg_losses.adaptive_kl_coeff(tf.constant([1.0, 1.0, 1.0]),
                                      tf.constant([0.02, 0.005, 0.01]), 0.01)
    np.testing.assert_allclose(out, [2.0, 0.5, 1.0])


def test_mean_kl_and_average_return_by_hand():
    # Gaussian KL(N(0, 1) || N(1, 1)) = 0.5 per dimension; masked mean over the 2 valid steps.
    old = tf.constant([[[[0.0, 0.0], [0.0, 0.0], [9.0, 0.0]]]])          # [mean, log_std]
    new = tf.constant([[[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]])
    mask = tf.constant([[[1.0, 1.0, 0.0]]])
    assert float(pg_losses.mean_kl(old, new, mask, "gaussian")[0]) == pytest.approx(0.25)
    rewards = tf.constant([[[1.0, 2.0, 5.0], [-1.0, 0.0, 0.0]]])          # [T=1, N=2, H=3]
    mask2 = tf.constant([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    assert float(pg_losses.average_return(rewards, mask2)[0]) == pytest.approx((3.0 - 1.0) / 2)


def test_inner_pg_loss_needs_a_distribution_for_plain_functions():
    episodes = Episodes(tf.zeros([1, 1, 2, 1]), tf.zeros([1, 1, 2], tf.int32), tf.zeros([1, 1, 2]),
                        tf.ones([1, 1, 2]))
    with pytest.raises(ValueError, match="`distribution`"):
        pg_losses.inner_pg_loss(lambda p, o: o, [tf.zeros([1, 2])], episodes)
    with pytest.raises(ValueError, match="`estimator`"):
        pg_losses.inner_pg_loss(lambda p, o: o, [tf.zeros([1, 2])], episodes, estimator="reinforce",
                                distribution="categorical")
    model = categorical_mlp_policy(1, 2, hidden=(3,))
    assert pg_losses.policy_distribution(model) == "categorical"
    assert pg_losses.policy_distribution(gaussian_mlp_policy(2, 2, hidden=(3,))) == "gaussian"


def test_inner_pg_loss_takes_a_keras_policy_and_traces():
    # What an exported `adapt` signature traces: the loss of a Keras policy, in a graph.
    model = gaussian_mlp_policy(2, 2, hidden=(4,), activation="tanh")
    params = [tf.stack([t, t + 0.1]) for t in map(tf.convert_to_tensor, model.trainable_variables)]
    rng = np.random.default_rng(0)
    mask = (np.arange(5) < np.array([[5, 3, 1], [4, 5, 2]])[..., None]).astype(np.float32)
    episodes = Episodes(*(tf.constant(x, tf.float32) for x in (
        rng.normal(size=(2, 3, 5, 2)), rng.normal(size=(2, 3, 5, 2)), rng.normal(size=(2, 3, 5)),
        mask)))
    eager = pg_losses.inner_pg_loss(model, params, episodes)
    from_fn = pg_losses.inner_pg_loss(pg_losses.resolve_policy(model)[0], params, episodes,
                                      distribution="gaussian")
    graph = tf.function(lambda p: pg_losses.inner_pg_loss(model, p, episodes))(params)
    assert eager.shape == (2,)
    np.testing.assert_allclose(from_fn, eager, rtol=1e-6)
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)
    # On-policy LVC with normalized advantages: the value is mean(A) = 0 per task.
    np.testing.assert_allclose(eager, 0.0, atol=1e-5)


# -- the meta-gradient against a closed form -------------------------------------------------------
def bandit_logits(params, obs):
    """Tabular softmax policy of a one-state bandit: the logits are the parameters ``[T, 2]``."""
    rank = len(obs.shape)
    logits = tf.reshape(params[0], [-1] + [1] * (rank - 2) + [2])
    return tf.broadcast_to(logits, tf.concat([tf.shape(obs)[:-1], [2]], 0))


def stratified_bandit_episodes(rewards_per_arm):
    """Four one-step episodes per task: arm 0 once, arm 1 three times.

    Every estimator here is an average of per-episode terms, so on a batch whose action frequencies
    are exactly pi = (1/4, 3/4) it returns its own expectation over sampled episodes: this batch
    turns "the expected meta-gradient" into one exact computation (no Monte-Carlo noise).
    """
    actions = np.array([0, 1, 1, 1], np.int32)
    rewards = np.asarray(rewards_per_arm, np.float32)[:, actions]          # [T, 4]
    t = rewards.shape[0]
    return Episodes(tf.zeros([t, 4, 1, 1]), tf.constant(np.tile(actions[None, :, None], [t, 1, 1])),
                    tf.constant(rewards[..., None]), tf.ones([t, 4, 1]))


# Two tasks share theta = (0, ln 3), so pi = softmax(theta) = (1/4, 3/4); task A pays r = (1, 0),
# task B r = (0, 1). With J(theta) = p . r (the expected return) the softmax gives
#   grad J_i = p_i (r_i - J),   grad^2 J = (p_i (delta_ij - p_j)(r_i - J) - p_i p_j (r_j - J))_ij.
# Inner rate alpha = 8 ln 3 / 3, theta' = theta + alpha grad J(theta), meta-gradient
#   d J(theta') / d theta = (I + alpha grad^2 J(theta))^T grad J(theta').
# Task A: J = 1/4, grad J = (3/16, -3/16), grad^2 J = 3/32 [[1, -1], [-1, 1]];
#   theta' = (ln3/2, ln3/2), p' = (1/2, 1/2), grad J(theta') = (1/4, -1/4);
#   alpha grad^2 J = (ln 3 / 4)[[1, -1], [-1, 1]]  ->  meta-grad = (1/4 + ln3/8, -(1/4 + ln3/8))
#                                                               = (0.387327, -0.387327).
# Task B: J = 3/4, grad J = (-3/16, 3/16), grad^2 J = 3/32 [[-1, 1], [1, -1]];
#   theta' = (-ln3/2, 3 ln3/2), p' = (1/10, 9/10), grad J(theta') = (-0.09, 0.09)
#   meta-grad = (-0.09 + 0.045 ln 3, 0.09 - 0.045 ln 3) = (-0.040563, 0.040563).
# First order (dtheta'/dtheta = I): (1/4, -1/4) and (-0.09, 0.09).
ALPHA = 8 * LN3 / 3
REWARDS = [[1.0, 0.0], [0.0, 1.0]]
SECOND_ORDER = np.array([[0.25 + LN3 / 8, -(0.25 + LN3 / 8)],
                         [-0.09 + 0.045 * LN3, 0.09 - 0.045 * LN3]])
FIRST_ORDER = np.array([[0.25, -0.25], [-0.09, 0.09]])


def exact_return(theta, rewards):
    return tf.reduce_sum(tf.nn.softmax(theta) * rewards, axis=-1)        # [T]


def estimator_meta_gradient(estimator, first_order=False):
    """Per-task d J(theta'_t) / d theta, with theta' from ``adaptation.adapt`` on the inner loss.

    The outer objective is the exact post-adaptation return so that the test isolates the inner
    estimator (the outer TRPO surrogate's gradient at theta' is grad J(theta') in expectation).
    """
    episodes = stratified_bandit_episodes(REWARDS)
    params = [tf.constant([[0.0, LN3], [0.0, LN3]])]
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = lambda p: pg_losses.inner_pg_loss(  # noqa: E731
            bandit_logits, p, episodes, normalize=False, estimator=estimator,
            distribution="categorical")
        adapted = adaptation.adapt(loss, params, adaptation.SGD(ALPHA), 1, first_order=first_order)
        objective = tf.reduce_sum(exact_return(adapted.params[0], tf.constant(REWARDS)))
    return tape.gradient(objective, params)[0]


def test_closed_form_reference_by_brute_force_autodiff():
    # The hand-worked numbers above, recomputed by differentiating J(theta + alpha grad J(theta)).
    theta = tf.constant([[0.0, LN3], [0.0, LN3]])
    rewards = tf.constant(REWARDS)
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            j = tf.reduce_sum(exact_return(theta, rewards))
        adapted = theta + ALPHA * inner.gradient(j, theta)
        post = tf.reduce_sum(exact_return(adapted, rewards))
    np.testing.assert_allclose(outer.gradient(post, theta), SECOND_ORDER, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["lvc", "dice"])
@pytest.mark.parametrize("graph", [False, True])
def test_estimator_meta_gradient_matches_the_closed_form(estimator, graph):
    grad = maybe_compiled(lambda: estimator_meta_gradient(estimator), graph)()
    # The fitted linear baseline is the mean return times 4 / (4 + 1e-5): tolerance 1e-5.
    np.testing.assert_allclose(grad, SECOND_ORDER, atol=1e-5)


def test_first_order_differs_from_second_order():
    first = estimator_meta_gradient("lvc", first_order=True)
    np.testing.assert_allclose(first, FIRST_ORDER, atol=1e-5)
    assert np.abs(first.numpy() - SECOND_ORDER).max() > 0.1


def test_plain_log_likelihood_surrogate_misses_the_sampling_term():
    # Differentiating sum_t log pi(a_t) A_t twice gives E[grad^2 log pi A] only. For a softmax,
    # grad^2 log pi = -(diag p - p p^T) whatever the action, times E[A] = 0 with the baseline: the
    # meta-gradient collapses to the first-order one -- what LVC/DiCE's extra term corrects.
    episodes = stratified_bandit_episodes(REWARDS)
    adv = pg_losses.compute_advantages(episodes, normalize=False)
    params = [tf.constant([[0.0, LN3], [0.0, LN3]])]

    def naive(p):
        logp = pg_losses.log_prob(bandit_logits(p, episodes.observations), episodes.actions,
                                  "categorical")
        return -pg_losses.masked_mean(logp * adv, episodes.mask)

    with tf.GradientTape() as tape:
        tape.watch(params)
        adapted = adaptation.adapt(naive, params, adaptation.SGD(ALPHA), 1)
        objective = tf.reduce_sum(exact_return(adapted.params[0], tf.constant(REWARDS)))
    np.testing.assert_allclose(tape.gradient(objective, params)[0], FIRST_ORDER, atol=1e-5)


# -- configs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,field,value", [
    (MAMLRLConfig, "outer", "ppo"),
    (MAMLRLConfig, "estimator", "reinforce"),
    (MAMLRLConfig, "trpo_hvp", "finite_difference"),
    (MAMLRLConfig, "inner_lr", 0.0),
    (MAMLRLConfig, "inner_steps", -1),
    (MAMLRLConfig, "meta_batch_size", 0),
    (MAMLRLConfig, "episodes_per_task", 2.5),
    (MAMLRLConfig, "discount", 1.5),
    (MAMLRLConfig, "gae_lambda", -0.1),
    (MAMLRLConfig, "max_kl", float("nan")),
    (MAMLRLConfig, "cg_iters", 0),
    (MAMLRLConfig, "cg_damping", -1e-5),
    (MAMLRLConfig, "backtrack_ratio", 1.0),
    (MAMLRLConfig, "promp_clip", 1.5),
    (MAMLRLConfig, "promp_steps", 0),
    (MAMLRLConfig, "first_order", "no"),
    (ReptileRLConfig, "outer_step_size", 2.0),
    (ReptileRLConfig, "inner_steps", 0),
    (ReptileRLConfig, "anneal_steps", -2),
])
def test_config_errors_name_the_field(cls, field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        cls(**{field: value})


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MAMLRLConfig().inner_lr = 0.5
    assert MAMLRLConfig(jit_compile=True).jit_compile


def test_xla_trpo_update_equals_the_graph_one():
    # The whole TRPO update (gradient through the inner step, CG on the symmetric KL products,
    # line search) compiled by XLA gives the same new parameters as without XLA on the same
    # episodes (the episodes themselves are not compared: XLA's stateless RNG draws other noise).
    # A large damping keeps CG well conditioned, so float rounding differences do not grow.
    learner = MAMLRLLearner(small_policy(), PointNavTasks(),
                            MAMLRLConfig(jit_compile=True, trpo_fvp_fraction=0.5, cg_damping=0.1,
                                         **TINY4))
    pre, post = _one_round(learner)
    start = [v.numpy() for v in learner.meta_variables]
    results = []
    for jit in (False, True):
        for var, value in zip(learner.meta_variables, start):
            var.assign(value)
        metrics = tf.function(lambda: learner._trpo_update(pre, post), jit_compile=jit)()
        assert float(metrics["accepted"]) == 1.0
        results.append([v.numpy() for v in learner.meta_variables])
    for graph, xla in zip(*results):
        np.testing.assert_allclose(xla, graph, rtol=1e-3, atol=1e-5)
    assert any(not np.allclose(g, b) for g, b in zip(results[0], start))


# -- learners ------------------------------------------------------------------------------------
TINY = dict(meta_batch_size=3, episodes_per_task=2, horizon=8)
TINY4 = dict(TINY, meta_batch_size=4)


def small_policy(seed=0):
    return gaussian_mlp_policy(2, 2, hidden=(8,), activation="tanh", seed=seed)


def test_gauss_newton_and_exact_kl_products_agree_in_the_learner():
    learner = MAMLRLLearner(small_policy(), PointNavTasks(), MAMLRLConfig(**TINY))
    cfg = learner.config
    goals = PointNavTasks().sample_tf(tf.constant([0, 1]), cfg.meta_batch_size)
    theta = learner._theta()
    params = learner.fmodel.tile(theta, cfg.meta_batch_size)
    batch, adapted = learner._prepare_and_adapt(
        params, learner._rollout_ingraph(params, goals, tf.constant([1, 2]), 2), [])
    post = learner._prepare(adapted,
                            learner._rollout_ingraph(adapted, goals, tf.constant([3, 4]), 2))
    kl_of = lambda a: tf.reduce_mean(pg_losses.mean_kl(  # noqa: E731
        post.outputs, learner.apply_fn(a, post.episodes.observations), post.episodes.mask,
        "gaussian"))
    chain = lambda th: learner._adapt_chain(th, [batch])[-1]  # noqa: E731
    vector = [tf.random.stateless_normal(t.shape, [5, i]) for i, t in enumerate(theta)]
    exact = trpo.hessian_vector_product(lambda th: kl_of(chain(th)), theta, vector)
    gauss_newton = trpo.gauss_newton_vector_product(chain, kl_of, theta, vector)
    for e, g in zip(exact, gauss_newton):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def _one_round(learner, inner_steps=1):
    """Pre-adaptation batches and the post-adaptation batch of one in-graph round."""
    cfg = learner.config
    goals = PointNavTasks().sample_tf(tf.constant([0, 1]), cfg.meta_batch_size)
    params = learner.fmodel.tile(learner._theta()[:len(learner.fmodel.variables)],
                                 cfg.meta_batch_size)
    extra = learner.extra_variables
    pre = []
    for k in range(inner_steps):
        batch, params = learner._prepare_and_adapt(
            params, learner._rollout_ingraph(params, goals, tf.constant([1, 2 + k]), 2), extra)
        pre.append(batch)
    post = learner._prepare(params,
                            learner._rollout_ingraph(params, goals, tf.constant([3, 4]), 2))
    return pre, post


def _exact_kl_product(learner, pre, post, tasks, vector):
    """Nested-tape Hessian product of the mean KL of the adapted policies on ``tasks`` tasks."""
    pre = [tf.nest.map_structure(lambda x: x[:tasks], b) for b in pre]
    post = tf.nest.map_structure(lambda x: x[:tasks], post)
    kl_of = lambda a: tf.reduce_mean(pg_losses.mean_kl(  # noqa: E731
        post.outputs, learner.apply_fn(a, post.episodes.observations), post.episodes.mask,
        "gaussian"))
    return trpo.hessian_vector_product(
        lambda th: kl_of(learner._adapt_chain(th, pre)[-1]), learner._theta(), vector)


@pytest.mark.parametrize("fraction,used", [(1.0, 4), (0.5, 2), (0.1, 1)])
def test_symmetric_kl_product_equals_exact_on_the_subsampled_tasks(fraction, used):
    # One plain-SGD inner step: d theta' / d theta = I - alpha H is symmetric, so the learner uses
    # trpo.symmetric_gauss_newton_product (reverse passes only, KL curvature through the outputs);
    # it must equal the exact third-order product of the KL over the first `used` tasks.
    learner = MAMLRLLearner(small_policy(), PointNavTasks(),
                            MAMLRLConfig(trpo_fvp_fraction=fraction, **TINY4))
    assert learner.config.meta_batch_size == 4
    pre, post = _one_round(learner)
    assert learner._inner_jacobian_symmetric(1)
    theta = learner._theta()
    vector = [tf.random.stateless_normal(t.shape, [7, i]) for i, t in enumerate(theta)]
    product = learner._kl_hessian_product(theta, pre, post)
    exact = _exact_kl_product(learner, pre, post, used, vector)
    for e, g in zip(exact, product(vector)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    if used < 4:   # the subsample is a different matrix from the full one
        full = _exact_kl_product(learner, pre, post, 4, vector)
        assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(full, exact)) > 1e-4


def test_symmetric_kl_product_works_inside_the_conjugate_gradient_loop():
    # The product is built once (one recording of the inner map) and called from CG's
    # tf.while_loop body inside a tf.function: same solution as CG on the exact product.
    learner = MAMLRLLearner(small_policy(), PointNavTasks(), MAMLRLConfig(**TINY4))
    pre, post = _one_round(learner)
    theta = learner._theta()
    b = trpo.flatten([tf.random.stateless_normal(t.shape, [9, i]) for i, t in enumerate(theta)])

    def solve(make_product):
        product = make_product()
        return trpo.conjugate_gradient(
            lambda v: trpo.flatten(product(trpo.unflatten(v, theta))) + 1e-3 * v, b, iters=5)

    fast = tf.function(lambda: solve(lambda: learner._kl_hessian_product(theta, pre, post)))()
    slow = tf.function(lambda: solve(
        lambda: lambda v: _exact_kl_product(learner, pre, post, 4, v)))()
    np.testing.assert_allclose(fast, slow, rtol=2e-3, atol=1e-4)


def test_non_symmetric_inner_maps_fall_back_to_the_forward_mode_product():
    # Two differentiated inner steps (J2 J1 is not symmetric) and Meta-SGD's rates (I - diag(a) H)
    # must not take the symmetric shortcut; the product they use still equals the exact one.
    two = MAMLRLLearner(small_policy(), PointNavTasks(), MAMLRLConfig(inner_steps=2, **TINY4))
    assert not two._inner_jacobian_symmetric(2)
    first_order = MAMLRLLearner(small_policy(), PointNavTasks(),
                                MAMLRLConfig(inner_steps=2, first_order=True, **TINY))
    assert first_order._inner_jacobian_symmetric(2)
    assert not MetaSGDRLLearner(small_policy(), PointNavTasks(),
                                MAMLRLConfig(**TINY))._inner_jacobian_symmetric(1)
    pre, post = _one_round(two, inner_steps=2)
    theta = two._theta()
    vector = [tf.random.stateless_normal(t.shape, [8, i]) for i, t in enumerate(theta)]
    exact = _exact_kl_product(two, pre, post, 4, vector)
    for e, g in zip(exact, two._kl_hessian_product(theta, pre, post)(vector)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, "half"])
def test_trpo_fvp_fraction_is_validated(value):
    with pytest.raises((ValueError, TypeError), match="trpo_fvp_fraction"):
        MAMLRLConfig(trpo_fvp_fraction=value)


def test_maml_trpo_learns_pointnav_in_graph():
    # 10 meta-iterations of a small MAML-TRPO run on in-graph PointNav (8 tasks x 10 episodes x 25
    # steps). Returns are sums of -distance over 25 steps: a policy that stays put scores about
    # -25 * 0.4 = -10 on average, the oracle about -1.
    tasks = PointNavTasks()
    cfg = MAMLRLConfig(meta_batch_size=8, episodes_per_task=10, horizon=25, max_kl=0.05)
    learner = MAMLRLLearner(gaussian_mlp_policy(2, 2, (32, 32), "tanh", seed=1), tasks, cfg, seed=3)
    before = learner.evaluate(num_tasks=20, num_steps=1)
    learner.train(10)
    after = learner.evaluate(num_tasks=20, num_steps=1)
    pre, post = after["returns"]
    assert post > pre + 1.0                          # adaptation helps by a clear margin
    assert post > max(before["returns"]) + 2.0       # and beats the initial policy
    assert after["oracle_return"] > post             # the oracle stays the upper bound


def test_smoke_promp_adapts_its_kl_coefficient_and_checkpoints(tmp_path):
    learner = MAMLRLLearner(small_policy(), PointNavTasks(),
                            MAMLRLConfig(outer="promp", promp_kl_coeff=0.5, **TINY))
    before = [v.numpy().copy() for v in learner.meta_variables]
    metrics = learner.train(1)
    assert all(np.isfinite(v) for v in metrics.values())
    assert any(not np.allclose(v.numpy(), b) for v, b in zip(learner.meta_variables, before))
    # The inner KL after 5 Adam steps of 1e-3 is far below target / 1.5: the coefficient halves.
    assert metrics["inner_kl"] < 0.01 / 1.5
    assert float(learner.kl_coeff[0]) == pytest.approx(0.25)
    path = tf.train.Checkpoint(**learner.checkpoint_items()).write(str(tmp_path / "ckpt"))
    saved = [v.numpy().copy() for v in learner.meta_variables]
    learner.train(1)
    tf.train.Checkpoint(**learner.checkpoint_items()).read(path).assert_consumed()
    assert learner.step == 1 and float(learner.kl_coeff[0]) == pytest.approx(0.25)
    for v, s in zip(learner.meta_variables, saved):
        np.testing.assert_array_equal(v.numpy(), s)
    curve = learner.evaluate(num_tasks=4, num_steps=2, episodes_per_task=2)
    assert len(curve["returns"]) == 3 and curve["oracle_return"] > max(curve["returns"])


def test_smoke_metasgd_rl_learns_its_rates_with_trpo():
    learner = MetaSGDRLLearner(small_policy(), PointNavTasks(), MAMLRLConfig(max_kl=0.05, **TINY))
    assert isinstance(learner.update_rule(), adaptation.PerParameterSGD)
    np.testing.assert_allclose(learner.rates[0], 0.1)
    metrics = learner.train(2)
    assert learner.step == 2 and all(np.isfinite(v) for v in metrics.values())
    assert not np.allclose(learner.rates[0], 0.1)
    assert "extra" in learner.checkpoint_items()


def test_smoke_reptile_rl():
    learner = ReptileRLLearner(small_policy(), PointNavTasks(),
                               ReptileRLConfig(inner_steps=2, **TINY))
    before = [v.numpy().copy() for v in learner.meta_variables]
    metrics = learner.train(2)
    assert learner.step == 2 and all(np.isfinite(v) for v in metrics.values())
    assert any(not np.allclose(v.numpy(), b) for v, b in zip(learner.meta_variables, before))


def test_reptile_rl_outer_step_is_the_interpolation():
    learner = ReptileRLLearner(small_policy(), PointNavTasks(),
                               ReptileRLConfig(inner_steps=1, outer_step_size=0.5, **TINY))
    theta = [v.numpy().copy() for v in learner.fmodel.variables]
    adapted = [tf.constant(np.stack([t + 1.0, t + 3.0, t + 5.0])) for t in theta]
    post = type("Post", (), {"params": adapted})
    learner._returns = lambda pre, post: {}
    learner._outer_step([], post)
    # theta + 0.5 (mean(theta + 1, theta + 3, theta + 5) - theta) = theta + 0.5 * 3
    for var, t in zip(learner.fmodel.variables, theta):
        np.testing.assert_allclose(var.numpy(), t + 1.5, rtol=1e-6)


def test_gymnasium_path_trains_evaluates_and_pretrains():
    tasks = PointNavTasks()
    cfg = MAMLRLConfig(outer="promp", **TINY)
    envs = make_vector_env(tasks.make_env, num_envs=3)
    learner = MAMLRLLearner(small_policy(), tasks, cfg, vector_env=envs)
    assert not learner.in_graph
    metrics = learner.train(1)
    assert learner.step == 1 and np.isfinite(metrics["post_return"])
    curve = learner.evaluate(num_tasks=3, num_steps=1, episodes_per_task=2)
    assert len(curve["returns"]) == 2 and curve["oracle_return"] is not None
    baseline = pretrained_baseline(small_policy(seed=2), tasks, cfg, iterations=1, vector_env=envs)
    assert baseline.config.inner_steps == 0 and baseline.step == 1


def test_bad_learner_inputs():
    with pytest.raises(ValueError, match="Gaussian"):
        MAMLRLLearner(categorical_mlp_policy(2, 4, hidden=(4,)), PointNavTasks(),
                      MAMLRLConfig(**TINY))
    with pytest.raises(TypeError, match="`sample`"):
        MAMLRLLearner(small_policy(), object(), MAMLRLConfig(**TINY))
    with pytest.raises(TypeError, match="`config` must be a ReptileRLConfig"):
        ReptileRLLearner(small_policy(), PointNavTasks(), MAMLRLConfig(**TINY))
    learner = MAMLRLLearner(small_policy(), PointNavTasks(), MAMLRLConfig(**TINY))
    with pytest.raises(ValueError, match="`iterations`"):
        learner.train(0)
    with pytest.raises(ValueError, match="`num_steps`"):
        learner.evaluate(num_tasks=2, num_steps=-1)

