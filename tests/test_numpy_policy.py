"""The NumPy forward of the Gaussian MLP policy and the sampler's NumPy backend.

The gymnasium sampler acts through ``policy_from_params``; for ``gaussian_mlp_policy`` it runs the
network in NumPy (``GaussianPolicyApply.numpy_apply``) instead of one TensorFlow call per vector
step. These tests pin that the NumPy forward IS the TF forward (to float32 rounding) for every
mirrored activation, and the seed/distribution contract of both backends.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.networks import (GaussianPolicyApply, categorical_mlp_policy, gaussian_mlp_policy,
                                gaussian_policy_apply, gaussian_policy_apply_numpy,
                                policy_apply_fn)
from metarl_tf.params import FunctionalModel
from metarl_tf.rollouts import collect_episodes, make_vector_env, policy_from_params
from metarl_tf.tasks import PointNavTasks

MIRRORED = ["linear", "relu", "tanh", "sigmoid", "elu", "softplus", "silu"]


def perturbed(model, num_tasks, seed=0, scale=0.3):
    """Task-batched params ``[T, ...]``, each task's row perturbed differently (distinct tasks)."""
    fmodel = FunctionalModel(model)
    tiled = fmodel.tile(fmodel.params(), num_tasks)
    return [p + scale * tf.random.stateless_normal(tf.shape(p), [seed, i])
            for i, p in enumerate(tiled)]


@pytest.mark.parametrize("activation", MIRRORED)
def test_numpy_forward_equals_the_tf_forward(activation):
    model = gaussian_mlp_policy(5, 3, hidden=(16, 16), activation=activation, min_std=0.5)
    params = perturbed(model, 4)
    # Inputs of scale 3 put pre-activations on both sides of every kink/saturation; the log-std
    # rows straddle log(0.5) = -0.693, so the min_std floor is exercised too.
    params[-1] = tf.constant([[-2.0, 0.0, 0.3]] * 4) + 0.1 * tf.range(4.0)[:, None]
    obs = 3.0 * tf.random.stateless_normal([4, 7, 5], [1, 2])
    apply_fn = policy_apply_fn(model)
    assert isinstance(apply_fn, GaussianPolicyApply) and apply_fn.numpy_apply is not None
    expected = model_outputs(model, params, obs)          # Keras' own forward, task by task
    tf_fast = apply_fn(params, obs).numpy()
    np_fast = gaussian_policy_apply_numpy([p.numpy() for p in params], obs.numpy(), activation,
                                          min_std=0.5)
    assert np_fast.dtype == np.float32 and np_fast.shape == (4, 7, 6)
    np.testing.assert_allclose(tf_fast, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_fast, expected, rtol=1e-5, atol=1e-5)
    # log-std column: max(log_std, log 0.5) -> task 0: (-0.693, 0, 0.3)
    np.testing.assert_allclose(np_fast[0, 0, 3:], [math.log(0.5), 0.0, 0.3], rtol=1e-6)
    mean, log_std = apply_fn.numpy_apply([p.numpy() for p in params], obs.numpy())
    np.testing.assert_array_equal(mean, np_fast[..., :3])
    np.testing.assert_array_equal(log_std, np_fast[:, 0, 3:])


def model_outputs(model, params, obs):
    fmodel = FunctionalModel(model)
    return np.stack([fmodel.apply([p[t] for p in params], obs[t]).numpy()
                     for t in range(obs.shape[0])])


def test_numpy_forward_by_hand():
    # One hidden unit, relu: obs 2 -> h = relu(2 * 1.5 - 4) = relu(-1) = 0 -> mean = 0 * 3 + 0.25;
    # obs -2 -> h = relu(-3 - 4) = 0 as well; obs 4 -> relu(6 - 4) = 2 -> mean = 6.25.
    params = [np.array([[[1.5]]], np.float32), np.array([[-4.0]], np.float32),
              np.array([[[3.0]]], np.float32), np.array([[0.25]], np.float32),
              np.array([[-20.0]], np.float32)]                      # log-std below log(1e-6)
    out = gaussian_policy_apply_numpy(params, np.array([[[2.0], [-2.0], [4.0]]], np.float32))
    np.testing.assert_allclose(out[0, :, 0], [0.25, 0.25, 6.25])
    np.testing.assert_allclose(out[0, :, 1], math.log(1e-6), rtol=1e-6)   # floored: -13.8155


def test_policy_backends_and_deterministic_actions_agree():
    model = gaussian_mlp_policy(4, 2, hidden=(32, 32), activation="tanh")
    params = perturbed(model, 3)
    apply_fn = policy_apply_fn(model)
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    ids = np.array([0, 1, 2, 2, 1, 0], np.int32)       # rows use their own task's parameters
    auto = policy_from_params(apply_fn, params, deterministic=True)
    tf_policy = policy_from_params(apply_fn, params, deterministic=True, backend="tf")
    assert auto.backend == "numpy" and tf_policy.backend == "tf"
    np.testing.assert_allclose(auto(obs, ids), tf_policy(obs, ids), rtol=1e-5, atol=1e-6)
    per_task = model_outputs(model, params, tf.constant(obs[None].repeat(3, 0)))
    np.testing.assert_allclose(auto(obs, ids), per_task[ids, np.arange(6), :2], rtol=1e-5,
                               atol=1e-6)
    # Changing the task assignment between calls re-gathers the rows (no stale cache).
    np.testing.assert_allclose(auto(obs, ids[::-1]), tf_policy(obs, ids[::-1]), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_sampled_actions_follow_the_seed_and_distribution_contract(backend):
    model = gaussian_mlp_policy(2, 2, hidden=(8,))
    params = perturbed(model, 2)
    # Task 0: mean (1, -1), std 0.1; task 1: mean (-2, 0), std e^0.5 = 1.6487 (output bias only).
    params[-3] = tf.zeros_like(params[-3])
    params[-2] = tf.constant([[1.0, -1.0], [-2.0, 0.0]])
    params[-1] = tf.constant([[math.log(0.1)] * 2, [0.5, 0.5]])
    apply_fn = policy_apply_fn(model)
    obs = np.zeros((4000, 2), np.float32)
    ids = np.repeat(np.array([0, 1], np.int32), 2000)

    def draws(seed, calls=5):
        policy = policy_from_params(apply_fn, params, seed=seed, backend=backend)
        return np.stack([policy(obs, ids) for _ in range(calls)])        # [5, 4000, 2]

    a, b, c = draws(3), draws(3), draws(4)
    np.testing.assert_array_equal(a, b)                  # same seed -> the same stream
    assert not np.allclose(a, c)                         # another seed -> another stream
    assert not np.allclose(a[0], a[1])                   # fresh noise every call
    task0, task1 = a[:, :2000].reshape(-1, 2), a[:, 2000:].reshape(-1, 2)
    # 10000 draws per task: the standard error of the mean is std / 100, of the std ~ std / 141.
    np.testing.assert_allclose(task0.mean(0), [1.0, -1.0], atol=4 * 0.1 / 100)
    np.testing.assert_allclose(task0.std(0), [0.1, 0.1], rtol=0.03)
    np.testing.assert_allclose(task1.mean(0), [-2.0, 0.0], atol=4 * 1.6487 / 100)
    np.testing.assert_allclose(task1.std(0), [1.6487, 1.6487], rtol=0.03)
    assert a.dtype == np.float32


def test_policies_without_a_numpy_mirror_fall_back_to_tf():
    gelu = gaussian_mlp_policy(2, 2, hidden=(8,), activation="gelu")
    assert policy_apply_fn(gelu).numpy_apply is None
    params = perturbed(gelu, 2)
    policy = policy_from_params(policy_apply_fn(gelu), params)
    assert policy.backend == "tf"
    assert policy(np.zeros((2, 2), np.float32), np.array([0, 1])).shape == (2, 2)
    categorical = categorical_mlp_policy(3, 4, hidden=(8,))
    cat_params = FunctionalModel(categorical).tile(FunctionalModel(categorical).params(), 2)
    cat_policy = policy_from_params(policy_apply_fn(categorical), cat_params, "categorical")
    assert cat_policy.backend == "tf"
    plain = lambda p, o: gaussian_policy_apply(p, o, "relu")  # noqa: E731  (no numpy_apply)
    assert policy_from_params(plain, params).backend == "tf"
    with pytest.raises(ValueError, match="backend='numpy'.*NumPy mirror"):
        policy_from_params(policy_apply_fn(gelu), params, backend="numpy")
    with pytest.raises(ValueError, match="backend='numpy'.*NumPy mirror"):
        policy_from_params(policy_apply_fn(categorical), cat_params, "categorical",
                           backend="numpy")
    with pytest.raises(ValueError, match="`backend` must be one of .*'auto'"):
        policy_from_params(policy_apply_fn(gelu), params, backend="jax")
    with pytest.raises(ValueError, match="`activation` 'gelu' has no NumPy mirror"):
        gaussian_policy_apply_numpy([p.numpy() for p in params], np.zeros((2, 1, 2)), "gelu")
    with pytest.raises(ValueError, match=r"must be \[T, M, obs_dim\]"):
        gaussian_policy_apply_numpy([p.numpy() for p in params], np.zeros((2, 2)))


def test_the_sampler_collects_the_same_mean_path_with_both_backends():
    tasks = PointNavTasks()
    model = gaussian_mlp_policy(2, 2, hidden=(16,))
    params = perturbed(model, 3)
    goals = tasks.sample(3, seed=2)
    runs = []
    for backend in ("numpy", "tf"):
        envs = make_vector_env(tasks.make_env, num_envs=3)
        policy = policy_from_params(policy_apply_fn(model), params, deterministic=True,
                                    backend=backend)
        runs.append(collect_episodes(envs, policy, goals, episodes_per_task=1, horizon=8, seed=0))
        envs.close()
    np.testing.assert_allclose(runs[0].observations, runs[1].observations, atol=1e-5)
    np.testing.assert_allclose(runs[0].rewards, runs[1].rewards, atol=1e-5)
