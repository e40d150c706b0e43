"""The MuJoCo locomotion families: reward formulas from the simulator state, tasks, registration."""
import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

from metarl_tf.rollouts import collect_episodes, make_vector_env


@pytest.fixture(scope="module")
def mj():
    pytest.importorskip("mujoco")
    from metarl_tf.tasks import mujoco as module
    return module


def _actions(n, dim, seed=0):
    # Some entries outside [-1, 1], to check that the control cost uses the clipped action.
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(n, dim)).astype(np.float32)


def _cheetah_rollout(env, task, actions, seed=0):
    env.unwrapped.set_task(task)
    env.reset(seed=seed)
    base = env.unwrapped
    out = []
    for a in actions:
        x_before = float(base.data.qpos[0])
        obs, reward, terminated, truncated, info = env.step(a)
        v = (float(base.data.qpos[0]) - x_before) / base.dt
        out.append((obs, reward, terminated, truncated, info, v, np.clip(a, -1, 1)))
    return out


def test_half_cheetah_vel_reward_formula(mj):
    env = mj.HalfCheetahVelTasks().make_env()
    steps = _cheetah_rollout(env, 1.3, _actions(5, 6))
    for obs, reward, terminated, truncated, info, v, a in steps:
        ctrl = 0.05 * float(np.sum(np.square(a.astype(np.float64))))
        assert reward == pytest.approx(-abs(v - 1.3) - ctrl, abs=1e-9)
        assert info["x_velocity"] == pytest.approx(v, abs=1e-9)
        assert info["reward_forward"] == pytest.approx(-abs(v - 1.3), abs=1e-9)
        assert info["reward_ctrl"] == pytest.approx(-ctrl, abs=1e-9)
        assert info["goal_velocity"] == pytest.approx(1.3)
        assert obs.shape == (17,) and not terminated and not truncated
    assert env.unwrapped.get_task() == pytest.approx(1.3)


def test_set_task_changes_only_the_reward(mj):
    env = mj.HalfCheetahVelTasks().make_env()
    actions = _actions(4, 6, seed=1)
    slow = _cheetah_rollout(env, 0.0, actions)
    fast = _cheetah_rollout(env, 2.0, actions)
    for s, f in zip(slow, fast):
        np.testing.assert_array_equal(s[0], f[0])            # same seed + actions: same dynamics
        assert f[1] - s[1] == pytest.approx(abs(s[5] - 0.0) - abs(s[5] - 2.0), abs=1e-9)
    env.unwrapped.task = 0.5                                  # the settable property
    assert env.unwrapped.task == 0.5


def test_half_cheetah_dir_reward_formula(mj):
    env = mj.HalfCheetahDirTasks().make_env()
    actions = _actions(4, 6, seed=2)
    back = _cheetah_rollout(env, -1, actions)
    fwd = _cheetah_rollout(env, 1.0, actions)
    for b, f in zip(back, fwd):
        ctrl = 0.05 * float(np.sum(np.square(f[6].astype(np.float64))))
        assert f[1] == pytest.approx(f[5] - ctrl, abs=1e-9)
        assert b[1] == pytest.approx(-b[5] - ctrl, abs=1e-9)
        assert f[4]["direction"] == 1.0 and b[4]["direction"] == -1.0


def _ant_rollout(env, task, actions, seed=0):
    env.unwrapped.set_task(task)
    env.reset(seed=seed)
    base = env.unwrapped
    out = []
    for a in actions:
        xy_before = base.data.body("torso").xpos[:2].copy()
        obs, reward, terminated, truncated, info = env.step(a)
        v = (base.data.body("torso").xpos[:2] - xy_before) / base.dt
        contact = 5e-4 * float(np.sum(np.square(np.clip(base.data.cfrc_ext, -1, 1))))
        ctrl = 0.005 * float(np.sum(np.square(np.clip(a, -1, 1).astype(np.float64))))
        out.append((obs, reward, terminated, info, v, ctrl, contact))
    return out


@pytest.mark.parametrize("direction", [(1.0, 0.0), (-1.0, 0.0), (0.6, 0.8)])
def test_ant_dir_reward_formula(mj, direction):
    env = mj.AntDirTasks(directions="circle").make_env()
    for obs, reward, terminated, info, v, ctrl, contact in _ant_rollout(env, direction,
                                                                        _actions(5, 8)):
        forward = direction[0] * v[0] + direction[1] * v[1]
        assert reward == pytest.approx(forward - ctrl - contact + 0.05, abs=1e-9)
        assert info["reward_forward"] == pytest.approx(forward, abs=1e-9)
        assert info["reward_ctrl"] == pytest.approx(-ctrl, abs=1e-9)
        assert info["reward_contact"] == pytest.approx(-contact, abs=1e-12)
        assert info["reward_survive"] == 0.05
        np.testing.assert_allclose(info["direction"], direction, atol=1e-6)
        assert obs.shape == (105,) and not terminated


def test_ant_terminates_outside_the_healthy_range(mj):
    env = mj.AntDirTasks().make_env()
    env.unwrapped.set_task(1)                                  # shorthand for (1, 0)
    env.reset(seed=0)
    base = env.unwrapped
    qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
    qpos[2] = 1.5                                              # torso far above z = 1.0
    base.set_state(qpos, qvel)
    _, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert terminated
    assert info["reward_survive"] == 0.05                      # paid on the last step too (rllab)
    np.testing.assert_array_equal(base.get_task(), [1.0, 0.0])


def test_cheetah_never_terminates_and_truncates_at_200(mj):
    env = gymnasium.make("metarl_tf/HalfCheetahDir-v0")
    assert env.spec.max_episode_steps == 200
    env.unwrapped.set_task(1)
    env.reset(seed=0)
    a = np.ones(6, np.float32)
    for t in range(1, 201):
        _, _, terminated, truncated, _ = env.step(a)
        assert not terminated
        assert truncated == (t == 200)


def test_task_sampling(mj):
    vel = mj.HalfCheetahVelTasks()
    train, test = vel.sample(500, seed=3), vel.sample(500, seed=3, split="test")
    assert train.shape == (500,) and train.dtype == np.float32
    assert train.min() >= 0.0 and train.max() <= 2.0 and test.min() >= 0.0 and test.max() <= 2.0
    assert not np.intersect1d(train, test).size
    np.testing.assert_array_equal(train, vel.sample(500, seed=3))
    legacy = np.random.RandomState(1).uniform(0.0, 2.0, size=(40,)).astype(np.float32)
    np.testing.assert_array_equal(vel.maml_test_tasks(), legacy)

    dirs = mj.HalfCheetahDirTasks().sample(2000, seed=0)
    assert set(np.unique(dirs)) == {-1.0, 1.0} and 0.45 < np.mean(dirs > 0) < 0.55

    ant = mj.AntDirTasks().sample(2000, seed=0)
    assert ant.shape == (2000, 2) and set(np.unique(ant[:, 0])) == {-1.0, 1.0}
    assert np.all(ant[:, 1] == 0) and 0.45 < np.mean(ant[:, 0] > 0) < 0.55
    circle = mj.AntDirTasks(directions="circle").sample(2000, seed=0)
    np.testing.assert_allclose(np.linalg.norm(circle, axis=1), 1.0, atol=1e-6)
    angles = np.arctan2(circle[:, 1], circle[:, 0])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() > 400   # ~uniform


def test_registration_and_vector_set_attr(mj):
    for env_id, obs_dim, act_dim in (("metarl_tf/HalfCheetahVel-v0", 17, 6),
                                     ("metarl_tf/HalfCheetahDir-v0", 17, 6),
                                     ("metarl_tf/AntDir-v0", 105, 8)):
        env = gymnasium.make(env_id)
        assert env.spec.max_episode_steps == 200
        assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
        env.close()
    tasks = mj.HalfCheetahVelTasks().sample(3, seed=0)
    envs = make_vector_env("metarl_tf/HalfCheetahVel-v0", num_envs=3)
    episodes = collect_episodes(envs, lambda o, i: np.zeros((3, 6), np.float32), tasks,
                                episodes_per_task=1, horizon=4, seed=0)
    np.testing.assert_allclose(envs.get_attr("task"), tasks)
    assert envs.call("get_task") == tuple(float(t) for t in tasks)
    # Zero actions: r = -|v - v_goal|, so the reward is at most 0 and differs across tasks.
    assert episodes.rewards.shape == (3, 1, 4) and np.all(episodes.rewards <= 0)
    envs.close()


def test_bad_input(mj):
    with pytest.raises(ValueError, match="velocity_range"):
        mj.HalfCheetahVelTasks(velocity_range=(2.0, 0.0))
    with pytest.raises(ValueError, match="directions"):
        mj.AntDirTasks(directions="diagonal")
    with pytest.raises(ValueError, match="split"):
        mj.HalfCheetahVelTasks().sample(2, seed=0, split="val")
    with pytest.raises(ValueError, match="-1 or \\+1"):
        mj.HalfCheetahDirEnv().set_task(0.5)
    with pytest.raises(ValueError, match="unit 2-vector"):
        mj.AntDirEnv().set_task([1.0, 1.0])
    with pytest.raises(ValueError, match="finite scalar"):
        mj.HalfCheetahVelEnv().set_task(np.nan)
    with pytest.raises(TypeError, match="ctrl_cost_weight"):
        mj.HalfCheetahVelEnv(ctrl_cost_weight=0.1)
    env = mj.HalfCheetahVelTasks().make_env(task=1.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5))


def test_tasks_package_imports_without_mujoco_or_metaworld(repo_root):
    # The core install has neither: importing metarl_tf.tasks must not need them, and the optional
    # ids are still registered (by entry-point string).
    code = ("import sys; sys.modules['mujoco'] = None; sys.modules['metaworld'] = None\n"
            "import gymnasium, metarl_tf.tasks as t\n"
            "assert 'metarl_tf/HalfCheetahVel-v0' in gymnasium.registry\n"
            "assert 'metarl_tf/ML1-v0' in gymnasium.registry\n"
            "for name in ('HalfCheetahVelTasks', 'MetaWorldTasks'):\n"
            "    try:\n        getattr(t, name)\n    except ImportError as err:\n"
            "        assert 'pip install' in str(err), err\n        print('lazy-ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["lazy-ok", "lazy-ok"]
