"""Returns, GAE, advantage normalization and the linear feature baseline, by hand-worked numbers."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.rollouts import LinearFeatureBaseline, discounted_returns, gae, normalize_advantages


def compiled(fn, jit):
    """The function itself, or wrapped in an XLA-compiled tf.function (same test, both ways)."""
    return tf.function(fn, jit_compile=True) if jit else fn


@pytest.mark.parametrize("jit", [False, True])
def test_discounted_returns_by_hand(jit):
    r_t = tf.constant([[1.0, 2.0, 3.0, 4.0],
                       [0.0, 0.0, 0.0, 8.0]])
    m_t = tf.constant([[1.0, 1.0, 1.0, 0.0],     # row 0 ended after step 2: r=4 is padding
                       [1.0, 1.0, 1.0, 1.0]])
    # gamma = 0.5. Row 0: G2 = 3, G1 = 2 + 0.5*3 = 3.5, G0 = 1 + 0.5*3.5 = 2.75, G3 = 0 (padding).
    # Row 1: G3 = 8, G2 = 0 + 0.5*8 = 4, G1 = 2, G0 = 1.
    g_t = compiled(lambda r, m: discounted_returns(r, m, 0.5), jit)(r_t, m_t)
    np.testing.assert_allclose(g_t, [[2.75, 3.5, 3.0, 0.0], [1.0, 2.0, 4.0, 8.0]], rtol=1e-6)


def test_discounted_returns_with_per_step_discount():
    r_t = tf.ones([1, 4])
    discount_t = tf.constant([[0.5, 0.0, 0.5, 0.5]])   # discount 0 between steps 1 and 2 cuts
    # G3 = 1, G2 = 1 + 0.5*1 = 1.5, G1 = 1 + 0*1.5 = 1, G0 = 1 + 0.5*1 = 1.5
    np.testing.assert_allclose(discounted_returns(r_t, tf.ones([1, 4]), discount_t),
                               [[1.5, 1.0, 1.5, 1.0]], rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_gae_by_hand(jit):
    r_t = tf.constant([[1.0, 0.0, 2.0], [1.0, 5.0, 7.0]])
    v_t = tf.constant([[0.5, 1.0, 1.5], [0.5, 9.0, 9.0]])
    m_t = tf.constant([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # gamma = 0.9, lambda = 0.5 (gamma*lambda = 0.45). Row 0, episode end is terminal (v3 = 0):
    #   d2 = 2 + 0 - 1.5 = 0.5;  d1 = 0 + 0.9*1.5 - 1 = 0.35;  d0 = 1 + 0.9*1 - 0.5 = 1.4
    #   A2 = 0.5;  A1 = 0.35 + 0.45*0.5 = 0.575;  A0 = 1.4 + 0.45*0.575 = 1.65875
    # Row 1 ends after step 0, so v1 = 9 is padding: d0 = 1 + 0.9*0 - 0.5 = 0.5, A = [0.5, 0, 0].
    adv = compiled(lambda r, v, m: gae(r, v, m, 0.9, 0.5), jit)(r_t, v_t, m_t)
    np.testing.assert_allclose(adv, [[1.65875, 0.575, 0.5], [0.5, 0.0, 0.0]], rtol=1e-6)


def test_gae_limits_lambda_one_and_zero():
    rng = np.random.default_rng(0)
    r_t = tf.constant(rng.normal(size=(2, 3, 6)), tf.float32)     # [T, N, H]
    v_t = tf.constant(rng.normal(size=(2, 3, 6)), tf.float32)
    lengths = np.array([[6, 3, 1], [2, 6, 4]])
    m_t = tf.constant(np.arange(6) < lengths[..., None], tf.float32)
    # lambda = 1: A_t = G_t - v_t on valid steps (MAML-RL's advantage with its baseline).
    np.testing.assert_allclose(gae(r_t, v_t, m_t, 0.99, 1.0),
                               (discounted_returns(r_t, m_t, 0.99) - v_t) * m_t, atol=1e-5)
    # lambda = 0: the one-step TD error r_t + gamma m_t+1 v_t+1 - v_t.
    v_next = np.concatenate([(v_t * m_t)[..., 1:], np.zeros((2, 3, 1))], axis=-1)
    np.testing.assert_allclose(gae(r_t, v_t, m_t, 0.99, 0.0),
                               (r_t + 0.99 * v_next - v_t) * m_t, atol=1e-5)


def test_normalize_advantages_per_task_over_valid_steps():
    adv = tf.constant([[1.0, 3.0, 100.0], [2.0, 2.0, 2.0]])
    mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # Task 0: valid [1, 3] -> mean 2, std 1 -> [-1, 1], padding 0. Task 1: std 0 -> all 0.
    np.testing.assert_allclose(normalize_advantages(adv, mask), [[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
                               atol=1e-6)


# -- linear feature baseline -------------------------------------------------------------------------
def test_baseline_features_by_hand():
    obs = np.zeros((1, 1, 3, 2), np.float32)
    obs[0, 0, 2] = [20.0, -3.0]       # 20 is clipped to 10
    phi = LinearFeatureBaseline().features(obs).numpy()
    # step 2: u = 0.02 -> [o, o^2, u, u^2, u^3, 1] = [10, -3, 100, 9, 0.02, 4e-4, 8e-6, 1]
    np.testing.assert_allclose(phi[0, 0, 2], [10, -3, 100, 9, 0.02, 4e-4, 8e-6, 1], rtol=1e-5)
    assert phi.shape == (1, 1, 3, 8)


@pytest.mark.parametrize("jit", [False, True])
def test_baseline_recovers_an_exactly_linear_target_per_task(jit):
    rng = np.random.default_rng(1)
    baseline = LinearFeatureBaseline()
    # T=3 tasks x 4 episodes of 50..100 steps: u = h/100 spans [0, 1), so u, u^2, u^3 are
    # separable (on short episodes their weights are not identifiable under the ridge).
    obs = rng.uniform(-2, 2, size=(3, 4, 100, 2)).astype(np.float32)
    lengths = rng.integers(50, 101, size=(3, 4))
    mask = (np.arange(100) < lengths[..., None]).astype(np.float32)
    w_true = rng.normal(size=(3, 8))                                  # a different target per task
    phi = baseline.features(obs).numpy().astype(np.float64)
    target = np.einsum("tnhf,tf->tnh", phi, w_true)
    returns = np.where(mask > 0, target, 1e3).astype(np.float32)      # padding is garbage: ignored
    w = compiled(baseline.fit, jit)(obs, returns, mask).numpy()
    # Ridge 1e-5 against the smallest eigenvalue of Phi^T Phi (~1e-2 here): bias ~1e-3 at most.
    np.testing.assert_allclose(w, w_true, atol=5e-3)
    values = baseline.predict(w, obs, mask).numpy()
    np.testing.assert_allclose(values, target * mask, atol=1e-4)


def test_baseline_with_singular_features_stays_finite():
    # All observations zero: the o and o^2 columns vanish, Phi^T Phi is singular, ridge keeps it
    # solvable; the time features still fit G = 1 - u exactly and the zero columns get 0 weight.
    obs = np.zeros((2, 3, 10, 2), np.float32)
    returns = np.broadcast_to(1.0 - np.arange(10) / 100.0, (2, 3, 10)).astype(np.float32)
    mask = np.ones((2, 3, 10), np.float32)
    w = LinearFeatureBaseline().fit(obs, returns, mask).numpy()
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w[:, :4], 0.0, atol=1e-8)
    np.testing.assert_allclose(LinearFeatureBaseline().fit_predict(obs, returns, mask), returns,
                               atol=1e-4)


def test_baseline_config_is_validated():
    with pytest.raises(ValueError, match="`reg_coeff`"):
        LinearFeatureBaseline(reg_coeff=0.0)
    with pytest.raises(ValueError, match="`num_tries`"):
        LinearFeatureBaseline(num_tries=0)
