"""PointNav: gymnasium and pure-TF versions agree; the in-graph rollout compiles and replays."""
import math

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.networks import (gaussian_log_prob, gaussian_mlp_policy, policy_apply_fn,
                                split_gaussian)
from metarl_tf.params import FunctionalModel
from metarl_tf.rollouts import (LinearFeatureBaseline, discounted_returns, gae, pointnav_oracle,
                                rollout_pointnav, rollout_pointnav_actions)
from metarl_tf.tasks import PointNavEnv, PointNavTasks, PointNavTF
from metarl_tf.tasks.pointnav import ENV_ID, register


def test_registered_env_has_the_maml_settings():
    register()                                        # idempotent: already done on import
    env = gymnasium.make(ENV_ID)
    assert env.spec.max_episode_steps == 100
    np.testing.assert_allclose(env.action_space.high, [0.1, 0.1])
    env.unwrapped.set_task([0.3, 0.4])
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    np.testing.assert_allclose(info["goal"], [0.3, 0.4])
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        steps += 1
        assert not terminated
    assert steps == 100


def test_reward_is_the_distance_after_the_move():
    env = PointNavEnv(goal=[0.3, 0.4])
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.array([0.5, -0.2], np.float32))
    # The action is clipped to (0.1, -0.1); the new position (0.1, -0.1) is 0.2, 0.5 from the goal:
    # r = -sqrt(0.04 + 0.25) = -0.538516
    np.testing.assert_allclose(obs, [0.1, -0.1], rtol=1e-6)
    assert reward == pytest.approx(-0.538516, abs=1e-6)
    assert not terminated and not truncated


def test_reaching_the_goal_terminates():
    env = PointNavEnv(goal=[0.05, -0.03])
    env.reset()
    _, reward, terminated, _, _ = env.step(np.array([0.05, -0.03], np.float32))
    assert terminated and reward == pytest.approx(0.0, abs=1e-6)
    env.set_task([0.05, 0.0])
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([0.05, 0.011], np.float32))   # |dy| = 0.011 > 0.01
    assert not terminated


@pytest.mark.parametrize("jit", [False, True])
def test_gym_and_tf_versions_agree_step_by_step(jit):
    tasks = PointNavTasks()
    goals = tasks.sample(5, seed=3)
    goals[0] = [0.05, 0.0]                            # one env that reaches its goal
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, size=(30, 5, 2)).astype(np.float32)
    actions[:, 0] = [0.025, 0.0]                      # reaches (0.05, 0) after 2 steps
    envs = [PointNavEnv(goal=g) for g in goals]
    gym_obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)])
    tf_env = tasks.tf_env()
    step = tf.function(tf_env.step, jit_compile=True) if jit else tf_env.step
    state = tf_env.reset(goals)
    np.testing.assert_array_equal(tf_env.observe(state), gym_obs)
    for t in range(30):
        results = [env.step(a) for env, a in zip(envs, actions[t])]
        state, reward, done = step(state, actions[t])
        np.testing.assert_allclose(tf_env.observe(state), np.stack([r[0] for r in results]),
                                   atol=1e-6)
        np.testing.assert_allclose(reward, [r[1] for r in results], atol=1e-6)
        np.testing.assert_array_equal(done, [r[2] for r in results])
        if t == 1:
            assert results[0][2]                       # env 0 is at its goal at step 2


def test_task_sampling_and_splits():
    tasks = PointNavTasks()
    train, again, test = tasks.sample(50, 0), tasks.sample(50, 0), tasks.sample(50, 0, "test")
    assert train.shape == (50, 2) and train.dtype == np.float32
    assert np.all(np.abs(train) <= 0.5)
    np.testing.assert_array_equal(train, again)
    assert not np.allclose(train, test)
    goals_tf = tasks.sample_tf(tf.constant([0, 1]), 50)
    assert goals_tf.shape == (50, 2) and np.all(np.abs(goals_tf) <= 0.5)
    assert not np.allclose(goals_tf, tasks.sample_tf(tf.constant([0, 1]), 50, "test"))
    legacy = tasks.maml_test_goals()
    np.random.seed(1)                                   # what cbfinn/maml_rl's test script does
    np.testing.assert_allclose(legacy, np.random.uniform(-0.5, 0.5, size=(40, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="`split`"):
        tasks.sample(3, 0, split="val")


def test_bad_settings_and_tasks_name_the_field():
    with pytest.raises(ValueError, match="`goal_range`"):
        PointNavTasks(goal_range=(0.5, -0.5))
    with pytest.raises(ValueError, match="`horizon`"):
        PointNavTasks(horizon=0)
    with pytest.raises(ValueError, match="`max_action`"):
        PointNavTF(max_action=-1.0)
    with pytest.raises(ValueError, match="2-vector goal"):
        PointNavEnv().set_task([1.0, 2.0, 3.0])
    env = PointNavEnv(goal=[0.0, 0.0])
    env.reset()
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0], np.float32))


def test_oracle_rollout_in_graph_by_hand():
    goals = tf.constant([[0.25, 0.0], [0.5, 0.5]])
    episodes = tf.function(lambda g: rollout_pointnav_actions(pointnav_oracle(), g, [0, 0], 2, 6),
                           jit_compile=True)(goals)
    # Goal (0.25, 0): positions 0.1, 0.2, 0.25 -> rewards -0.15, -0.05, 0, done at step 2.
    # Goal (0.5, 0.5): 0.1 per axis per step -> rewards -(0.5 - 0.1 k) sqrt(2), done at step 4.
    np.testing.assert_array_equal(episodes.mask[0, 0], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(episodes.mask[1, 1], [1, 1, 1, 1, 1, 0])
    np.testing.assert_allclose(episodes.rewards[0, 1], [-0.15, -0.05, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(episodes.rewards[1, 0],
                               [-0.4 * math.sqrt(2), -0.3 * math.sqrt(2), -0.2 * math.sqrt(2),
                                -0.1 * math.sqrt(2), 0, 0], atol=1e-6)
    np.testing.assert_allclose(episodes.observations[0, 0, :4, 0], [0.0, 0.1, 0.2, 0.0], atol=1e-6)


def replay_in_gym(episodes, goals):
    """Feeds the recorded actions to gymnasium PointNav; returns its observations, rewards, mask."""
    obs_out = np.zeros_like(episodes.observations)
    rew_out = np.zeros_like(episodes.rewards)
    mask_out = np.zeros_like(episodes.mask)
    num_tasks, num_episodes, horizon = episodes.rewards.shape
    for t in range(num_tasks):
        for n in range(num_episodes):
            env = PointNavEnv(goal=goals[t])
            obs, _ = env.reset()
            for h in range(horizon):
                obs_out[t, n, h], mask_out[t, n, h] = obs, 1.0
                obs, rew_out[t, n, h], terminated, _, _ = env.step(episodes.actions[t, n, h])
                if terminated:
                    break
    return obs_out, rew_out, mask_out


def test_policy_rollout_compiles_and_replays_in_gym():
    model = gaussian_mlp_policy(2, 2, hidden=(16, 16), init_log_std=math.log(0.05))
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), 3)
    # Task 0's policy heads for its goal (0.3, 0) at full speed with tiny noise: mean = output bias
    # (0.1, 0) (zero output kernel), std 1e-4, so its episodes terminate at step 2.
    goals = np.array([[0.3, 0.0], [-0.2, 0.4], [0.1, -0.45]], np.float32)
    first = tf.constant([0.0, 1.0, 1.0])
    params[-3] = params[-3] * first[:, None, None]
    params[-2] = tf.tensor_scatter_nd_update(params[-2], [[0]], [[0.1, 0.0]])
    params[-1] = tf.tensor_scatter_nd_update(params[-1], [[0]], [[math.log(1e-4)] * 2])
    apply = policy_apply_fn(model)
    sample = tf.function(lambda p, g, s: rollout_pointnav(apply, p, g, s, 4, 40), jit_compile=True)
    episodes = sample(params, tf.constant(goals), tf.constant([5, 6]))
    assert episodes.observations.shape == (3, 4, 40, 2) and episodes.mask.shape == (3, 4, 40)
    episodes = type(episodes)(*(x.numpy() for x in episodes))
    assert np.all(np.diff(episodes.mask, axis=-1) <= 0)                     # ones then zeros
    np.testing.assert_array_equal(episodes.mask[0].sum(axis=-1), [3, 3, 3, 3])
    obs, rew, mask = replay_in_gym(episodes, goals)
    np.testing.assert_array_equal(mask, episodes.mask)
    np.testing.assert_allclose(obs, episodes.observations, atol=1e-5)
    np.testing.assert_allclose(rew, episodes.rewards, atol=1e-5)
    # Deterministic rollouts are the same eager and compiled (no noise to differ in).
    det = lambda p, g: rollout_pointnav(apply, p, g, [0, 0], 2, 10, deterministic=True)  # noqa
    eager, xla = det(params, goals), tf.function(det, jit_compile=True)(params, goals)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_rollout_is_data_no_gradient_flows():
    model = gaussian_mlp_policy(2, 2, hidden=(4,))
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), 2)
    with tf.GradientTape() as tape:
        tape.watch(params)
        episodes = rollout_pointnav(policy_apply_fn(model), params, tf.zeros([2, 2]), [1, 1], 2, 5)
        total = tf.reduce_sum(episodes.rewards) + tf.reduce_sum(episodes.actions)
    assert all(g is None for g in tape.gradient(total, params))


def test_rollout_returns_baseline_and_an_inner_step_compile_together():
    # The pieces of a MAML-RL inner step on PointNav, in ONE XLA function: sample goals, roll out,
    # fit the baseline, GAE, a policy-gradient step through adaptation.adapt, roll out again.
    tasks = PointNavTasks()
    model = gaussian_mlp_policy(2, 2, hidden=(8,))
    fmodel = FunctionalModel(model)
    apply = policy_apply_fn(model)

    @tf.function(jit_compile=True)
    def inner_step(seed):
        goals = tasks.sample_tf(seed, 3)
        params = fmodel.tile(fmodel.variables, 3)
        ep = rollout_pointnav(apply, params, goals, seed, 4, 20)
        returns = discounted_returns(ep.rewards, ep.mask, 0.99)
        values = LinearFeatureBaseline().fit_predict(ep.observations, returns, ep.mask)
        adv = gae(ep.rewards, values, ep.mask, 0.99, 1.0)

        def surrogate(p):
            mean, log_std = split_gaussian(apply(p, ep.observations))
            logp = gaussian_log_prob(mean, log_std, ep.actions)
            return -tf.reduce_sum(logp * adv * ep.mask, axis=[1, 2]) / tf.reduce_sum(ep.mask, [1, 2])

        adapted = adaptation.adapt(surrogate, params, adaptation.SGD(0.1), 1)
        after = rollout_pointnav(apply, adapted.params, goals, seed + 1, 4, 20)
        return ep.rewards, after.rewards, adapted.support_loss

    before, after, loss = inner_step(tf.constant([3, 4], tf.int64))
    assert before.shape == after.shape == (3, 4, 20) and loss.shape == (3,)
    assert np.all(np.isfinite(after)) and np.all(np.isfinite(loss))
