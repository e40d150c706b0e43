"""The inner loop: hand-worked meta-gradients, first vs second order, Meta-SGD rates, while_loop."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.algorithms import MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner
from metarl_tf.core import TaskBatch
from metarl_tf.networks import mlp
from metarl_tf.params import FunctionalModel, mse
from metarl_tf.tasks import SinusoidTasks, sample_task_batch


def linear_model(w0=1.0):
    """f(x) = w x: one parameter."""
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer=keras.initializers.Constant(w0))])


def one_point_batch(a=1.0, b=2.0, c=2.0, d=1.0):
    t = lambda v: tf.constant([[[v]]], tf.float32)
    return TaskBatch(t(a), t(b), t(c), t(d), tf.zeros([1, 2]))


# The worked example used below. Model f(x) = w x, w = 1; support point (a, b) = (1, 2);
# query point (c, d) = (2, 1); inner rate alpha = 0.1; one inner step.
#   L_s(w)  = (w a - b)^2                     g = dL_s/dw = 2 a (w a - b) = 2 * 1 * (1 - 2) = -2
#   w'      = w - alpha g                     = 1 + 0.2 = 1.2
#   L_q(w') = (w' c - d)^2                    = (2.4 - 1)^2 = 1.96
#   dL_q/dw' = 2 c (w' c - d)                 = 2 * 2 * 1.4 = 5.6     (= the first-order gradient)
#   dw'/dw  = 1 - alpha * d2L_s/dw2 = 1 - 2 alpha a^2 = 0.8
#   second order: dL_q/dw = 5.6 * 0.8         = 4.48
#   Meta-SGD:     dL_q/dalpha = 5.6 * (-g)    = 11.2
SECOND_ORDER, FIRST_ORDER, META_SGD_RATE_GRAD, QUERY_LOSS = 4.48, 5.6, 11.2, 1.96


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("first_order,expected", [(False, SECOND_ORDER), (True, FIRST_ORDER)])
def test_meta_gradient_matches_hand_derivation(compiled, first_order, expected):
    learner = MAMLLearner(linear_model(), SinusoidTasks(),
                          MAMLConfig(inner_lr=0.1, first_order=first_order, jit_compile=False))
    batch = one_point_batch()

    def grad():
        with tf.GradientTape() as tape:
            loss, pre = learner.meta_loss(batch)
        return loss, pre, tape.gradient(loss, learner.meta_variables)[0]

    loss, pre, g = (tf.function(grad) if compiled else grad)()
    assert float(pre) == pytest.approx(1.0)  # (1*1 - 2)^2
    assert float(loss) == pytest.approx(QUERY_LOSS, rel=1e-6)
    assert float(g[0, 0]) == pytest.approx(expected, rel=1e-6)


def test_first_order_differs_from_second_order_on_an_mlp():
    batch = sample_task_batch(SinusoidTasks(), tf.constant([3, 4], tf.int64), 5, 10, 10)
    grads = {}
    for first_order in (False, True):
        learner = MAMLLearner(mlp(1, 1, init="glorot_uniform", seed=1), SinusoidTasks(),
                              MAMLConfig(first_order=first_order, inner_lr=0.05))
        with tf.GradientTape() as tape:
            loss, _ = learner.meta_loss(batch)
        grads[first_order] = tape.gradient(loss, learner.meta_variables)
    diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads[False], grads[True]))
    scale = max(float(tf.reduce_max(tf.abs(a))) for a in grads[False])
    assert diff > 1e-3 * scale


@pytest.mark.parametrize("compiled", [False, True])
def test_meta_sgd_rates_receive_their_gradient(compiled):
    learner = MetaSGDLearner(linear_model(), SinusoidTasks(),
                             MetaSGDConfig(rate_init_range=(0.1, 0.1), jit_compile=False))
    batch = one_point_batch()

    def grad():
        with tf.GradientTape() as tape:
            loss, _ = learner.meta_loss(batch)
        return tape.gradient(loss, learner.meta_variables)

    g_w, g_rate = (tf.function(grad) if compiled else grad)()
    assert float(g_w[0, 0]) == pytest.approx(SECOND_ORDER, rel=1e-5)
    assert float(g_rate[0, 0]) == pytest.approx(META_SGD_RATE_GRAD, rel=1e-5)


def test_adaptation_lowers_the_support_loss():
    fmodel = FunctionalModel(mlp(1, 1, init="glorot_uniform"))
    batch = sample_task_batch(SinusoidTasks(), tf.constant([0, 1], tf.int64), 8, 10, 10)
    params = fmodel.tile(fmodel.params(), 8)
    loss = lambda p: mse(fmodel.apply_batched(p, batch.support_x), batch.support_y)
    adapted = adaptation.adapt(loss, params, adaptation.SGD(0.01), 5)
    before, after = loss(params).numpy(), loss(adapted.params).numpy()
    assert np.all(after < before), (before, after)
    np.testing.assert_allclose(adapted.support_loss.numpy(), before, rtol=1e-6)


def test_while_loop_equals_unrolled_loop():
    fmodel = FunctionalModel(mlp(1, 1, init="glorot_uniform"))
    batch = sample_task_batch(SinusoidTasks(), tf.constant([0, 2], tf.int64), 4, 10, 10)
    params = fmodel.tile(fmodel.params(), 4)
    loss = lambda p: mse(fmodel.apply_batched(p, batch.support_x), batch.support_y)
    rule = adaptation.SGD(0.02)
    unrolled = adaptation.adapt(loss, params, rule, 3)
    looped = tf.function(lambda n: adaptation.adapt(loss, params, rule, n).params)(tf.constant(3))
    for a, b in zip(unrolled.params, looped):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    zero = adaptation.adapt(loss, params, rule, tf.constant(0))
    for a, b in zip(params, zero.params):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_negative_step_count_is_refused():
    with pytest.raises(ValueError, match="num_steps"):
        adaptation.adapt(lambda p: tf.zeros([1]), [tf.zeros([1, 1])], adaptation.SGD(0.1), -1)


def test_per_step_rates_by_hand_and_in_the_while_loop():
    """PerStepSGD on L(w) = w^2 (g = 2w) from w = 1 with step rates (0.25, 0.1):
    w1 = 1 - 0.25 * 2 = 0.5; w2 = 0.5 - 0.1 * 1 = 0.4; a third step reuses the last row:
    w3 = 0.4 - 0.1 * 0.8 = 0.32. The run-time while_loop gives the same; d w2 / d rate_0 =
    d/da0 [(1 - 2 a0)(1 - 2 a1)] = -2 (1 - 2 a1) = -1.6 reaches the first row."""
    rates = tf.constant([[0.25], [0.1]])
    loss = lambda p: tf.reduce_sum(tf.square(p[0]), axis=-1)  # noqa: E731
    w = [tf.constant([[1.0]])]
    for steps, want in ((1, 0.5), (2, 0.4), (3, 0.32)):
        rule = adaptation.PerStepSGD([rates])
        got = adaptation.adapt(loss, w, rule, steps).params[0].numpy()
        np.testing.assert_allclose(got, [[want]], rtol=1e-6)
        looped = tf.function(lambda n: adaptation.adapt(loss, w, rule, n).params[0])(
            tf.constant(steps))
        np.testing.assert_allclose(looped.numpy(), [[want]], rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(rates)
        w2 = adaptation.adapt(loss, w, adaptation.PerStepSGD([rates]), 2).params[0]
    np.testing.assert_allclose(tape.gradient(w2, rates).numpy(), [[-1.6], [-2.0 * 0.5 * 1.0]],
                               rtol=1e-5)
