"""MuJoCo locomotion families of MAML-RL: HalfCheetahVel, HalfCheetahDir and AntDir.

The velocity / direction tasks of the MAML paper (Finn et al. 2017, arXiv:1703.03400, section 5.3)
with the settings of the authors' rllab environments (cbfinn/maml_rl
``rllab/envs/mujoco/half_cheetah_env_rand.py``, ``half_cheetah_env_rand_direc.py``,
``ant_env_rand_direc.py``; horizon from ``maml_examples/cluster_maml_trpo_cheetah.py`` and
``cluster_maml_trpo_ant.py``; see ``PAPERS.md`` section 2a), built on gymnasium's MuJoCo **v5**
environments (``HalfCheetah-v5``, ``Ant-v5``) by subclassing::

    HalfCheetahVel   task v_goal ~ U[0, 2]
                     r_t = -|v_x - v_goal| - 0.05 * ||a||^2                 never done
    HalfCheetahDir   task d in {-1, +1}, 50/50 (MR: u ~ U[0, 2], d = -1 if u < 1 else +1)
                     r_t = d * v_x - 0.05 * ||a||^2                          never done
    AntDir           task d: a unit vector in the plane, either (+-1, 0) 50/50 (MR: u ~ U[0, 3],
                     -1 if u < 1.5) or, with ``directions="circle"``, at an angle ~ U[0, 2 pi)
                     r_t = d . v_xy - 0.005 * ||a||^2 - 0.0005 * ||clip(cfrc_ext, -1, 1)||^2 + 0.05
                     terminated when the state is not finite or torso z is outside [0.2, 1.0]

    horizon 200 steps (the ``TimeLimit`` of the registered ids)

The control coefficient 0.05 is the rllab code's ``0.5 * 0.1`` (PAPERS.md section 2a:
"0.05 * ||a||^2 (ctrl 0.1 * 0.5)"); the ant's is ``0.5 * 1e-2 * ||a / s||^2`` with ``s`` = half
the action range, which is 1 for gymnasium's ant (ctrlrange [-1, 1]), and its contact cost is
``0.5 * 1e-3``. The survival bonus 0.05 is paid on every step, the terminating one included (as
rllab; gymnasium's own Ant pays its ``healthy_reward`` only while healthy). In the
direction-on-the-circle mode the forward term generalizes ``d * v_x`` to the projection
``d . v_xy``; with ``d = (+-1, 0)`` the two agree.

Where this follows gymnasium v5 rather than rllab (and why):

* **Velocity** is v5's finite difference of the torso position over ``dt`` (``info["x_velocity"]``),
  as in pytorch-maml-rl and ProMP; rllab used the torso centre-of-mass velocity.
* **Observations** are v5's defaults: HalfCheetah ``qpos[1:], qvel`` (17 floats); Ant ``qpos[2:],
  qvel, clip(cfrc_ext[1:], -1, 1)`` (105 floats). rllab also appended the torso COM (and, for the
  ant, the full qpos and the torso orientation matrix); PAPERS.md does not require that layout, and
  the tasks are fully determined by velocities, which the observation contains.
* **Models** are gymnasium's ``half_cheetah.xml`` / ``ant.xml`` (frame skip 5, dt 0.05), not
  rllab's.
* **Actions** are clipped to the action space ``[-1, 1]^k`` before simulating and before the control
  cost, as rllab's ``normalize`` wrapper did (gymnasium's v5 would charge the cost of the unclipped
  action). The episode stores the policy's unclipped action.

Horizon: MR uses 200 steps (the default here); pytorch-maml-rl, ProMP, garage and learn2learn use
100 (PAPERS.md section 8). Use ``HalfCheetahVelTasks(horizon=100).make_env()`` or
``gymnasium.make(ENV_ID, max_episode_steps=100)`` for the latter.

Task splits: the MAML-RL benchmark has no separate test distribution; ``sample(n, seed, "test")``
draws from the same distribution on a separate random stream (never the train draws), and
``maml_test_tasks()`` reproduces the original meta-test tasks (40 velocities drawn with NumPy
seed 1; the two directions).

Every environment has ``set_task`` / ``get_task`` and a settable ``task`` property (so a vector
env's ``set_attr("task", ...)`` reaches it through gymnasium's wrappers); ``set_task`` takes effect
on the next ``step``. ``info`` carries the reward components (``reward_forward``,
``reward_ctrl``, plus ``reward_contact`` and ``reward_survive`` for the ant) and the task. If no
task is set, the first ``reset`` draws one from the family with the env's ``np_random``. This
module needs MuJoCo (``pip install "gymnasium[mujoco]"``); ``metarl_tf.tasks`` registers the ids
without importing it.

Example::

    tasks = HalfCheetahVelTasks()
    velocities = tasks.sample(40, seed=0)                     # [40] float32, train split
    env = gymnasium.make("metarl_tf/HalfCheetahVel-v0")       # TimeLimit(200)
    env.unwrapped.set_task(velocities[0])
    obs, info = env.reset(seed=0)
"""
from __future__ import annotations

import dataclasses
import math

import gymnasium
import numpy as np
from gymnasium import utils

try:
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
except (ImportError, gymnasium.error.DependencyNotInstalled) as _err:  # the latter: no ImportError
    raise ImportError("metarl_tf.tasks.mujoco needs MuJoCo: pip install 'metarl-tf[mujoco]' "
                      f"(or 'gymnasium[mujoco]') [{type(_err).__name__}: {_err}]") from _err

from metarl_tf._checks import check_float, check_int, check_range
from metarl_tf.tasks.splits import split_rng as _rng
from metarl_tf.tasks._task_env import TaskAttribute

HALF_CHEETAH_VEL_ID = "metarl_tf/HalfCheetahVel-v0"
HALF_CHEETAH_DIR_ID = "metarl_tf/HalfCheetahDir-v0"
ANT_DIR_ID = "metarl_tf/AntDir-v0"
ANT_DIRECTIONS = ("forward_backward", "circle")



def _check_num_tasks(num_tasks) -> int:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
    return int(num_tasks)


def _check_nonneg(config, name: str) -> None:
    check_float(config, name, low=0.0, low_inclusive=True)


# -- task distributions -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HalfCheetahVelTasks:
    """HalfCheetahVel: one task = one target forward velocity ``v_goal ~ U[velocity_range]``.

    Defaults are cbfinn/maml_rl's (``half_cheetah_env_rand.py``): U[0, 2], control cost
    ``0.05 * ||a||^2``, 200 steps. ProMP draws from U[0, 3] (PAPERS.md section 8).
    """

    velocity_range: tuple[float, float] = (0.0, 2.0)  # v_goal ~ U[low, high].
    ctrl_cost_weight: float = 0.05  # r_ctrl = -ctrl_cost_weight * ||clip(a)||^2.
    horizon: int = 200  # Episode length (the TimeLimit).
    obs_dim = 17
    act_dim = 6

    def __post_init__(self):
        check_range(self, "velocity_range")
        _check_nonneg(self, "ctrl_cost_weight")
        check_int(self, "horizon")

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """``[num_tasks]`` float32 target velocities; the test split is a separate random stream."""
        n = _check_num_tasks(num_tasks)
        return _rng(seed, split).uniform(*self.velocity_range, size=n).astype(np.float32)

    def maml_test_tasks(self, num_tasks: int = 40) -> np.ndarray:
        """The meta-test velocities of cbfinn/maml_rl ``test_maml_cheetah.py``.

        ``np.random.seed(1); np.random.uniform(0.0, 2.0, size=(40,))`` (legacy global generator).
        """
        n = _check_num_tasks(num_tasks)
        return np.random.RandomState(1).uniform(*self.velocity_range, size=n).astype(np.float32)

    def make_env(self, task=None, **kwargs) -> gymnasium.Env:
        """A ``HalfCheetahVelEnv`` with these settings inside a ``TimeLimit(horizon)``."""
        env = HalfCheetahVelEnv(task=task, tasks=self, **kwargs)
        return gymnasium.wrappers.TimeLimit(env, max_episode_steps=self.horizon)


@dataclasses.dataclass(frozen=True)
class HalfCheetahDirTasks:
    """HalfCheetahDir: one task = a direction ``d`` in {-1, +1} (backward / forward), 50/50.

    Defaults are cbfinn/maml_rl's (``half_cheetah_env_rand_direc.py``): control cost
    ``0.05 * ||a||^2``, 200 steps.
    """

    ctrl_cost_weight: float = 0.05  # r_ctrl = -ctrl_cost_weight * ||clip(a)||^2.
    horizon: int = 200  # Episode length (the TimeLimit).
    obs_dim = 17
    act_dim = 6

    def __post_init__(self):
        _check_nonneg(self, "ctrl_cost_weight")
        check_int(self, "horizon")

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """``[num_tasks]`` float32 directions in {-1, +1}, as MR: ``-1 if U[0, 2] < 1 else +1``."""
        n = _check_num_tasks(num_tasks)
        u = _rng(seed, split).uniform(0.0, 2.0, size=n)
        return np.where(u < 1.0, -1.0, 1.0).astype(np.float32)

    def maml_test_tasks(self) -> np.ndarray:
        """The two directions, backward then forward (the MAML meta-test uses both extremes)."""
        return np.array([-1.0, 1.0], np.float32)

    def make_env(self, task=None, **kwargs) -> gymnasium.Env:
        """A ``HalfCheetahDirEnv`` with these settings inside a ``TimeLimit(horizon)``."""
        env = HalfCheetahDirEnv(task=task, tasks=self, **kwargs)
        return gymnasium.wrappers.TimeLimit(env, max_episode_steps=self.horizon)


@dataclasses.dataclass(frozen=True)
class AntDirTasks:
    """AntDir: one task = a unit direction ``d`` (float32 ``[2]``) in which the ant should run.

    ``directions="forward_backward"`` (the MAML paper's ant, cbfinn/maml_rl
    ``ant_env_rand_direc.py``) draws ``d = (+-1, 0)`` 50/50; ``directions="circle"`` draws the angle
    ``~ U[0, 2 pi)``. Reward weights and the healthy range are MR's (PAPERS.md section 2a); ProMP's
    ant uses ctrl 0.5, survive 1.0 and z in [0, 1] instead (PAPERS.md section 8).
    """

    directions: str = "forward_backward"  # "forward_backward" (+-x) or "circle".
    ctrl_cost_weight: float = 0.005  # r_ctrl = -w * ||clip(a) / s||^2, s = 1 for gymnasium's ant.
    contact_cost_weight: float = 5e-4  # r_contact = -w * ||clip(cfrc_ext, -1, 1)||^2.
    survive_reward: float = 0.05  # Paid on every step.
    healthy_z_range: tuple[float, float] = (0.2, 1.0)  # Terminated when torso z leaves this range.
    horizon: int = 200  # Episode length (the TimeLimit).
    obs_dim = 105
    act_dim = 8

    def __post_init__(self):
        if self.directions not in ANT_DIRECTIONS:
            raise ValueError(f"`directions` must be one of {ANT_DIRECTIONS}, got "
                             f"{self.directions!r}")
        _check_nonneg(self, "ctrl_cost_weight")
        _check_nonneg(self, "contact_cost_weight")
        check_float(self, "survive_reward", low=-math.inf)
        check_range(self, "healthy_z_range")
        check_int(self, "horizon")

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """``[num_tasks, 2]`` float32 unit directions; the test split is its own random stream."""
        n = _check_num_tasks(num_tasks)
        return self._draw(_rng(seed, split), n)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.directions == "forward_backward":
            u = rng.uniform(0.0, 3.0, size=n)                     # MR: -1 if u < 1.5 else +1
            return np.stack([np.where(u < 1.5, -1.0, 1.0), np.zeros(n)], -1).astype(np.float32)
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        return np.stack([np.cos(angle), np.sin(angle)], -1).astype(np.float32)

    def maml_test_tasks(self) -> np.ndarray:
        """Backward and forward, ``[[-1, 0], [1, 0]]`` (forward_backward mode only)."""
        if self.directions != "forward_backward":
            raise ValueError("the MAML meta-test tasks exist for directions='forward_backward' "
                             "only; use sample(n, seed, split='test') for directions on the circle")
        return np.array([[-1.0, 0.0], [1.0, 0.0]], np.float32)

    def make_env(self, task=None, **kwargs) -> gymnasium.Env:
        """An ``AntDirEnv`` with these settings inside a ``TimeLimit(horizon)``."""
        env = AntDirEnv(task=task, tasks=self, **kwargs)
        return gymnasium.wrappers.TimeLimit(env, max_episode_steps=self.horizon)


# -- task values ---------------------------------------------------------------------------------
def _as_velocity(task) -> float:
    value = np.asarray(task, np.float64)
    if value.size != 1 or not np.isfinite(value).all():
        raise ValueError(f"a HalfCheetahVel task must be a finite scalar target velocity, got "
                         f"{task!r}")
    return float(value.reshape(()))


def _as_sign(task) -> float:
    value = np.asarray(task, np.float64)
    if value.size != 1 or float(value.reshape(())) not in (-1.0, 1.0):
        raise ValueError(f"a HalfCheetahDir task must be a direction -1 or +1, got {task!r}")
    return float(value.reshape(()))


def _as_direction(task) -> np.ndarray:
    value = np.asarray(task, np.float64)
    if value.size == 1 and float(value.reshape(())) in (-1.0, 1.0):  # shorthand for (+-1, 0)
        return np.array([float(value.reshape(())), 0.0])
    if value.shape != (2,) or not np.isfinite(value).all() or abs(np.linalg.norm(value) - 1) > 1e-4:
        raise ValueError(f"an AntDir task must be a unit 2-vector direction (or -1 / +1 for "
                         f"(-1, 0) / (1, 0)), got {task!r}")
    return value / np.linalg.norm(value)


def _action_bounds(space: gymnasium.spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    return space.low.astype(np.float64), space.high.astype(np.float64)


def _clipped_action(action, bounds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The action as float64, clipped to ``bounds``; rejects a wrong shape or NaN/inf."""
    low, high = bounds
    action = np.asarray(action, np.float64)
    if action.shape != low.shape:
        raise ValueError(f"`action` must have shape {low.shape}, got {action.shape}")
    if not np.isfinite(action).all():
        raise ValueError(f"`action` must be finite, got {action}")
    return np.minimum(np.maximum(action, low), high)    # np.clip is slower on tiny arrays


# -- environments --------------------------------------------------------------------------------
class _HalfCheetahTaskEnv(TaskAttribute, HalfCheetahEnv):
    """HalfCheetah-v5 with a task-dependent forward reward; subclasses define ``_forward``."""

    _tasks_type: type = object
    _name = ""

    def __init__(self, task=None, tasks=None, **kwargs):
        tasks = self._tasks_type() if tasks is None else tasks
        if not isinstance(tasks, self._tasks_type):
            raise TypeError(f"`tasks` must be a {self._tasks_type.__name__}, got "
                            f"{type(tasks).__name__}")
        for name in ("ctrl_cost_weight", "forward_reward_weight"):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} takes `{name}` from its tasks "
                                f"({self._tasks_type.__name__}), not as a keyword argument")
        self.tasks = tasks
        self._task = None if task is None else self._convert(task)
        super().__init__(ctrl_cost_weight=tasks.ctrl_cost_weight, **kwargs)
        utils.EzPickle.__init__(self, task, tasks, **kwargs)
        self._bounds = _action_bounds(self.action_space)

    # -- the task protocol ---------------------------------------------------------------------
    def set_task(self, task) -> None:
        """Sets the task; the reward of the next ``step`` uses it."""
        self._task = self._convert(task)

    def get_task(self):
        return self._task

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._task is None:
            self._task = self._default_task()
        info[self._info_key] = self._task
        return obs, info

    def step(self, action):
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__}.step called before reset or set_task")
        obs, reward, terminated, truncated, info = super().step(
            _clipped_action(action, self._bounds))
        info[self._info_key] = self._task
        return obs, reward, terminated, truncated, info

    def _get_rew(self, x_velocity: float, action):
        forward = self._forward(float(x_velocity))
        ctrl = self._ctrl_cost_weight * float(np.dot(action, action))
        return forward - ctrl, {"reward_forward": forward, "reward_ctrl": -ctrl}


class HalfCheetahVelEnv(_HalfCheetahTaskEnv):
    """HalfCheetah-v5 rewarded for running at a target velocity (the task, a float).

    Args:
      task: the target velocity; ``None`` draws one from ``tasks.velocity_range`` at the first
        reset.
      tasks: the family settings (default ``HalfCheetahVelTasks()``).
      **kwargs: forwarded to gymnasium's ``HalfCheetahEnv`` (e.g. ``reset_noise_scale``,
        ``render_mode``), except the reward weights, which come from ``tasks``.

    ``r = -|v_x - v_goal| - ctrl_cost_weight * ||clip(a)||^2``; ``info`` has ``x_velocity``,
    ``reward_forward``, ``reward_ctrl`` and ``goal_velocity``. Never terminates.
    """

    _tasks_type = HalfCheetahVelTasks
    _info_key = "goal_velocity"

    @staticmethod
    def _convert(task):
        return _as_velocity(task)

    def _default_task(self):
        return float(self.np_random.uniform(*self.tasks.velocity_range))

    def _forward(self, x_velocity: float) -> float:
        return -abs(x_velocity - self._task)


class HalfCheetahDirEnv(_HalfCheetahTaskEnv):
    """HalfCheetah-v5 rewarded for running backward (task -1) or forward (task +1).

    Args:
      task: the direction ``-1`` or ``+1``; ``None`` draws one 50/50 at the first reset.
      tasks: the family settings (default ``HalfCheetahDirTasks()``).
      **kwargs: forwarded to gymnasium's ``HalfCheetahEnv``, except the reward weights.

    ``r = d * v_x - ctrl_cost_weight * ||clip(a)||^2``; ``info`` has ``x_velocity``,
    ``reward_forward``, ``reward_ctrl`` and ``direction``. Never terminates.
    """

    _tasks_type = HalfCheetahDirTasks
    _info_key = "direction"

    @staticmethod
    def _convert(task):
        return _as_sign(task)

    def _default_task(self):
        return -1.0 if self.np_random.uniform(0.0, 2.0) < 1.0 else 1.0

    def _forward(self, x_velocity: float) -> float:
        return self._task * x_velocity


class AntDirEnv(TaskAttribute, AntEnv):
    """Ant-v5 rewarded for running in a direction (the task, a unit 2-vector).

    Args:
      task: the direction (a unit 2-vector, or ``-1`` / ``+1`` for ``(-1, 0)`` / ``(1, 0)``);
        ``None`` draws one from ``tasks`` at the first reset.
      tasks: the family settings (default ``AntDirTasks()``, forward/backward).
      **kwargs: forwarded to gymnasium's ``AntEnv`` (e.g. ``reset_noise_scale``), except the reward
        weights and the healthy range, which come from ``tasks``.

    ``r = d . v_xy - ctrl * ||clip(a)||^2 - contact * ||clip(cfrc_ext, -1, 1)||^2 + survive``;
    terminated when the state is non-finite or the torso height leaves ``healthy_z_range``.
    ``info`` has v5's keys (``x_velocity``, ``y_velocity``, ``reward_forward``, ``reward_ctrl``,
    ``reward_contact``, ``reward_survive``, positions) and ``direction``.
    """

    _OWN = ("forward_reward_weight", "ctrl_cost_weight", "contact_cost_weight", "healthy_reward",
            "healthy_z_range", "terminate_when_unhealthy", "contact_force_range")

    def __init__(self, task=None, tasks: AntDirTasks | None = None, **kwargs):
        tasks = AntDirTasks() if tasks is None else tasks
        if not isinstance(tasks, AntDirTasks):
            raise TypeError(f"`tasks` must be an AntDirTasks, got {type(tasks).__name__}")
        for name in self._OWN:
            if name in kwargs:
                raise TypeError(f"AntDirEnv takes `{name}` from its tasks (AntDirTasks), not as a "
                                "keyword argument")
        self.tasks = tasks
        self._task = None if task is None else _as_direction(task)
        super().__init__(ctrl_cost_weight=tasks.ctrl_cost_weight,
                         contact_cost_weight=tasks.contact_cost_weight,
                         healthy_reward=tasks.survive_reward,
                         healthy_z_range=tuple(tasks.healthy_z_range),
                         terminate_when_unhealthy=True, contact_force_range=(-1.0, 1.0), **kwargs)
        utils.EzPickle.__init__(self, task, tasks, **kwargs)
        self._bounds = _action_bounds(self.action_space)

    # -- the task protocol ---------------------------------------------------------------------
    def set_task(self, task) -> None:
        """Sets the direction; the reward of the next ``step`` uses it."""
        self._task = _as_direction(task)

    def get_task(self) -> np.ndarray | None:
        return None if self._task is None else self._task.astype(np.float32)

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._task is None:
            self._task = self.tasks._draw(self.np_random, 1)[0].astype(np.float64)
        info["direction"] = self.get_task()
        return obs, info

    def step(self, action):
        if self._task is None:
            raise RuntimeError("AntDirEnv.step called before reset or set_task")
        action = _clipped_action(action, self._bounds)
        xy_before = self.data.body(self._main_body).xpos[:2].copy()
        self.do_simulation(action, self.frame_skip)
        xy_after = self.data.body(self._main_body).xpos[:2].copy()
        x_velocity, y_velocity = (xy_after - xy_before) / self.dt
        observation = self._get_obs()

        forward = float(self._task[0] * x_velocity + self._task[1] * y_velocity)
        ctrl = self._ctrl_cost_weight * float(np.dot(action, action))
        contact = float(self.contact_cost)
        survive = float(self._healthy_reward)              # every step, as rllab (not v5's)
        reward = forward - ctrl - contact + survive
        terminated = not self.is_healthy
        info = {
            "x_position": self.data.qpos[0],
            "y_position": self.data.qpos[1],
            "distance_from_origin": np.linalg.norm(self.data.qpos[0:2], ord=2),
            "x_velocity": x_velocity,
            "y_velocity": y_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl,
            "reward_contact": -contact,
            "reward_survive": survive,
            "direction": self.get_task(),
        }
        if self.render_mode == "human":
            self.render()
        return observation, reward, terminated, False, info
