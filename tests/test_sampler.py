"""Episode collection with gymnasium's vector API: shapes, masks, errors, NaN rejection."""
import math

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.networks import gaussian_mlp_policy, policy_apply_fn
from metarl_tf.params import FunctionalModel
from metarl_tf.rollouts import (EnvStepError, Episodes, TaskEnv, check_episodes, collect_episodes,
                                make_vector_env, policy_from_params)
from metarl_tf.tasks import PointNavEnv, PointNavTasks


def oracle_policy(goals):
    """Straight to the goal at full speed: a deterministic policy whose episodes we can work out."""
    goals = np.asarray(goals, np.float32)
    return lambda obs, task_ids: np.clip(goals[task_ids] - obs, -0.1, 0.1)


def test_shapes_masks_and_rewards_by_hand():
    goals = np.array([[0.25, 0.0], [0.5, 0.5]], np.float32)
    envs = make_vector_env(PointNavTasks().make_env, num_envs=4)   # 6 episodes: 2 waves, 2 idle
    episodes = collect_episodes(envs, oracle_policy(goals), goals, episodes_per_task=3, horizon=6,
                                seed=0)
    assert episodes.observations.shape == (2, 3, 6, 2) and episodes.actions.shape == (2, 3, 6, 2)
    assert episodes.rewards.shape == (2, 3, 6) and episodes.mask.shape == (2, 3, 6)
    # Task 0, goal (0.25, 0): positions 0.1, 0.2, 0.25 -> rewards -0.15, -0.05, 0; done at step 2.
    # Task 1, goal (0.5, 0.5): 0.1 per axis per step -> rewards -(0.5 - 0.1 k) sqrt(2); done at 4.
    for n in range(3):      # every episode of a task is the same (deterministic policy)
        np.testing.assert_array_equal(episodes.mask[0, n], [1, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(episodes.mask[1, n], [1, 1, 1, 1, 1, 0])
        np.testing.assert_allclose(episodes.rewards[0, n], [-0.15, -0.05, 0, 0, 0, 0], atol=1e-6)
        np.testing.assert_allclose(
            episodes.rewards[1, n], [-0.4 * math.sqrt(2), -0.3 * math.sqrt(2),
                                     -0.2 * math.sqrt(2), -0.1 * math.sqrt(2), 0, 0], atol=1e-6)
        # observation = position BEFORE the action; padding is zero
        np.testing.assert_allclose(episodes.observations[0, n, :, 0], [0, 0.1, 0.2, 0, 0, 0],
                                   atol=1e-6)
        np.testing.assert_allclose(episodes.actions[0, n, :, 0], [0.1, 0.1, 0.05, 0, 0, 0],
                                   atol=1e-6)
    check_episodes(episodes)


def test_horizon_cuts_episodes_and_actions_are_stored_unclipped():
    goals = np.array([[0.4, 0.4]], np.float32)
    envs = make_vector_env("metarl_tf/PointNav-v0", num_envs=2)
    episodes = collect_episodes(envs, lambda obs, ids: np.ones((2, 2), np.float32), goals,
                                episodes_per_task=2, horizon=3)
    np.testing.assert_array_equal(episodes.mask, np.ones((1, 2, 3)))
    np.testing.assert_array_equal(episodes.actions, np.ones((1, 2, 3, 2)))   # as the policy sampled
    np.testing.assert_allclose(episodes.observations[0, 0, :, 0], [0.0, 0.1, 0.2], atol=1e-6)


def test_gaussian_policy_from_task_batched_params():
    tasks = PointNavTasks()
    model = gaussian_mlp_policy(2, 2, hidden=(8,))
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), 3)
    # Task t's policy has mean (10 t, 0) through its output bias: its actions identify its params.
    params[-3] = tf.zeros_like(params[-3])
    params[-2] = tf.constant([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    params[-1] = tf.fill([3, 2], math.log(1e-3))
    policy = policy_from_params(policy_apply_fn(model), params, seed=0)
    envs = make_vector_env(tasks.make_env, num_envs=3)          # E = T: envs keep their task
    episodes = collect_episodes(envs, policy, tasks.sample(3, seed=1), episodes_per_task=2,
                                horizon=5, seed=0)
    np.testing.assert_allclose(episodes.actions[..., 0].mean(axis=(1, 2)), [0, 10, 20], atol=1e-2)
    assert np.all(episodes.mask == 1)
    check_episodes(episodes)


class ScriptedEnv(gymnasium.Env):
    """A task env that raises or returns NaN at a given step (1-based) when its task says so."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, failure="raise", at_step=3):
        self.failure, self.at_step, self.task, self.t = failure, at_step, None, 0

    def set_task(self, task):
        self.task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        bad = self.task == "bad" and self.t == self.at_step
        if bad and self.failure == "raise":
            raise RuntimeError("simulator exploded")
        obs = np.full(1, np.nan if bad and self.failure == "nan_obs" else self.t, np.float32)
        reward = float("nan") if bad and self.failure == "nan_reward" else 1.0
        return obs, reward, False, False, {}


def zero_policy(obs, task_ids):
    return np.zeros((len(obs), 1), np.float32)


def test_an_env_that_raises_is_reported_with_task_and_step():
    envs = make_vector_env(lambda: ScriptedEnv("raise"), num_envs=2)
    with pytest.raises(RuntimeError, match=r"task 'bad', step 3: RuntimeError: simulator exploded"):
        collect_episodes(envs, zero_policy, ["good", "bad"], episodes_per_task=1, horizon=5)
    envs = make_vector_env(lambda: ScriptedEnv("raise"), num_envs=2)
    with pytest.raises(RuntimeError, match=r"wave 0, step 3, tasks \[0, 1\]") as info:
        collect_episodes(envs, zero_policy, ["good", "bad"], episodes_per_task=1, horizon=5)
    assert isinstance(info.value.__cause__, EnvStepError)           # the chain is kept


@pytest.mark.filterwarnings("ignore::UserWarning")     # gymnasium logs the worker's traceback
def test_an_async_env_that_raises_is_reported_with_task_and_step():
    envs = make_vector_env(lambda: ScriptedEnv("raise"), num_envs=2, asynchronous=True,
                           context="fork")
    try:
        with pytest.raises(RuntimeError, match=r"task 'bad', step 3: .*simulator exploded"):
            collect_episodes(envs, zero_policy, ["good", "bad"], episodes_per_task=1, horizon=5)
    finally:
        envs.close(terminate=True)


@pytest.mark.parametrize("failure, what", [("nan_reward", "reward"), ("nan_obs", "observation")])
def test_nan_from_an_env_is_rejected(failure, what):
    envs = make_vector_env(lambda: ScriptedEnv(failure, at_step=2), num_envs=2)
    when = "at step 2" if what == "reward" else "after step 2"
    with pytest.raises(ValueError, match=rf"non-finite {what} .* task 1, episode 0, {when}"):
        collect_episodes(envs, zero_policy, ["good", "bad"], episodes_per_task=1, horizon=4)


def test_bad_inputs_are_rejected_clearly():
    envs = make_vector_env(lambda: ScriptedEnv(), num_envs=2)
    with pytest.raises(ValueError, match="policy_fn returned actions of shape"):
        collect_episodes(envs, lambda obs, ids: np.zeros((2, 3)), ["a"], 1, 2)
    with pytest.raises(ValueError, match="`horizon`"):
        collect_episodes(envs, zero_policy, ["a"], 1, 0)
    with pytest.raises(TypeError, match="set_task"):
        TaskEnv(gymnasium.make("CartPole-v1"))
    raw = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.wrappers.TimeLimit(
        gymnasium.make("CartPole-v1").unwrapped, 5)])
    with pytest.raises(TypeError, match="settable `task` attribute"):
        collect_episodes(raw, zero_policy, ["a"], 1, 2)
    # A plain PointNavEnv has a `task` attribute of its own: no wrapper needed.
    plain = gymnasium.vector.SyncVectorEnv([lambda: PointNavEnv()])
    episodes = collect_episodes(plain, lambda o, i: np.zeros((1, 2), np.float32), [[0.2, 0.0]], 1, 2)
    np.testing.assert_allclose(episodes.rewards, [[[-0.2, -0.2]]], atol=1e-6)


def test_check_episodes_rejects_unusable_batches():
    good = Episodes(np.zeros((2, 1, 3, 2)), np.zeros((2, 1, 3, 2)), np.zeros((2, 1, 3)),
                    np.array([[[1, 1, 0]], [[1, 0, 0]]], np.float32))
    check_episodes(good)
    with pytest.raises(ValueError, match="`rewards` contains NaN .* \\[1, 0, 2\\]"):
        rewards = good.rewards.copy()
        rewards[1, 0, 2] = np.nan
        check_episodes(good._replace(rewards=rewards))
    with pytest.raises(ValueError, match=r"all zero for task\(s\) \[1\]"):
        check_episodes(good._replace(mask=np.array([[[1, 1, 0]], [[0, 0, 0]]], np.float32)))
    with pytest.raises(ValueError, match="ones then zeros"):
        check_episodes(good._replace(mask=np.array([[[1, 0, 1]], [[1, 0, 0]]], np.float32)))
    with pytest.raises(ValueError, match="`observations` must be"):
        check_episodes(good._replace(observations=np.zeros((2, 1, 4, 2))))


def test_keyed_episodes_do_not_depend_on_waves_and_noise_is_keyed_by_episode():
    from metarl_tf.rollouts import LocalSampler, episode_seed

    tasks = PointNavTasks()
    model = gaussian_mlp_policy(2, 2, hidden=(8,))
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), 3)
    apply_fn = policy_apply_fn(model)
    goals = tasks.sample(3, seed=1)
    one = LocalSampler(make_vector_env(tasks.make_env, num_envs=1), keyed=True)
    four = LocalSampler(make_vector_env(tasks.make_env, num_envs=4), keyed=True)
    a = one.collect(apply_fn, "gaussian", params, goals, 2, 5, seed=7)   # 6 waves of 1 episode
    b = four.collect(apply_fn, "gaussian", params, goals, 2, 5, seed=7)  # 2 waves, 2 idle slots
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # log_std starts at 0 (std 1): action - mean(obs) is the keyed noise itself, draw h of
    # Philox(episode_seed(7, task, episode, 1)), whatever sub-environment ran the episode.
    mean = np.asarray(apply_fn(params, tf.constant(a.observations.reshape(3, 10, 2))))[..., :2]
    noise = a.actions.reshape(3, 10, 2) - mean
    for t in range(3):
        for n in range(2):
            eps = np.random.Generator(np.random.Philox(episode_seed(7, t, n, 1))).standard_normal(
                (5, 2), dtype=np.float32)
            live = a.mask[t, n] > 0
            np.testing.assert_allclose(noise.reshape(3, 2, 5, 2)[t, n][live], eps[live],
                                       atol=1e-5)
    c = four.collect(apply_fn, "gaussian", params, goals, 2, 5, seed=8)
    assert not np.allclose(a.actions, c.actions)            # another seed, other noise


def test_keyed_policy_needs_numpy_backend_and_start_wave():
    model = gaussian_mlp_policy(2, 2, hidden=(8,))
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), 1)
    with pytest.raises(ValueError, match="`keyed=True` needs the NumPy backend"):
        policy_from_params(policy_apply_fn(model), params, keyed=True, backend="tf")
    policy = policy_from_params(policy_apply_fn(model), params, keyed=True)
    with pytest.raises(RuntimeError, match="needs start_wave"):
        policy(np.zeros((1, 2), np.float32), np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="`task_keys` needs a `seed`"):
        collect_episodes(make_vector_env(PointNavTasks().make_env, 1), policy,
                         np.zeros((1, 2), np.float32), 1, 2, task_keys=[0])
