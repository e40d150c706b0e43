"""Policy models with explicit task-batched parameters, and the distribution math by hand."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.networks import (GaussianHead, categorical_entropy, categorical_kl,
                                categorical_log_prob, categorical_mlp_policy, categorical_sample,
                                gaussian_entropy, gaussian_kl, gaussian_log_prob,
                                gaussian_mlp_policy, gaussian_policy_apply, gaussian_sample,
                                policy_apply_fn, split_gaussian)
from metarl_tf.params import FunctionalModel

LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)     # 0.918939


# -- distribution math ---------------------------------------------------------------------------
def test_gaussian_log_prob_by_hand():
    mean, log_std = tf.constant([[0.0, 1.0]]), tf.constant([[0.0, math.log(2.0)]])
    # dim 0: z = 1      -> -0.5 - 0 - 0.918939             = -1.418939
    # dim 1: z = -1/2   -> -0.125 - 0.693147 - 0.918939    = -1.737086     sum = -3.156025
    np.testing.assert_allclose(gaussian_log_prob(mean, log_std, tf.constant([[1.0, 0.0]])),
                               [-3.156025], rtol=1e-6)


def test_gaussian_entropy_by_hand():
    # sum_i log_std_i + 0.5 log(2 pi e) = (0 + 1.418939) + (0.693147 + 1.418939) = 3.531024
    np.testing.assert_allclose(gaussian_entropy(tf.constant([0.0, math.log(2.0)])), 3.531024,
                               rtol=1e-6)


def test_gaussian_kl_by_hand():
    # KL(N(0, 1) || N(1, 2^2)) = log 2 + (1 + 1) / (2 * 4) - 0.5 = 0.693147 + 0.25 - 0.5 = 0.443147
    kl = gaussian_kl(tf.constant([0.0]), tf.constant([0.0]), tf.constant([1.0]),
                     tf.constant([math.log(2.0)]))
    np.testing.assert_allclose(kl, 0.443147, rtol=1e-5)
    same = gaussian_kl(tf.constant([0.3, -1.0]), tf.constant([0.1, 0.2]),
                       tf.constant([0.3, -1.0]), tf.constant([0.1, 0.2]))
    np.testing.assert_allclose(same, 0.0, atol=1e-7)


def test_categorical_math_by_hand():
    logits = tf.constant([[0.0, math.log(3.0)]])         # p = [0.25, 0.75]
    # log p_1 = log 0.75 = -0.287682
    np.testing.assert_allclose(categorical_log_prob(logits, tf.constant([1])), [-0.287682],
                               rtol=1e-5)
    # H = 0.25 * 1.386294 + 0.75 * 0.287682 = 0.346574 + 0.215762 = 0.562335
    np.testing.assert_allclose(categorical_entropy(logits), [0.562335], rtol=1e-5)
    # KL([0.25, 0.75] || [0.5, 0.5]) = 0.25 log 0.5 + 0.75 log 1.5 = -0.173287 + 0.304099 = 0.130812
    np.testing.assert_allclose(categorical_kl(logits, tf.zeros([1, 2])), [0.130812], rtol=1e-5)


def test_categorical_log_prob_with_batch_axes():
    logits = tf.reshape(tf.range(24, dtype=tf.float32) / 10.0, [2, 3, 4])
    actions = tf.constant([[0, 1, 3], [2, 2, 0]])
    expected = np.take_along_axis(tf.nn.log_softmax(logits).numpy(), actions.numpy()[..., None],
                                  axis=-1)[..., 0]
    np.testing.assert_allclose(categorical_log_prob(logits, actions), expected, rtol=1e-6)


def test_samplers_match_their_distribution():
    mean, log_std = tf.fill([20000, 2], 0.5), tf.fill([20000, 2], math.log(0.1))
    a = gaussian_sample(mean, log_std, tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(a.mean(0), [0.5, 0.5], atol=5e-3)
    np.testing.assert_allclose(a.std(0), [0.1, 0.1], rtol=3e-2)
    counts = np.bincount(categorical_sample(tf.fill([20000, 1], 0.0) + [[0.0, math.log(3.0)]],
                                            tf.constant([3, 4])).numpy(), minlength=2)
    np.testing.assert_allclose(counts / 20000, [0.25, 0.75], atol=1.5e-2)


# -- models ----------------------------------------------------------------------------------------
def perturbed(fmodel, num_tasks, seed=0):
    tiled = fmodel.tile(fmodel.params(), num_tasks)
    return [p + 0.1 * tf.random.stateless_normal(tf.shape(p), [seed, i]) for i, p in enumerate(tiled)]


def test_gaussian_policy_variables_and_output():
    model = gaussian_mlp_policy(3, 2, hidden=(8, 8), init_log_std=-0.5)
    names = [v.path for v in model.trainable_variables]
    assert names[-1].endswith("log_std") and len(names) == 7     # 3 x (kernel, bias) + log_std
    out = model(np.ones((4, 3), np.float32))
    mean, log_std = split_gaussian(out)
    assert out.shape == (4, 4) and mean.shape == (4, 2)
    np.testing.assert_allclose(log_std, -0.5)                     # state-independent


def test_gaussian_policy_fast_path_equals_functional_model_and_per_task_call():
    model = gaussian_mlp_policy(3, 2, hidden=(8, 5), activation="tanh")
    fmodel = FunctionalModel(model)
    params = perturbed(fmodel, 4)
    x = tf.random.stateless_normal([4, 6, 3], [1, 2])
    general = fmodel.apply_batched(params, x)                     # vectorized_map(stateless_call)
    fast = policy_apply_fn(model)(params, x)
    direct = gaussian_policy_apply(params, x, "tanh")
    per_task = np.stack([fmodel.apply([p[t] for p in params], x[t]) for t in range(4)])
    np.testing.assert_allclose(fast, per_task, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(general, per_task, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(direct, fast, rtol=1e-6)
    # Extra axes between task and features: [T, N, H, obs_dim].
    x4 = tf.random.stateless_normal([4, 2, 5, 3], [3, 4])
    np.testing.assert_allclose(policy_apply_fn(model)(params, x4),
                               tf.reshape(fmodel.apply_batched(params, tf.reshape(x4, [4, 10, 3])),
                                          [4, 2, 5, 4]), rtol=1e-5, atol=1e-6)


def test_fast_path_gradients_equal_general_path_gradients():
    model = gaussian_mlp_policy(2, 2, hidden=(6,))
    fmodel = FunctionalModel(model)
    params = perturbed(fmodel, 3)
    x = tf.random.stateless_normal([3, 5, 2], [5, 6])
    actions = tf.random.stateless_normal([3, 5, 2], [7, 8])

    def loss_with(apply):
        def task_loss(p):       # a policy-gradient-shaped loss: -mean log pi(a | s), one per task
            mean, log_std = split_gaussian(apply(p, x))
            return -tf.reduce_mean(gaussian_log_prob(mean, log_std, actions), axis=1)
        return task_loss

    fast = adaptation.adapt(loss_with(policy_apply_fn(model)), params, adaptation.SGD(0.1), 1)
    general = adaptation.adapt(loss_with(fmodel.apply_batched), params, adaptation.SGD(0.1), 1)
    for a, b in zip(fast.params, general.params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fast.params[-1], params[-1])           # the log-std adapts too


def test_min_std_bounds_the_output_log_std():
    model = gaussian_mlp_policy(2, 1, hidden=(4,), min_std=1e-3)
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), 2)
    params[-1] = tf.constant([[-50.0], [0.2]])
    x = tf.zeros([2, 1, 2])
    for out in (fmodel.apply_batched(params, x), policy_apply_fn(model)(params, x)):
        np.testing.assert_allclose(split_gaussian(out)[1][:, 0, 0], [math.log(1e-3), 0.2],
                                   rtol=1e-6)


def test_categorical_policy_takes_the_dense_fast_path():
    model = categorical_mlp_policy(3, 4, hidden=(8,))
    fmodel = FunctionalModel(model)
    assert fmodel.uses_dense_fast_path
    params = perturbed(fmodel, 2)
    x = tf.random.stateless_normal([2, 3, 5, 3], [9, 9])
    out = policy_apply_fn(model)(params, x)
    assert out.shape == (2, 3, 5, 4)
    np.testing.assert_allclose(out[1, 2], fmodel.apply([p[1] for p in params], x[1, 2]), rtol=1e-5,
                               atol=1e-6)


def test_other_models_fall_back_to_the_general_path():
    inputs = keras.Input((2,))
    h = keras.layers.LayerNormalization()(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, GaussianHead()(keras.layers.Dense(2)(h)))
    fmodel = FunctionalModel(model)
    params = perturbed(fmodel, 2)
    x = tf.random.stateless_normal([2, 3, 2], [1, 1])
    np.testing.assert_allclose(policy_apply_fn(model)(params, x), fmodel.apply_batched(params, x),
                               rtol=1e-6)


# Keras' own saving trips NumPy 2's __array__(copy=...) deprecation for any model, not just this one.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_gaussian_policy_saves_and_loads(tmp_path):
    model = gaussian_mlp_policy(2, 2, hidden=(4,), init_log_std=-1.0)
    path = str(tmp_path / "policy.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_bad_policy_arguments_name_the_field():
    with pytest.raises(ValueError, match="`obs_dim`"):
        gaussian_mlp_policy(0, 2)
    with pytest.raises(ValueError, match="`num_actions`"):
        categorical_mlp_policy(2, 0)
    with pytest.raises(ValueError, match="`min_std`"):
        gaussian_mlp_policy(2, 2, min_std=0.0)
