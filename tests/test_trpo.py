"""TRPO machinery: conjugate gradient, Hessian-vector products, step size, line search, one step."""
import math

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms import trpo


def compiled(fn, jit=False):
    return tf.function(fn, jit_compile=jit)


@pytest.mark.parametrize("graph", [False, True])
def test_conjugate_gradient_solves_a_small_spd_system_by_hand(graph):
    a = tf.constant([[4.0, 1.0], [1.0, 3.0]])
    b = tf.constant([1.0, 2.0])
    # 4x + y = 1, x + 3y = 2  ->  x = (3 - 2) / 11 = 1/11, y = (8 - 1) / 11 = 7/11; CG is exact in
    # n = 2 iterations, so the remaining 8 are skipped by the residual test.
    solve = lambda b: trpo.conjugate_gradient(lambda v: tf.linalg.matvec(a, v), b, iters=10)  # noqa
    x = (compiled(solve) if graph else solve)(b)
    np.testing.assert_allclose(x, [1 / 11, 7 / 11], rtol=1e-5)


def test_conjugate_gradient_on_a_random_spd_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(10, 10))
    a = (m @ m.T + 10 * np.eye(10)).astype(np.float64)
    b = rng.normal(size=10)
    x = trpo.conjugate_gradient(lambda v: tf.linalg.matvec(tf.constant(a), v), tf.constant(b),
                                iters=10, residual_tol=0.0)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    # Fewer iterations than the dimension give an approximation that still reduces the residual.
    x3 = trpo.conjugate_gradient(lambda v: tf.linalg.matvec(tf.constant(a), v), tf.constant(b), 3)
    assert np.linalg.norm(a @ x3.numpy() - b) < np.linalg.norm(b)


def test_hessian_vector_product_by_hand():
    # f(x, y) = 0.5 x^T A x + sum(y^3) / 3, with x in R^2 and y in R^2:
    #   d2f/dx2 = A, d2f/dy2 = diag(2 y), no cross terms.
    a = tf.constant([[2.0, 1.0], [1.0, 3.0]])
    f = lambda p: 0.5 * tf.tensordot(p[0], tf.linalg.matvec(a, p[0]), 1) + tf.reduce_sum(  # noqa
        p[1] ** 3) / 3
    params = [tf.constant([0.3, -0.2]), tf.constant([1.0, -2.0])]
    vector = [tf.constant([1.0, 2.0]), tf.constant([0.5, 0.25])]
    hv = trpo.hessian_vector_product(f, params, vector)
    # A (1, 2) = (2 + 2, 1 + 6) = (4, 7);  diag(2, -4) (0.5, 0.25) = (1, -1)
    np.testing.assert_allclose(hv[0], [4.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(hv[1], [1.0, -1.0], rtol=1e-6)


def test_gauss_newton_product_equals_the_exact_hessian_at_the_old_policy():
    # D(theta) = KL(softmax(phi_old) || softmax(phi(theta))), phi(theta) = theta + 0.7 grad g(theta)
    # (an "inner step" with g = sum(sin(theta) * c)): at theta_0, D's Hessian is J^T F J exactly.
    c = tf.constant([1.0, -2.0, 0.5])

    def inner_map(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            g = tf.reduce_sum(tf.sin(p[0]) * c)
        return [p[0] + 0.7 * tape.gradient(g, p[0])]

    theta0 = [tf.constant([0.2, -0.4, 1.1])]
    phi_old = tf.stop_gradient(inner_map(theta0)[0])

    def kl_fn(phi):
        logp, logq = tf.nn.log_softmax(phi_old), tf.nn.log_softmax(phi[0])
        return tf.reduce_sum(tf.exp(logp) * (logp - logq))

    vector = [tf.constant([0.3, 1.0, -0.5])]
    exact = trpo.hessian_vector_product(lambda p: kl_fn(inner_map(p)), theta0, vector)
    gauss_newton = trpo.gauss_newton_vector_product(inner_map, kl_fn, theta0, vector)
    np.testing.assert_allclose(gauss_newton[0], exact[0], rtol=1e-5, atol=1e-7)
    assert np.abs(exact[0].numpy()).max() > 1e-2                 # a non-trivial product


def test_trust_region_step_size_by_hand():
    # s^T H s = (1, 2) . (2, 8) = 18; beta = sqrt(2 * 0.01 / 18) = sqrt(1/900) = 1/30
    beta = trpo.trust_region_step_size(tf.constant([1.0, 2.0]), tf.constant([2.0, 8.0]), 0.01)
    assert float(beta) == pytest.approx(1 / 30, rel=1e-4)


@pytest.mark.parametrize("graph", [False, True])
def test_line_search_backtracks_until_the_kl_bound_holds(graph):
    # loss(x) = -x improves along +x, but KL(x) = x^2 / 2: the full step x = 1 has KL 0.5 > 0.01.
    # Accepted: the first k with 0.8^k <= sqrt(0.02) = 0.141421, i.e. k = 9 (0.8^8 = 0.167772 is
    # too long), x = 0.8^9 = 0.134218, KL = 0.134218^2 / 2 = 0.009007.
    evaluate = lambda x: (-x[0], 0.5 * x[0] ** 2)  # noqa: E731
    search = lambda: trpo.backtracking_line_search(evaluate, tf.constant([0.0]),  # noqa: E731
                                                   tf.constant([1.0]), 0.0, max_kl=0.01)
    result = (compiled(search) if graph else search)()
    assert bool(result.accepted) and int(result.backtracks) == 9
    np.testing.assert_allclose(result.x, [0.8 ** 9], rtol=1e-6)
    assert float(result.kl) == pytest.approx(0.009007, abs=1e-6)
    assert float(result.kl) <= 0.01


def test_line_search_rejects_steps_that_do_not_improve_or_are_nan():
    # loss(x) = x^2 from x0 = 0: every candidate is worse, so x0 is kept after 15 tries.
    worse = trpo.backtracking_line_search(lambda x: (x[0] ** 2, 0.0 * x[0]), tf.constant([0.0]),
                                          tf.constant([1.0]), 0.0, max_kl=0.01)
    assert not bool(worse.accepted) and int(worse.backtracks) == 15
    np.testing.assert_array_equal(worse.x, [0.0])
    assert float(worse.loss) == 0.0 and float(worse.kl) == 0.0
    nan = trpo.backtracking_line_search(lambda x: (-x[0], x[0] * float("nan")), tf.constant([0.0]),
                                        tf.constant([1.0]), 0.0, max_kl=0.01, max_backtracks=4)
    assert not bool(nan.accepted) and int(nan.backtracks) == 4


def test_trpo_step_on_a_quadratic_model_is_the_natural_gradient_step():
    # loss = -g^T x, KL = 0.5 (x - x0)^T F (x - x0), F = diag(2, 0.5), g = (1, 1), x0 = 0:
    #   F^-1 g = (0.5, 2);  g^T F^-1 g = 2.5;  beta = sqrt(2 * 0.01 / 2.5) = 0.0894427
    #   step = beta F^-1 g = (0.0447214, 0.178885), KL = 0.5 (2 * 0.002 + 0.5 * 0.032) = 0.01
    # (damping 1e-5 makes the step a hair shorter, so the full step is accepted).
    f = tf.constant([2.0, 0.5])

    def objective(p):
        x = p[0]
        return -tf.reduce_sum(x), 0.5 * tf.reduce_sum(f * x * x)

    result = tf.function(lambda: trpo.trpo_step(objective, [tf.zeros([2])], max_kl=0.01))()
    assert bool(result.accepted) and int(result.backtracks) == 0
    np.testing.assert_allclose(result.params[0], [0.0447214, 0.178885], rtol=1e-4)
    assert float(result.kl) <= 0.01 and float(result.kl) == pytest.approx(0.01, rel=1e-3)
    assert float(result.step_size) == pytest.approx(math.sqrt(0.008), rel=1e-4)
    assert float(result.loss_after) < float(result.loss_before) == 0.0


def test_flatten_unflatten_round_trip():
    like = [tf.zeros([2, 3]), tf.zeros([4]), tf.zeros([])]
    flat = tf.range(11, dtype=tf.float32)
    parts = trpo.unflatten(flat, like)
    assert [p.shape for p in parts] == [(2, 3), (4,), ()]
    np.testing.assert_array_equal(trpo.flatten(parts), flat)
