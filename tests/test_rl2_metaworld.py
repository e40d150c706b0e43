"""RL2MetaWorldAgent: Meta-World's MetaLearningAgent protocol around an RL² learner."""
import inspect
import json
import os

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("metaworld")

from metaworld.evaluation import MetaLearningAgent, Timestep, metalearning_evaluation  # noqa: E402

from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for  # noqa: E402
from metarl_tf.algorithms.rl2_metaworld import RL2MetaWorldAgent  # noqa: E402
from metarl_tf.networks.recurrent import rl2_input  # noqa: E402
from metarl_tf.tasks import BernoulliBanditTasks  # noqa: E402
from metarl_tf.tasks.metaworld import (ACT_DIM, OBS_DIM, MetaWorldTasks,  # noqa: E402
                                       first_episode_success)

TINY = dict(episodes_per_trial=2, meta_batch_size=2, num_epochs=1, num_minibatches=1)


@pytest.fixture(scope="module")
def learner():
    tasks = MetaWorldTasks("ML1", "reach-v3", horizon=10)
    return RL2Learner(rl2_policy_for(tasks, units=8, seed=0), tasks, RL2Config(**TINY), seed=0)


def ml1_test_envs(num_envs=2, recurrent=False):
    return gymnasium.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=num_envs,
                              seed=0, max_episode_steps=10, recurrent_info_in_obs=recurrent,
                              normalize_reward_in_recurrent_info=False)


def feed(agent, obs_seq, rewards, dones):
    """Drives the adaptation phase by hand; returns the actions given and the unclipped ones."""
    given, raw = [], []
    for o, r, d in zip(obs_seq, rewards, dones):
        act, aux = agent.adapt_action(o)
        assert set(aux) == {"log_prob", "value"}
        agent.step(Timestep(o, act, r, d, np.zeros_like(d), aux))
        given.append(act)
        raw.append(agent.prev_action.copy())
    return given, raw


def test_the_agent_has_every_method_of_metaworlds_protocol(learner):
    agent = RL2MetaWorldAgent(learner, num_envs=2)
    for name in ("init", "adapt_action", "step", "adapt", "eval_action", "reset"):
        proto = inspect.signature(getattr(MetaLearningAgent, name))
        ours = inspect.signature(getattr(agent, name))
        assert len(ours.parameters) == len(proto.parameters) - 1, name   # minus self


def test_state_follows_the_learners_inputs_and_adapt_keeps_it(learner):
    agent = RL2MetaWorldAgent(learner, num_envs=2, seed=3)
    agent.init()
    assert not agent.state.any()
    rng = np.random.default_rng(0)
    T = 6
    obs = rng.normal(size=(T, 2, OBS_DIM))
    rewards = rng.normal(size=(T, 2))
    dones = np.zeros((T, 2), bool)
    dones[2, 0] = dones[3, 1] = True            # episode ends at different steps per sub-env
    given, raw = feed(agent, obs, rewards, dones)
    for g, r in zip(given, raw):                 # Meta-World gets clipped actions ...
        np.testing.assert_array_equal(g, np.clip(r, -1, 1))
        assert g.shape == (2, ACT_DIM) and g.dtype == np.float64
    # ... and the state is the learner's own recursion over x_t = (o_t, a_t-1, r_t-1, d_t-1) with
    # the unclipped action, r and done of the previous step (zeros at the trial start), as in
    # RL2Learner.collect_trials_gym.
    prev_a = np.concatenate([np.zeros((1, 2, ACT_DIM)), np.stack(raw)[:-1]])
    prev_r = np.concatenate([np.zeros((1, 2)), rewards[:-1]])
    prev_d = np.concatenate([np.zeros((1, 2)), dones[:-1]])
    xs = tf.stack([rl2_input(tf.constant(obs[t], tf.float32), tf.constant(prev_a[t], tf.float32),
                             tf.constant(prev_r[t], tf.float32), tf.constant(prev_d[t]), None)
                   for t in range(T)], axis=1)
    _, _, _, final = learner.apply.unroll(learner._params(), xs, learner.apply.initial_state(2))
    np.testing.assert_allclose(agent.state, final.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(agent.state[0], agent.state[1])

    adapted = agent.state.copy()
    agent.adapt()                                # no gradient step: the state is kept
    np.testing.assert_array_equal(agent.state, adapted)
    assert agent.adapt_calls == 1
    weights = [w.numpy().copy() for w in learner.policy.trainable_variables]
    probe = rng.normal(size=(2, OBS_DIM))
    after_adapt = agent.eval_action(probe)
    agent.init()                                 # new tasks: a new trial, zero state
    assert not agent.state.any() and not agent.prev_action.any() and not agent.prev_done.any()
    fresh = agent.eval_action(probe)
    assert not np.allclose(after_adapt, fresh)   # the adaptation was in the state
    agent.init()
    np.testing.assert_array_equal(agent.eval_action(probe), fresh)   # mean action: deterministic
    for w, before in zip(learner.policy.trainable_variables, weights):
        np.testing.assert_array_equal(w.numpy(), before)


def test_reset_is_an_episode_boundary_not_a_new_trial(learner):
    agent = RL2MetaWorldAgent(learner, num_envs=2)
    agent.init()
    feed(agent, np.ones((3, 2, OBS_DIM)), np.ones((3, 2)), np.zeros((3, 2), bool))
    state = agent.state.copy()
    agent.reset(np.array([True, False]))         # e.g. evaluation's first reset: done flag only
    np.testing.assert_array_equal(agent.state, state)
    np.testing.assert_array_equal(agent.prev_done, [1.0, 0.0])
    agent.eval_action(np.ones((2, OBS_DIM)))
    agent.reset(np.array([False, True]))         # after an evaluation step: applies to that step
    agent.eval_action(np.ones((2, OBS_DIM)))
    np.testing.assert_array_equal(agent.prev_done, [0.0, 1.0])
    assert not np.allclose(agent.state, state)   # the trial went on from the adapted state


def test_evaluation_rewards_come_from_metaworlds_recurrent_info(learner):
    agent = RL2MetaWorldAgent(learner, num_envs=2, recurrent_reward_scale=10.0)
    agent.init()
    wide = np.zeros((2, OBS_DIM + ACT_DIM + 2))
    agent.eval_action(wide)
    wide[:, OBS_DIM + ACT_DIM] = [0.3, 0.5]      # the wrapper's reward / 10
    wide[:, :ACT_DIM] = 1.0
    agent.eval_action(wide)
    np.testing.assert_allclose(agent.prev_reward, [3.0, 5.0], rtol=1e-6)
    assert agent.unknown_reward_steps == 0
    agent.reset(np.array([True, False]))         # env 0 ended: it shows its reset observation
    wide[0, OBS_DIM:] = 0.0
    agent.eval_action(wide)
    np.testing.assert_allclose(agent.prev_reward, [0.0, 5.0], rtol=1e-6)
    assert agent.unknown_reward_steps == 1 and agent.eval_steps == 2
    plain = RL2MetaWorldAgent(learner, num_envs=2)
    plain.init()
    plain.eval_action(np.zeros((2, OBS_DIM)))
    plain.eval_action(np.zeros((2, OBS_DIM)))
    assert plain.unknown_reward_steps == 2 and not plain.prev_reward.any()


def test_bad_input_is_reported_by_name(learner):
    with pytest.raises(TypeError, match="must be an RL2Learner"):
        RL2MetaWorldAgent(object(), num_envs=2)
    bandits = BernoulliBanditTasks(num_arms=2)
    cat = RL2Learner(rl2_policy_for(bandits, units=4), bandits, RL2Config(**TINY))
    with pytest.raises(ValueError, match="Gaussian policy head"):
        RL2MetaWorldAgent(cat, num_envs=2)
    with pytest.raises(ValueError, match="`num_envs` must be an integer >= 1"):
        RL2MetaWorldAgent(learner, num_envs=0)
    with pytest.raises(ValueError, match="`recurrent_reward_scale`"):
        RL2MetaWorldAgent(learner, num_envs=2, recurrent_reward_scale=0.0)
    agent = RL2MetaWorldAgent(learner, num_envs=2)
    with pytest.raises(RuntimeError, match=r"call init\(\) before acting"):
        agent.eval_action(np.zeros((2, OBS_DIM)))
    agent.init()
    with pytest.raises(ValueError, match="`observations` must have shape"):
        agent.adapt_action(np.zeros((3, OBS_DIM)))
    with pytest.raises(ValueError, match="`observations` must have shape"):
        agent.adapt_action(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="`observations` hold NaN"):
        agent.adapt_action(np.full((2, OBS_DIM), np.nan))
    obs = np.zeros((2, OBS_DIM))
    z = np.zeros(2, bool)
    with pytest.raises(RuntimeError, match=r"step\(\) must follow adapt_action"):
        agent.step(Timestep(obs, np.zeros((2, ACT_DIM)), np.zeros(2), z, z, {}))
    act, _ = agent.adapt_action(obs)
    with pytest.raises(RuntimeError, match="adapt_action called twice"):
        agent.adapt_action(obs)
    with pytest.raises(RuntimeError, match=r"adapt\(\) called between"):
        agent.adapt()
    with pytest.raises(ValueError, match=r"`timestep.reward` must have shape \(2,\)"):
        agent.step(Timestep(obs, act, np.zeros(3), z, z, {}))
    with pytest.raises(ValueError, match="`timestep.reward` holds NaN"):
        agent.step(Timestep(obs, act, np.array([0.0, np.inf]), z, z, {}))
    with pytest.raises(ValueError, match="`timestep.action` is not the action"):
        agent.step(Timestep(obs, act + 0.5, np.zeros(2), z, z, {}))
    agent.step(Timestep(obs, act, np.zeros(2), z, z, {}))
    with pytest.raises(ValueError, match=r"`env_mask` must have shape \(2,\)"):
        agent.reset(np.ones(3, bool))


def test_metaworlds_own_evaluation_drives_the_agent(learner):
    learner.train(1)                              # a briefly trained policy (20 steps x 2 trials)
    for recurrent in (False, True):
        envs = ml1_test_envs(recurrent=recurrent)
        agent = RL2MetaWorldAgent(learner, num_envs=2)
        success, mean_return, per_task = metalearning_evaluation(
            agent, envs, num_evals=1, adaptation_steps=1, adaptation_episodes=2,
            evaluation_episodes=2)
        assert agent.adapt_calls == 1 and 0.0 <= success <= 1.0 and np.isfinite(mean_return)
        assert set(per_task) == {"reach-v3"}
        # 2 adaptation episodes of 10 steps, then the evaluation steps continue the same trial.
        assert agent.steps_in_trial >= 20 + 9 and agent.eval_steps >= 9
        if recurrent:   # known except after an episode end (the reset observation)
            assert agent.unknown_reward_steps < agent.eval_steps
        else:
            assert agent.unknown_reward_steps == 2 * agent.eval_steps
        rate, outcomes = first_episode_success(agent, envs, num_evals=1, adaptation_steps=1,
                                               adaptation_episodes=1)
        assert len(outcomes) == 2 and set(outcomes) <= {0, 1} and rate == np.mean(outcomes)
        envs.close()


def test_rl2_ml1_preset_trains_through_the_cli(tmp_path, learner):
    from training.cli import main
    from training.run import restore_learner

    run_dir = str(tmp_path / "run")
    tiny = ["--steps", "1", "--quiet", "--threads", "1", "--set", "eval_tasks=2",
            "--set", "network.hidden=[8]", "--set", "checkpoint_every=1", "--set", "log_every=1"]
    tiny += [x for kv in ("meta_batch_size=2", "episodes_per_trial=2", "num_epochs=1",
                          "num_minibatches=1", "horizon=10")
             for x in ("--set", f"algorithm_config.{kv}")]
    assert main(["train", "rl2-ml1", "--out", run_dir, *tiny]) == 0
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary, summary
    _, restored = restore_learner(run_dir)
    # the trial's episodes are the env's: algorithm_config.horizon sets the TimeLimit too
    assert restored.tasks.horizon == 10 and restored.trial_steps == 20
    envs = ml1_test_envs()
    agent = RL2MetaWorldAgent(restored, num_envs=2)
    success, _, _ = metalearning_evaluation(agent, envs, num_evals=1, adaptation_episodes=1,
                                            evaluation_episodes=2)
    assert 0.0 <= success <= 1.0
    envs.close()
