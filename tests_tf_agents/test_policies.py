"""Exports as TF-Agents policies: the PointNav MAML-TRPO export adapts through a driver's
trajectories, the RL² export carries its state through a driver over a bandit trial, the Meta-DQN
export acts (epsilon-)greedily with an adapted z, and PolicySaver re-saves all three."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.environments import batched_py_environment, tf_py_environment
from tf_agents.metrics import tf_metrics
from tf_agents.policies import policy_saver
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory
from tf_agents.utils import common

from metarl_tf import tasks
from metarl_tf.integrations.tf_agents import (ExportedPolicy, ExportedQPolicy, ExportedRL2Policy,
                                              TaskPyEnvironment, adapt_from_trajectories,
                                              set_tasks)

EPISODES = 20  # episodes per goal, before and after adapting (the MAML paper's 20)


def pointnav_env(n, seed=0):
    return tf_py_environment.TFPyEnvironment(batched_py_environment.BatchedPyEnvironment(
        [TaskPyEnvironment(tasks.PointNavTasks(), seed=seed + i) for i in range(n)]))


def run_episodes(env, policy, n):
    """Runs ``n`` episodes; returns (AverageReturnMetric's value, the observed steps)."""
    metric = tf_metrics.AverageReturnMetric(batch_size=env.batch_size, buffer_size=n)
    steps = []
    dynamic_episode_driver.DynamicEpisodeDriver(env, policy, [metric, steps.append],
                                                num_episodes=n).run()
    return float(metric.result()), steps


def test_adapted_pointnav_policy_returns_more_than_the_unadapted_one(exports):
    env = pointnav_env(EPISODES)
    policy = ExportedPolicy(exports["pointnav"], env.time_step_spec(), env.action_spec())
    # the usual TF-Agents pipeline: a compiled driver filling a replay buffer; its gather_all()
    # ([B, T] trajectories) is what adapt takes. 100 steps and the boundary step per row.
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(policy.collect_data_spec,
                                                            batch_size=EPISODES, max_length=110)
    metric = tf_metrics.AverageReturnMetric(batch_size=EPISODES, buffer_size=EPISODES)
    run = common.function(dynamic_episode_driver.DynamicEpisodeDriver(
        env, policy, [metric, buffer.add_batch], num_episodes=EPISODES).run)
    goals = tasks.PointNavTasks().sample(8, seed=7, split="test")
    before, after = [], []
    for goal in goals:
        set_tasks(env, goal, same=True)
        policy.reset_adaptation()
        buffer.clear()
        run()
        before.append(float(metric.result()))
        params = policy.adapt(buffer.gather_all(), num_steps=1)
        assert policy.adapted and params.shape == (policy.num_params,)
        run()
        after.append(float(metric.result()))
    before, after = np.array(before), np.array(after)
    print(f"pointnav returns before={before.round(2)} after={after.round(2)}")
    # 8 held-out goals x 20 episodes each: the adapted policy is better on every goal, and on
    # average by more than 10 (measured: -44.3 before, -23.1 after; per goal the smallest gain was
    # 9.9, while a 20-episode mean return varies by ~1-2 between runs).
    assert np.all(after > before), (before, after)
    assert after.mean() > before.mean() + 10.0, (before.mean(), after.mean())


def test_adapt_from_trajectories_splits_rows_into_episodes_by_hand():
    F, M, L = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)
    # row 0: a 2-step episode (FIRST, MID -> LAST), its boundary step, then an episode still running
    # row 1: one 4-step episode ending at the row's end, terminated (discount 0 after it)
    step_type = np.array([[F, M, L, F, M], [F, M, M, M, L]])
    next_type = np.array([[M, L, F, M, M], [M, M, M, L, F]])
    discount = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 1]], np.float32)
    obs = np.arange(20, dtype=np.float32).reshape(2, 5, 2)          # obs[b, t] = (10b+2t, +1)
    actions = np.arange(10, dtype=np.float32).reshape(2, 5, 1) / 10.0
    rewards = np.array([[1, 2, 0, 4, 5], [6, 7, 8, 9, 0]], np.float32)
    traj = trajectory.Trajectory(step_type, obs, actions, (), next_type, rewards, discount)
    out = adapt_from_trajectories(traj)
    # complete episodes: row 0 steps 0-1, row 1 steps 0-3; padded to 4 steps with a mask
    np.testing.assert_array_equal(out["mask"], [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(out["rewards"], [[1, 2, 0, 0], [6, 7, 8, 9]])
    np.testing.assert_array_equal(out["observations"][0, :2], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(out["observations"][1, 3], [16, 17])
    np.testing.assert_allclose(out["actions"][:, :, 0], [[0.0, 0.1, 0, 0], [0.5, 0.6, 0.7, 0.8]])
    # transitions: every non-LAST step with a next step in the row (columns 0-3)
    tr = adapt_from_trajectories(traj, form="transitions")
    np.testing.assert_array_equal(tr["rewards"], [1, 2, 4, 6, 7, 8, 9])
    np.testing.assert_array_equal(tr["next_observations"][2], [8, 9])      # row 0, step 4
    # done only where the next step is LAST with discount 0 (row 1, step 3); row 0's LAST has 1
    np.testing.assert_array_equal(tr["dones"], [0, 0, 0, 0, 0, 0, 1])
    assert out["actions"].dtype == np.float32 and tr["actions"].dtype == np.float32


def test_adapt_inputs_from_driver_trajectories_match_the_environment(exports):
    env = pointnav_env(2)
    policy = ExportedPolicy(exports["pointnav"], env.time_step_spec(), env.action_spec())
    goal = np.array([0.23, -0.17], np.float32)
    set_tasks(env, goal, same=True)
    _, steps = run_episodes(env, policy, 2)
    inputs = adapt_from_trajectories(steps)
    # at least the 2 episodes the driver counted (an early success ends one sooner, and the
    # environment may then finish another); 100 steps at most (the horizon)
    lengths = inputs["mask"].sum(axis=1)
    assert inputs["observations"].shape[0] >= 2 and inputs["observations"].shape[2] == 2
    assert np.all(lengths <= 100) and np.all(lengths >= 1)
    # the rewards are -distance to the goal after the clipped move: recomputed by hand
    for e, n in enumerate(lengths.astype(int)):
        pos = inputs["observations"][e, :n] + np.clip(inputs["actions"][e, :n], -0.1, 0.1)
        np.testing.assert_allclose(inputs["rewards"][e, :n], -np.linalg.norm(pos - goal, axis=1),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(inputs["observations"][e, 0], [0.0, 0.0])
    # the same arrays through a replay-buffer-like [B, T] batch give the same episodes
    stacked = tf.nest.map_structure(lambda *x: np.stack(x, axis=1), *steps)
    again = adapt_from_trajectories(stacked)
    for key in inputs:
        np.testing.assert_array_equal(inputs[key], again[key])
    with pytest.raises(ValueError, match=r"`form` must be 'episodes' or 'transitions', got 'x'"):
        adapt_from_trajectories(steps, form="x")
    with pytest.raises(ValueError, match=r"`trajectories` hold no complete episode"):
        adapt_from_trajectories(steps[:10])


def replay_trial(model, steps, first_prev_action):
    """The export's state after a trial, called as RL² training feeds it (batch of one).

    Each step of an episode sees the previous action and reward; the first step of a later
    episode sees the last action and reward of the one before and ``done = 1``; the trial's first
    step sees ``first_prev_action``, 0, 0. Boundary steps (LAST -> FIRST) are not acted on.
    """
    state = model.signatures["get_initial_state"](batch_size=tf.constant(1))["state"]
    prev_a, prev_r, done = first_prev_action, 0.0, 0.0
    for step in steps:
        if step.step_type[0] == ts.StepType.LAST:
            continue
        out = model.signatures["action"](
            observation=tf.cast(step.observation, tf.float32), prev_action=tf.constant(prev_a),
            prev_reward=tf.constant([prev_r]), done=tf.constant([done]), state=state)
        state = out["state"]
        prev_a = step.action.numpy().astype(np.asarray(first_prev_action).dtype)
        prev_r = float(step.reward[0])
        done = 1.0 if step.next_step_type[0] == ts.StepType.LAST else 0.0
    return state


def test_rl2_bandit_trial_carries_the_export_state_through_the_driver(exports):
    means = np.array([0.9, 0.1, 0.2, 0.3, 0.1], np.float32)
    env = tf_py_environment.TFPyEnvironment(
        TaskPyEnvironment(tasks.BernoulliBanditTasks(num_arms=5), task=means, seed=3))
    policy = ExportedRL2Policy(exports["rl2-bandits"], env.time_step_spec(), env.action_spec())
    metric = tf_metrics.AverageReturnMetric(buffer_size=10)
    steps = []
    driver = dynamic_episode_driver.DynamicEpisodeDriver(env, policy, [metric, steps.append],
                                                         num_episodes=10)    # one trial: 10 pulls
    _, final = driver.run()
    pulls = [(int(s.action[0]), float(s.reward[0])) for s in steps
             if s.step_type[0] == ts.StepType.FIRST]
    assert len(pulls) == 10
    # each pull is a one-step episode: the metric's average return is the mean reward per pull
    np.testing.assert_allclose(float(metric.result()), np.mean([r for _, r in pulls]), rtol=1e-6)
    # replay the trial on the bare export with the same actions and rewards: the state TF-Agents
    # carried is the export's state after the 10 action calls
    model = tf.saved_model.load(exports["rl2-bandits"])
    state = replay_trial(model, steps, first_prev_action=np.array([-1], np.int32))
    np.testing.assert_allclose(final["state"].numpy(), state.numpy(), rtol=1e-5, atol=1e-6)
    assert int(final["prev_action"][0]) == pulls[-1][0]
    # a new trial starts from the export's initial state (zeros)
    fresh = policy.get_initial_state(1)
    np.testing.assert_array_equal(fresh["state"].numpy(), np.zeros([1, policy.state_size]))
    assert int(fresh["prev_action"][0]) == -1


def test_gaussian_rl2_trial_over_multi_step_episodes_matches_the_export(exports):
    # RL² on PointNav: 2 episodes per trial (cut to 6 steps here), continuous actions; the state
    # crosses the episode boundary with done = 1
    env = tf_py_environment.TFPyEnvironment(TaskPyEnvironment(
        tasks.PointNavTasks(), task=np.array([0.3, -0.2], np.float32), max_episode_steps=6,
        seed=0))
    policy = ExportedRL2Policy(exports["rl2-pointnav"], env.time_step_spec(), env.action_spec())
    assert not policy.categorical and policy.action_spec.shape == (2,)
    steps = []
    _, final = dynamic_episode_driver.DynamicEpisodeDriver(env, policy, [steps.append],
                                                           num_episodes=2).run()
    assert sum(int(s.next_step_type[0] == ts.StepType.LAST) for s in steps) == 2
    model = tf.saved_model.load(exports["rl2-pointnav"])
    state = replay_trial(model, steps, first_prev_action=np.zeros([1, 2], np.float32))
    np.testing.assert_allclose(final["state"].numpy(), state.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match=r"no distribution\(\): its next state depends "
                                                  r"on the action drawn"):
        policy.distribution(env.reset(), final)


def test_rl2_policy_runs_batched_trials_on_different_tasks(exports):
    env = tf_py_environment.TFPyEnvironment(batched_py_environment.BatchedPyEnvironment(
        [TaskPyEnvironment(tasks.BernoulliBanditTasks(num_arms=5), seed=i) for i in range(3)]))
    set_tasks(env, tasks.BernoulliBanditTasks(num_arms=5).sample(3, seed=1))
    policy = ExportedRL2Policy(exports["rl2-bandits"], env.time_step_spec(), env.action_spec(),
                               greedy=True)
    metric = tf_metrics.AverageReturnMetric(batch_size=3, buffer_size=30)
    driver = dynamic_episode_driver.DynamicEpisodeDriver(env, policy, [metric], num_episodes=30)
    # compiled, as TF-Agents pipelines run their drivers: 10 pulls in each of the 3 bandits
    _, final = common.function(driver.run)()
    assert final["state"].shape == (3, policy.state_size)
    assert np.all(np.isfinite(final["state"].numpy()))
    # the driver counts an episode at its boundary step, so the policy's last call was on a LAST
    # step: it recorded the episode's end (done 1) and its reward, a 0 or 1 pull
    np.testing.assert_array_equal(final["done"].numpy(), [1.0, 1.0, 1.0])
    assert set(final["prev_reward"].numpy().tolist()) <= {0.0, 1.0}
    assert 0.0 <= float(metric.result()) <= 1.0                   # a Bernoulli reward per pull


def test_q_policy_adapts_z_from_transitions_and_acts_greedily(exports):
    task = tasks.CartPoleDirTasks().sample(1, seed=2, split="test")[0]
    env = tf_py_environment.TFPyEnvironment(TaskPyEnvironment(tasks.CartPoleDirTasks(), task=task,
                                                              seed=0))
    policy = ExportedQPolicy(exports["meta-dqn-cartpole"], env.time_step_spec(), env.action_spec(),
                             epsilon=1.0)
    steps = []
    dynamic_step_driver.DynamicStepDriver(env, policy, [steps.append], num_steps=60).run()
    inputs = adapt_from_trajectories(steps, form="transitions")
    # every observed step, less the boundary (LAST -> FIRST) ones and the last step (no next
    # observation); the driver counts 60 steps without the boundaries
    boundaries = sum(int(s.step_type[0] == ts.StepType.LAST) for s in steps[:-1])
    assert len(steps) - boundaries == 60 + int(steps[-1].step_type[0] == ts.StepType.LAST)
    assert len(inputs["rewards"]) == len(steps) - 1 - boundaries
    np.testing.assert_array_equal(inputs["rewards"], 1.0)             # CartPole pays 1 per step
    # a pole falling is terminal (done 1); every other transition is not
    assert inputs["dones"].sum() == sum(int(s.next_step_type[0] == ts.StepType.LAST
                                            and s.discount[0] == 0.0) for s in steps[:-1])
    z = policy.adapt(steps, num_steps=3)
    model = tf.saved_model.load(exports["meta-dqn-cartpole"])
    direct = model.signatures["adapt"](
        observations=tf.constant(inputs["observations"]), actions=tf.constant(inputs["actions"]),
        rewards=tf.constant(inputs["rewards"]),
        next_observations=tf.constant(inputs["next_observations"]),
        dones=tf.constant(inputs["dones"]), num_steps=tf.constant(3))["z"]
    np.testing.assert_allclose(z.numpy(), direct.numpy(), rtol=1e-6)
    policy.set_epsilon(0.0)
    obs = tf.random.stateless_normal([16, 4], seed=[1, 2]) * 0.1
    step = ts.restart(obs, batch_size=16)
    want = model.signatures["action_with_z"](observation=obs, z=z)["action"]
    np.testing.assert_array_equal(policy.action(step).action.numpy(), want.numpy())
    # epsilon 0.2 over 2 actions: 0.9 on the greedy action, 0.1 on the other
    policy.set_epsilon(0.2)
    probs = policy.distribution(step).action.probs_parameter().numpy()
    greedy = want.numpy()
    np.testing.assert_allclose(probs[np.arange(16), greedy], 0.9, rtol=1e-6)
    np.testing.assert_allclose(probs[np.arange(16), 1 - greedy], 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`epsilon` must be a number in \[0, 1\], got 2"):
        policy.set_epsilon(2)


def test_wrong_export_or_specs_are_refused_by_name(exports):
    with pytest.raises(ValueError, match=r"`export` is not an AdaptablePolicy export: it has no "
                                         r"'adapt' signature"):
        ExportedPolicy(exports["rl2-bandits"])
    with pytest.raises(ValueError, match=r"`time_step_spec` observation must be one tensor of "
                                         r"shape \[2\]"):
        ExportedPolicy(exports["pointnav"],
                       ts.time_step_spec(tf.TensorSpec([3], tf.float32)))
    policy = ExportedPolicy(exports["pointnav"])
    with pytest.raises(ValueError, match=r"`params` must be a flat vector of \d+ weights"):
        policy.set_params(tf.zeros([3]))


def saved_and_reloaded(policy, path):
    policy_saver.PolicySaver(policy, batch_size=None).save(path)
    return tf.saved_model.load(path)


def test_policy_saver_resaves_wrapped_policies_that_act_identically(exports, tmp_path):
    # the adapted PointNav policy: the adapted weights travel in the saved policy. Episodes for
    # adapt come from the stochastic policy (greedy actions give the mean no gradient); the greedy
    # wrapper takes the adapted weights with set_params.
    env = pointnav_env(4)
    sampler = ExportedPolicy(exports["pointnav"], env.time_step_spec(), env.action_spec())
    set_tasks(env, np.array([0.4, -0.3], np.float32), same=True)
    _, steps = run_episodes(env, sampler, 4)
    policy = ExportedPolicy(exports["pointnav"], env.time_step_spec(), env.action_spec(),
                            greedy=True)
    obs = tf.random.stateless_uniform([32, 2], seed=[3, 4], minval=-0.5, maxval=0.5)
    step = ts.restart(obs, batch_size=32)
    unadapted = policy.action(step).action.numpy()
    policy.set_params(sampler.adapt(steps, num_steps=1))
    reloaded = saved_and_reloaded(policy, str(tmp_path / "pointnav"))
    want = policy.action(step).action.numpy()
    assert not np.allclose(want, unadapted, atol=1e-4)      # the adapted weights act
    np.testing.assert_allclose(reloaded.action(step, ()).action.numpy(), want, rtol=1e-6)
    # the stochastic policy's distribution travels too: same mean and scale
    sampler_reloaded = saved_and_reloaded(sampler, str(tmp_path / "sampler"))
    dist, dist_r = sampler.distribution(step).action, sampler_reloaded.distribution(step, ()).action
    np.testing.assert_allclose(dist_r.mean().numpy(), dist.mean().numpy(), rtol=1e-6)
    np.testing.assert_allclose(dist_r.stddev().numpy(), dist.stddev().numpy(), rtol=1e-6)

    # the RL² policy: get_initial_state and action, state included, over a few steps
    bandit = tf_py_environment.TFPyEnvironment(
        TaskPyEnvironment(tasks.BernoulliBanditTasks(num_arms=5), task=[0.5] * 5, seed=0))
    rl2 = ExportedRL2Policy(exports["rl2-bandits"], bandit.time_step_spec(), bandit.action_spec(),
                            greedy=True)
    rl2_reloaded = saved_and_reloaded(rl2, str(tmp_path / "rl2"))
    state, state_r = rl2.get_initial_state(1), rl2_reloaded.get_initial_state(1)
    time_step = bandit.reset()
    for _ in range(6):
        out, out_r = rl2.action(time_step, state), rl2_reloaded.action(time_step, state_r)
        np.testing.assert_array_equal(out.action.numpy(), out_r.action.numpy())
        np.testing.assert_allclose(out.state["state"].numpy(), out_r.state["state"].numpy(),
                                   rtol=1e-6)
        state, state_r = out.state, out_r.state
        time_step = bandit.step(out.action)

    # the Meta-DQN policy with an adapted z
    q = ExportedQPolicy(exports["meta-dqn-cartpole"])
    q.set_z(tf.constant(np.linspace(-1.0, 1.0, q.z_dim), tf.float32))
    q_reloaded = saved_and_reloaded(q, str(tmp_path / "q"))
    cart = ts.restart(tf.random.stateless_normal([32, 4], seed=[5, 6]) * 0.1, batch_size=32)
    np.testing.assert_array_equal(q_reloaded.action(cart, ()).action.numpy(),
                                  q.action(cart).action.numpy())


def test_policies_need_neither_keras_nor_the_library_beyond_this_module(exports):
    # Keras 3, the task families, training and export blocked: a policy loads, acts and adapts
    code = f"""
import sys
for blocked in ("keras", "metarl_tf.tasks", "training", "export"):
    sys.modules[blocked] = None
import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts, trajectory
from metarl_tf.integrations.tf_agents import ExportedPolicy
policy = ExportedPolicy({exports["pointnav"]!r})
steps = []
for t in range(3):                 # one 3-step episode at the origin, by hand
    kind = [ts.StepType.FIRST, ts.StepType.MID, ts.StepType.MID][t]
    nxt = [ts.StepType.MID, ts.StepType.MID, ts.StepType.LAST][t]
    steps.append(trajectory.Trajectory(tf.constant([kind]), tf.zeros([1, 2]),
                                       tf.constant([[0.05, -0.05]]), (), tf.constant([nxt]),
                                       tf.constant([-0.5]), tf.constant([1.0])))
policy.adapt(steps, num_steps=1)
a = policy.action(ts.restart(tf.zeros([4, 2]), batch_size=4)).action
print("ok", a.shape, policy.adapted)
"""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok (4, 2) True" in proc.stdout
