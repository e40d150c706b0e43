"""Meta-World ML1 / ML10: train and test kept apart, the env wrapper, registration, the sampler."""
import gymnasium
import numpy as np
import pytest

metaworld = pytest.importorskip("metaworld")

from metarl_tf.rollouts import collect_episodes, make_vector_env  # noqa: E402
from metarl_tf.tasks.metaworld import MetaWorldEnv, MetaWorldTasks, task_goal  # noqa: E402


def _keys(tasks):
    return {(name, tuple(vec)) for name, vec in map(task_goal, tasks)}


@pytest.fixture(scope="module")
def ml1():
    return MetaWorldTasks("ML1", "reach-v3", benchmark_seed=0)          # real: 50 goals per split (~5 s)


@pytest.fixture(scope="module")
def ml10():
    # Meta-World's own goal count knob kept small: the full ML10 build takes 15-35 s on 2 cores.
    return MetaWorldTasks("ML10", None, benchmark_seed=0, num_goals=2)


def test_ml1_train_and_test_goals_are_disjoint(ml1):
    train, test = ml1.tasks("train"), ml1.tasks("test")
    assert len(train) == len(test) == 50
    assert len(_keys(train)) == len(_keys(test)) == 50
    assert not _keys(train) & _keys(test)
    assert _keys(ml1.sample(60, seed=1)) <= _keys(train)
    assert _keys(ml1.sample(60, seed=1, split="test")) <= _keys(test)
    assert len(_keys(ml1.sample(50, seed=2))) == 50            # without replacement first
    assert ml1.env_names("train") == ml1.env_names("test") == ["reach-v3"]


def test_ml1_test_tasks_match_metaworlds_evaluation_envs(ml1):
    # The official evaluator (gym.make_vec("Meta-World/ML1-test", seed=0)) uses the same test goals,
    # so a learner trained on MetaWorldTasks(seed=0).tasks("train") never sees them.
    envs = gymnasium.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=1, seed=0)
    try:
        official = envs.get_attr("tasks")[0]
    finally:
        envs.close()
    assert _keys(official) == _keys(ml1.tasks("test"))


def test_ml10_train_and_test_are_disjoint(ml10):
    train_names, test_names = ml10.env_names("train"), ml10.env_names("test")
    assert len(train_names) == 10 and len(test_names) == 5
    assert not set(train_names) & set(test_names)
    assert {t.env_name for t in ml10.tasks("train")} == set(train_names)
    assert {t.env_name for t in ml10.tasks("test")} == set(test_names)
    assert len(ml10.tasks("train")) == 10 * 2 and len(ml10.tasks("test")) == 5 * 2
    batch = ml10.sample(20, seed=0)                            # stratified: each class twice
    assert sorted(t.env_name for t in batch) == sorted(train_names * 2)
    assert {t.env_name for t in ml10.sample(7, seed=0, split="test")} <= set(test_names)
    assert metaworld._N_GOALS == 50                            # the knob is restored


def test_reach_steps_like_metaworld(ml1):
    task = ml1.tasks("train")[3]
    env = gymnasium.make("metarl_tf/ML1-v0", env_name="reach-v3")
    assert env.spec.max_episode_steps == 500
    env.unwrapped.set_task(task)
    obs, _ = env.reset(seed=0)
    reference = ml1.classes("train")["reach-v3"]()             # the classic API, driven directly
    reference.set_task(task)
    ref_obs, _ = reference.reset()
    np.testing.assert_array_equal(obs, ref_obs)
    assert obs.shape == (39,) and np.all(obs[36:] == 0)        # goal hidden (ML)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 4)).astype(np.float32)
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        ref_obs, ref_reward, _, _, ref_info = reference.step(a)
        np.testing.assert_array_equal(obs, ref_obs)
        assert reward == ref_reward and np.isfinite(reward)
        assert info["success"] == float(ref_info["success"]) and not terminated and not truncated
    assert env.unwrapped.task is task
    env.close()


def test_success_in_info_and_terminate_on_success(ml1):
    # The goal is hidden from ML observations, so Meta-World's scripted policies (which read it
    # from obs[36:39]) cannot be used: a proportional controller on the simulator's target does.
    env = ml1.make_env(task=ml1.tasks("test")[0], terminate_on_success=True)
    obs, _ = env.reset(seed=0)
    goal = env.unwrapped._env._target_pos.copy()
    for step in range(1, 201):  # noqa: B007 (read after the loop)
        action = np.append(np.clip(10.0 * (goal - obs[:3]), -1, 1), 0.0).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated:
            break
    assert terminated and info["success"] == 1.0 and step < 200


def test_horizon_is_max_path_length(ml1):
    env = ml1.make_env(task=ml1.tasks("train")[0])
    env.reset(seed=0)
    zero = np.zeros(4, np.float32)
    for t in range(1, 501):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated and truncated == (t == 500)


def test_one_env_serves_every_ml10_class(ml10):
    tasks = ml10.sample(3, seed=0) + ml10.sample(2, seed=0, split="test")
    env = gymnasium.make("metarl_tf/ML10-v0", num_goals=2)
    for task in tasks:
        env.unwrapped.set_task(task)
        obs, _ = env.reset()
        obs, reward, *_ = env.step(np.zeros(4, np.float32))
        assert obs.shape == (39,) and np.isfinite(reward)
        classes = {**ml10.classes("train"), **ml10.classes("test")}
        assert type(env.unwrapped._env) is classes[task.env_name]
    env.close()


def test_collect_episodes_drives_it(ml1):
    tasks = ml1.sample(2, seed=0, split="test")
    envs = make_vector_env(ml1.make_env, num_envs=2)
    episodes = collect_episodes(envs, lambda o, i: np.zeros((2, 4), np.float32), tasks,
                                episodes_per_task=2, horizon=5, seed=0)
    assert episodes.observations.shape == (2, 2, 5, 39)
    assert np.all(episodes.mask == 1) and np.all(np.isfinite(episodes.rewards))
    assert [t.env_name for t in envs.get_attr("task")] == ["reach-v3"] * 2
    # Zero actions from the same start: the two goals give different rewards.
    assert not np.allclose(episodes.rewards[0], episodes.rewards[1])
    envs.close()


def test_bad_input(ml1, ml10):
    with pytest.raises(ValueError, match="valid names: .*reach-v3"):
        MetaWorldTasks("ML1", "reach-v9")
    with pytest.raises(ValueError, match="`benchmark` must be one of \\('ML1', 'ML10', 'ML45'\\)"):
        MetaWorldTasks("ML25", None)
    with pytest.raises(ValueError, match="env_name"):
        MetaWorldTasks("ML10", "reach-v3")
    with pytest.raises(ValueError, match="horizon"):
        MetaWorldTasks(horizon=501)
    env = MetaWorldEnv("reach-v3")
    with pytest.raises(TypeError, match="metaworld.types.Task"):
        env.set_task([0.1, 0.8, 0.2])
    with pytest.raises(ValueError, match="valid environments: reach-v3"):
        env.set_task(ml10.tasks("train")[2])                   # push-v3 is not ML1 reach
    env.set_task(ml1.tasks("train")[0])
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(4))
    env.reset()
    with pytest.raises(ValueError, match="finite vector of shape"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
