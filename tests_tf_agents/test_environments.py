"""TaskPyEnvironment: every task family passes TF-Agents' validate_py_environment; specs, time
limits, resets and tasks behave as TF-Agents expects, alone, batched, in a ParallelPyEnvironment and in a
TFPyEnvironment."""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import (batched_py_environment, parallel_py_environment,
                                    tf_py_environment, utils)
from tf_agents.specs import array_spec
from tf_agents.system import system_multiprocessing
from tf_agents.trajectories import time_step as ts

from conftest import ROOT, core_env, core_python
from metarl_tf import tasks
from metarl_tf.integrations.tf_agents import TaskPyEnvironment, set_tasks, spec_from_space

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST


def family(name):
    """The task family of that name, with its default settings."""
    if name == "PointNav":
        fam = tasks.PointNavTasks()
    elif name == "CartPoleDir":
        fam = tasks.CartPoleDirTasks()
    elif name == "Bandits":
        fam = tasks.BernoulliBanditTasks(num_arms=5, num_pulls=10)
    elif name == "GridWorld":
        fam = tasks.GridWorldTasks()
    elif name == "MountainCarLR":
        fam = tasks.MountainCarLRTasks()
    elif name == "TabularMDP":
        fam = tasks.TabularMDPTasks()
    elif name == "HalfCheetahVel":
        fam = tasks.HalfCheetahVelTasks()
    elif name == "HalfCheetahDir":
        fam = tasks.HalfCheetahDirTasks()
    elif name == "AntDir":
        fam = tasks.AntDirTasks()
    elif name == "ML1":
        fam = tasks.MetaWorldTasks(benchmark="ML1", env_name="reach-v3")
    elif name == "ML10":
        fam = tasks.MetaWorldTasks(benchmark="ML10", env_name=None)
    return fam


# family -> (observation shape, action shape, discrete actions, episode cap for the check: the
# MuJoCo and Meta-World ones are cut to a few steps, the others run their own horizon).
FAMILIES = {
    "PointNav": ((2,), (2,), False, None),
    "CartPoleDir": ((4,), (), True, None),
    "Bandits": ((1,), (), True, None),
    "GridWorld": (None, (), True, None),
    "MountainCarLR": (None, (), True, 30),
    "TabularMDP": (None, (), True, None),
    "HalfCheetahVel": ((17,), (6,), False, 5),
    "HalfCheetahDir": ((17,), (6,), False, 5),
    "AntDir": (None, (8,), False, 5),
    "ML1": ((39,), (4,), False, 5),
    "ML10": ((39,), (4,), False, 5),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_passes_validate_py_environment(name):
    obs_shape, act_shape, discrete, cap = FAMILIES[name]
    fam = family(name)
    task = fam.sample(2, seed=0)[1]
    env = TaskPyEnvironment(fam, task=task, max_episode_steps=cap, seed=0)
    gym_env = env.gym_env
    if obs_shape is not None:
        assert env.observation_spec().shape == obs_shape
    assert env.observation_spec().shape == gym_env.observation_space.shape
    assert env.observation_spec().dtype == gym_env.observation_space.dtype
    assert env.action_spec().shape == act_shape
    if discrete:
        # Discrete(n) -> int64 scalar in [0, n - 1]
        assert env.action_spec().dtype == np.int64
        assert (env.action_spec().minimum, env.action_spec().maximum) == (
            0, gym_env.action_space.n - 1)
    else:
        np.testing.assert_array_equal(env.action_spec().minimum, gym_env.action_space.low)
        np.testing.assert_array_equal(env.action_spec().maximum, gym_env.action_space.high)
    # random actions from the spec, episodes to their end (auto-reset between them), every time
    # step checked against time_step_spec
    utils.validate_py_environment(env, episodes=2)
    # the task stayed
    got = env.get_task()
    if name == "TabularMDP":                     # (transitions, reward means), stored as float64
        for part, want in zip(got, task):
            np.testing.assert_allclose(part, want, rtol=1e-6)
    elif isinstance(task, np.ndarray):
        np.testing.assert_allclose(got, task, rtol=1e-6)
    else:
        assert got == task                       # a Meta-World task
    env.close()


def test_specs_from_gymnasium_spaces():
    import gymnasium
    spaces = gymnasium.spaces
    half_open = spec_from_space(spaces.Box(np.array([0.0, -np.inf], np.float32),
                                           np.array([1.0, 2.0], np.float32)), "o")
    assert isinstance(half_open, array_spec.BoundedArraySpec)
    np.testing.assert_array_equal(half_open.minimum, [0.0, np.finfo(np.float32).min])
    np.testing.assert_array_equal(half_open.maximum, [1.0, 2.0])
    unbounded = spec_from_space(spaces.Box(-np.inf, np.inf, (3,), np.float64), "o")
    assert type(unbounded) is array_spec.ArraySpec and unbounded.dtype == np.float64
    shifted = spec_from_space(spaces.Discrete(4, start=2), "a")     # {2, 3, 4, 5}
    assert (shifted.minimum, shifted.maximum, shifted.shape) == (2, 5, ())
    multi = spec_from_space(spaces.MultiDiscrete([3, 5]), "a")      # [0..2] x [0..4]
    np.testing.assert_array_equal(multi.maximum, [2, 4])
    nested = spec_from_space(spaces.Dict({"pos": spaces.Box(-1, 1, (2,)),
                                          "id": spaces.Discrete(3)}), "o")
    assert set(nested) == {"pos", "id"} and nested["id"].maximum == 2
    with pytest.raises(TypeError, match=r"`o` space .* has no TF-Agents spec here: expected Box"):
        spec_from_space(spaces.Text(5), "o")


def test_pointnav_time_limit_termination_and_reset_as_tf_agents_expects():
    env = TaskPyEnvironment(tasks.PointNavTasks(horizon=3), task=np.array([0.3, -0.4], np.float32))
    first = env.reset()
    assert first.step_type == FIRST and first.reward == 0.0 and first.discount == 1.0
    zero = np.zeros(2, np.float32)
    steps = [env.step(zero) for _ in range(3)]
    # standing at the origin: reward -|g| = -sqrt(0.09 + 0.16) = -0.5 each step
    np.testing.assert_allclose([s.reward for s in steps], [-0.5] * 3, rtol=1e-6)
    assert [s.step_type for s in steps] == [MID, MID, LAST]
    # the time limit is a cut (truncation): discount stays 1, not 0
    assert steps[-1].discount == 1.0
    after = env.step(np.array([0.1, 0.1], np.float32))      # auto-reset: the action is ignored
    assert after.step_type == FIRST
    np.testing.assert_array_equal(after.observation, [0.0, 0.0])
    # reaching the goal terminates: goal (0.1, 0) after one full step +0.1 in x; discount 0
    env.set_task(np.array([0.1, 0.0], np.float32))
    assert env.step(zero).step_type == FIRST               # a new task starts a new episode
    end = env.step(np.array([0.1, 0.0], np.float32))
    assert end.step_type == LAST and end.discount == 0.0
    np.testing.assert_allclose(end.reward, 0.0, atol=1e-6)


def test_bandit_episodes_are_single_pulls_with_the_task_means():
    # arm 0 always pays, arm 1 never: each pull is a FIRST -> LAST episode
    env = TaskPyEnvironment(tasks.BernoulliBanditTasks(num_arms=2), task=[1.0, 0.0], seed=0)
    env.reset()
    paid = env.step(np.int64(0))
    assert paid.step_type == LAST and paid.reward == 1.0 and paid.discount == 0.0
    assert env.step(np.int64(0)).step_type == FIRST
    assert env.step(np.int64(1)).reward == 0.0


def test_set_tasks_reaches_batched_parallel_and_tf_environments():
    goals = np.array([[0.3, -0.4], [0.6, 0.8]], np.float32)   # |g| = 0.5 and 1.0
    system_multiprocessing.enable_interactive_mode()
    constructors = [functools.partial(TaskPyEnvironment, tasks.PointNavTasks(), seed=i)
                    for i in range(2)]
    parallel = parallel_py_environment.ParallelPyEnvironment(constructors, start_serially=True)
    batched = batched_py_environment.BatchedPyEnvironment(
        [TaskPyEnvironment(tasks.PointNavTasks(), seed=i) for i in range(2)])
    try:
        for py_env in (parallel, batched):
            env = tf_py_environment.TFPyEnvironment(py_env)
            assert env.batch_size == 2
            set_tasks(env, goals)
            env.reset()
            step = env.step(tf.zeros([2, 2]))
            np.testing.assert_allclose(step.reward.numpy(), [-0.5, -1.0], rtol=1e-6)
            set_tasks(env, goals[1], same=True)                # one task for every environment
            assert np.all(env.step(tf.zeros([2, 2])).step_type.numpy() == FIRST)
            np.testing.assert_allclose(env.step(tf.zeros([2, 2])).reward.numpy(), [-1.0, -1.0],
                                       rtol=1e-6)
    finally:
        parallel.close()


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match=r"`max_episode_steps` must be an integer >= 1 or None, "
                                         r"got 0"):
        TaskPyEnvironment(tasks.PointNavTasks(), max_episode_steps=0)
    with pytest.raises(ValueError, match=r"`discount` must be a number in \[0, 1\], got 1.5"):
        TaskPyEnvironment(tasks.PointNavTasks(), discount=1.5)
    with pytest.raises(TypeError, match=r"`env` must be a task family .* got int"):
        TaskPyEnvironment(3)
    with pytest.raises(TypeError, match=r"`env` must be a TaskPyEnvironment, .* got int"):
        set_tasks(3, [0.0, 0.0])
    batch = batched_py_environment.BatchedPyEnvironment(
        [TaskPyEnvironment(tasks.PointNavTasks()) for _ in range(3)])
    with pytest.raises(ValueError, match=r"`tasks` must hold one task per environment \(3\), or "
                                         r"pass one task with same=True; got ndarray of length 2"):
        set_tasks(batch, np.zeros(2, np.float32))
    env = TaskPyEnvironment("metarl_tf/PointNav-v0")           # a registered id works too
    assert env.observation_spec().shape == (2,)


def test_import_errors_name_the_variable_and_the_extra():
    code = "import metarl_tf.integrations.tf_agents"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          stderr=subprocess.PIPE, text=True)
    assert proc.returncode != 0
    assert ("ImportError: metarl_tf.integrations.tf_agents needs TF_USE_LEGACY_KERAS=1"
            in proc.stderr)
    # the core venv has no TF-Agents: the error names the extra
    proc = subprocess.run([core_python(), "-c", code],
                          env={**core_env(), "TF_USE_LEGACY_KERAS": "1"}, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.returncode != 0
    assert "needs TF-Agents: install the extra `metarl-tf[tf-agents]`" in proc.stderr
