"""MAMLMetaWorldAgent: Meta-World's MetaLearningAgent protocol around a MAML-RL learner."""
import gymnasium
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("metaworld")

from metaworld.evaluation import Timestep, metalearning_evaluation  # noqa: E402

from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner  # noqa: E402
from metarl_tf.networks import gaussian_mlp_policy  # noqa: E402
from metarl_tf.tasks import PointNavTasks  # noqa: E402
from metarl_tf.tasks.metaworld import (ACT_DIM, OBS_DIM, MAMLMetaWorldAgent,  # noqa: E402
                                       MetaWorldTasks, first_episode_success)

TINY = dict(meta_batch_size=2, episodes_per_task=1, horizon=10)


def pointnav_learner():
    return MAMLRLLearner(gaussian_mlp_policy(2, 2, hidden=(8,)), PointNavTasks(),
                         MAMLRLConfig(**TINY))


def feed(agent, lengths, seed=0):
    """Steps ``agent`` through episodes of the given lengths per sub-env (2-D obs and actions)."""
    rng = np.random.default_rng(seed)
    t = [0] * len(lengths)
    ep = [0] * len(lengths)
    for _ in range(max(sum(ls) for ls in lengths)):
        obs = rng.normal(size=(len(lengths), 2))
        act, _ = agent.adapt_action(obs)
        done = np.zeros(len(lengths), bool)
        for e, ls in enumerate(lengths):
            t[e] += 1
            if ep[e] < len(ls) and t[e] == ls[ep[e]]:
                done[e], t[e], ep[e] = True, 0, ep[e] + 1
        agent.step(Timestep(obs, act, -np.ones(len(lengths)), done, np.zeros_like(done), {}))


def test_episodes_are_cut_per_sub_env_and_padded():
    agent = MAMLMetaWorldAgent(pointnav_learner(), num_envs=2)
    agent.init()
    # env 0: episodes of 3 and 2 steps; env 1: 2, 3 and 1 steps (its 3rd episode is not used:
    # N = min(2, 3) = 2 episodes per env, H = longest used = 3).
    feed(agent, [[3, 2], [2, 3, 1]])
    episodes = agent.recorded_episodes()
    assert episodes.rewards.shape == (2, 2, 3) and episodes.observations.shape == (2, 2, 3, 2)
    np.testing.assert_array_equal(episodes.mask, [[[1, 1, 1], [1, 1, 0]],
                                                  [[1, 1, 0], [1, 1, 1]]])
    np.testing.assert_array_equal(episodes.rewards, -episodes.mask)   # reward -1 on valid steps


def test_adapt_is_the_learners_inner_step_per_sub_env():
    learner = pointnav_learner()
    agent = MAMLMetaWorldAgent(learner, num_envs=2)
    agent.init()
    theta = [p.numpy().copy() for p in agent.params]
    feed(agent, [[4, 4], [4, 4]], seed=1)
    episodes = agent.recorded_episodes()
    policy, extra = learner._split(learner._theta())
    _, expected = learner._prepare_and_adapt(learner.fmodel.tile(policy, 2), episodes, extra)
    agent.adapt()
    for got, want in zip(agent.params, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(agent.params[0][0], theta[0][0])          # it moved ...
    assert not np.allclose(agent.params[0][0], agent.params[0][1])   # ... differently per env
    agent.init()                                                      # new tasks: back to theta
    np.testing.assert_array_equal(agent.params[0], theta[0])
    # eval_action is the (adapted) mean: deterministic.
    obs = np.ones((2, 2))
    np.testing.assert_array_equal(agent.eval_action(obs), agent.eval_action(obs))


def test_bad_use_is_reported():
    learner = pointnav_learner()
    with pytest.raises(TypeError, match="must be a MAMLRLLearner"):
        MAMLMetaWorldAgent(object(), num_envs=2)
    with pytest.raises(ValueError, match="`num_envs` must be an integer >= 1"):
        MAMLMetaWorldAgent(learner, num_envs=0)
    agent = MAMLMetaWorldAgent(learner, num_envs=2)
    with pytest.raises(RuntimeError, match=r"call init\(\) before acting"):
        agent.eval_action(np.zeros((2, 2)))
    agent.init()
    with pytest.raises(ValueError, match="expected observations for 2 sub-environments"):
        agent.adapt_action(np.zeros((3, 2)))
    feed(agent, [[2], []])
    with pytest.raises(ValueError, match=r"sub-environments \[1\] have no completed episode"):
        agent.adapt()


def test_metaworlds_own_evaluation_drives_the_agent():
    tasks = MetaWorldTasks("ML1", "reach-v3", horizon=10)
    learner = MAMLRLLearner(gaussian_mlp_policy(OBS_DIM, ACT_DIM, hidden=(8,)), tasks,
                            MAMLRLConfig(**TINY))
    # meta_batch_size must divide ML1's 50 test goals: 2 sub-envs x 25 goals each.
    envs = gymnasium.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=2,
                              seed=0, max_episode_steps=10)
    agent = MAMLMetaWorldAgent(learner, num_envs=2)
    success, mean_return, per_task = metalearning_evaluation(
        agent, envs, num_evals=1, adaptation_steps=1, adaptation_episodes=2,
        evaluation_episodes=2)
    assert agent.adapt_calls == 1 and 0.0 <= success <= 1.0 and np.isfinite(mean_return)
    assert set(per_task) == {"reach-v3"}
    rate, outcomes = first_episode_success(agent, envs, num_evals=1, adaptation_steps=1,
                                           adaptation_episodes=1)
    assert len(outcomes) == 2 and set(outcomes) <= {0, 1} and rate == np.mean(outcomes)
    assert agent.adapt_calls == 2
    envs.close()
    learner.vector_env.close()
    tf.keras.backend.clear_session()
