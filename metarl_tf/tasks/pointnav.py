"""2D point navigation to a random goal: the simplest MAML-RL family.

The point environment of the MAML paper (Finn et al. 2017, arXiv:1703.03400, section 5.3), with the
settings of the authors' ``PointEnvRandGoal`` (cbfinn/maml_rl ``maml_examples/point_env_randgoal.py``,
horizon from ``maml_trpo_point.py``; see ``PAPERS.md`` section 2a). A point starts at the origin and
moves by a velocity command towards a goal it does not observe::

    goal g ~ U[-0.5, 0.5]^2            (one task = one goal)
    s_0    = (0, 0)                     (the observation is the position only)
    s_t+1  = s_t + clip(a_t, -0.1, 0.1)
    r_t    = -|| s_t+1 - g ||_2         (plain distance, measured AFTER the move)
    done   = |s_t+1 - g|_x < 0.01 and |s_t+1 - g|_y < 0.01,    horizon 100 steps

The original wraps the environment in rllab's ``normalize``, which rescales a policy action in
[-1, 1] to the action bounds; here the action *is* the velocity and is clipped, as in
tristandeleu/pytorch-maml-rl and learn2learn's ``Particles2D``.

Two implementations with the same dynamics, reward and termination:

* ``PointNavEnv``, a ``gymnasium.Env`` with ``set_task`` / ``get_task`` (and a ``task`` attribute, so
  a vector env's ``set_attr("task", goals)`` gives each sub-env its goal), registered as
  ``metarl_tf/PointNav-v0`` when ``metarl_tf.tasks`` is imported;
* ``PointNavTF``, pure batched TensorFlow, so that rollouts (``metarl_tf.rollouts.tf_rollout``) and a
  whole MAML-RL iteration can run inside one compiled function.

Example::

    tasks = PointNavTasks()
    goals = tasks.sample(40, seed=0)                       # [40, 2] float32, train split
    env = gymnasium.make("metarl_tf/PointNav-v0")          # TimeLimit(100)
    env.unwrapped.set_task(goals[0])
    obs, info = env.reset(seed=0)
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import gymnasium
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_float, check_int, check_range
from metarl_tf.tasks._task_env import TaskAttribute
from metarl_tf.tasks.splits import split_rng, split_seed_tf

ENV_ID = "metarl_tf/PointNav-v0"


@dataclasses.dataclass(frozen=True)
class PointNavTasks:
    """The PointNav task family: a distribution over goals plus the shared dynamics settings.

    Train and test goals come from the same distribution (as in the MAML paper) but from separate
    random streams: ``sample(n, seed, "test")`` never replays the goals of ``sample(n, seed, "train")``.
    """

    goal_range: tuple[float, float] = (-0.5, 0.5)  # Each goal coordinate ~ U[low, high].
    max_action: float = 0.1  # Velocity commands are clipped to [-max_action, max_action]^2.
    goal_tolerance: float = 0.01  # Done when both |dx| and |dy| are below this.
    horizon: int = 100  # Episode length (the TimeLimit of the gymnasium env).
    obs_dim = 2
    act_dim = 2

    def __post_init__(self):
        check_range(self, "goal_range")
        check_float(self, "max_action")
        check_float(self, "goal_tolerance")
        check_int(self, "horizon")

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """Draws ``[num_tasks, 2]`` float32 goals with NumPy (for gymnasium environments)."""
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
        rng = split_rng(seed, split)
        return rng.uniform(*self.goal_range, size=(num_tasks, 2)).astype(np.float32)

    def sample_tf(self, seed, num_tasks: int, split: str = "train") -> tf.Tensor:
        """Draws ``[num_tasks, 2]`` goals in TensorFlow from a stateless ``seed`` (shape ``[2]``).

        Pure TensorFlow (Philox), so it can run inside a compiled meta-iteration; the stream differs
        from ``sample``'s NumPy one.
        """
        seed = split_seed_tf(seed, split)
        return tf.random.stateless_uniform([num_tasks, 2], seed, *self.goal_range, alg="philox")

    def maml_test_goals(self, num_tasks: int = 40) -> np.ndarray:
        """The meta-test goals of cbfinn/maml_rl ``test_maml_point.py``: NumPy seed 1, U[-0.5, 0.5]^2.

        Reproduces ``np.random.seed(1); np.random.uniform(-0.5, 0.5, size=(40, 2))`` (legacy global
        generator) for comparison with the original evaluation.
        """
        return np.random.RandomState(1).uniform(*self.goal_range, size=(num_tasks, 2)).astype(
            np.float32)

    def make_env(self, goal=None) -> gymnasium.Env:
        """A ``PointNavEnv`` with this family's settings inside a ``TimeLimit(horizon)``."""
        env = PointNavEnv(goal=goal, tasks=self)
        return gymnasium.wrappers.TimeLimit(env, max_episode_steps=self.horizon)

    def tf_env(self) -> "PointNavTF":
        """The batched TensorFlow environment with this family's dynamics."""
        return PointNavTF(max_action=self.max_action, goal_tolerance=self.goal_tolerance)




class PointNavEnv(TaskAttribute, gymnasium.Env):
    """Gymnasium PointNav: one environment, one goal at a time.

    Args:
      goal: the task (a 2-vector); ``None`` draws one from ``tasks.goal_range`` at the first reset
        (with the env's ``np_random``) and keeps it until ``set_task``, like the original.
      tasks: the family settings (default ``PointNavTasks()``).

    The observation is the position (float32 ``[2]``); ``info`` carries the goal and the distance.
    Episodes never truncate by themselves: ``gymnasium.make`` and ``PointNavTasks.make_env`` add the
    ``TimeLimit``.
    """

    metadata = {"render_modes": []}

    def __init__(self, goal=None, tasks: PointNavTasks | None = None):
        self.tasks = PointNavTasks() if tasks is None else tasks
        if not isinstance(self.tasks, PointNavTasks):
            raise TypeError(f"`tasks` must be a PointNavTasks, got {type(self.tasks).__name__}")
        m = np.float32(self.tasks.max_action)
        self.action_space = gymnasium.spaces.Box(-m, m, shape=(2,), dtype=np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self._goal = None if goal is None else _as_goal(goal)
        self._position = np.zeros(2, np.float32)

    # -- the task protocol ---------------------------------------------------------------------
    def set_task(self, task) -> None:
        """Sets the goal (a 2-vector); takes effect from the next ``reset``."""
        self._goal = _as_goal(task)

    def get_task(self) -> np.ndarray | None:
        return None if self._goal is None else self._goal.copy()

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._goal is None:
            self._goal = self.np_random.uniform(*self.tasks.goal_range, size=2).astype(np.float32)
        self._position = np.zeros(2, np.float32)
        return self._position.copy(), {"goal": self._goal.copy()}

    def step(self, action):
        if self._goal is None:
            raise RuntimeError("PointNavEnv.step called before reset")
        action = np.asarray(action, np.float32)
        if action.shape != (2,):
            raise ValueError(f"`action` must have shape (2,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"`action` must be finite, got {action}")
        m = np.float32(self.tasks.max_action)
        self._position = (self._position + np.clip(action, -m, m)).astype(np.float32)
        delta = self._position - self._goal
        distance = np.sqrt(delta[0] * delta[0] + delta[1] * delta[1])  # float32, as PointNavTF
        tol = np.float32(self.tasks.goal_tolerance)
        terminated = bool(abs(delta[0]) < tol and abs(delta[1]) < tol)
        info = {"goal": self._goal.copy(), "distance": float(distance)}
        return self._position.copy(), float(-distance), terminated, False, info


def _as_goal(goal) -> np.ndarray:
    goal = np.asarray(goal, dtype=np.float32)
    if goal.shape != (2,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"a PointNav task must be a finite 2-vector goal, got {goal!r}")
    return goal


class PointNavState(NamedTuple):
    """State of a batch of PointNav environments.

    Attributes:
      position: ``[..., 2]`` current positions (also the observations).
      goal: ``[..., 2]`` each environment's goal.
    """

    position: tf.Tensor
    goal: tf.Tensor


@dataclasses.dataclass(frozen=True)
class PointNavTF:
    """PointNav as pure, batched TensorFlow functions (any leading batch shape, e.g. ``[T, N]``).

    No state is held: ``reset`` and ``step`` map tensors to tensors, so a rollout of any number of
    steps for a whole meta-batch can be traced into one (XLA-compilable) graph::

        env = PointNavTF()
        state = env.reset(goals)                          # goals [B, 2]
        for _ in range(horizon):
            state, reward, done = env.step(state, policy(env.observe(state)))
    """

    max_action: float = 0.1  # Velocity commands are clipped to [-max_action, max_action]^2.
    goal_tolerance: float = 0.01  # Done when both |dx| and |dy| are below this.
    obs_dim = 2
    act_dim = 2

    def __post_init__(self):
        check_float(self, "max_action")
        check_float(self, "goal_tolerance")

    def reset(self, goals: tf.Tensor) -> PointNavState:
        """Every environment at the origin; ``goals`` is ``[..., 2]``."""
        goals = tf.convert_to_tensor(goals, tf.float32)
        return PointNavState(tf.zeros_like(goals), goals)

    def observe(self, state: PointNavState) -> tf.Tensor:
        return state.position

    def step(self, state: PointNavState, action: tf.Tensor):
        """One step of every environment.

        Returns:
          ``(next_state, reward, done)``: reward and done have the batch shape (``[...]``), the
          reward is ``-||s_t+1 - g||`` and done tests both coordinates against the tolerance.
        """
        action = tf.convert_to_tensor(action, state.position.dtype)
        position = state.position + tf.clip_by_value(action, -self.max_action, self.max_action)
        delta = position - state.goal
        dx, dy = delta[..., 0], delta[..., 1]
        reward = -tf.sqrt(dx * dx + dy * dy)
        done = tf.logical_and(tf.abs(dx) < self.goal_tolerance, tf.abs(dy) < self.goal_tolerance)
        return PointNavState(position, state.goal), reward, done

    def oracle_action(self, state: PointNavState) -> tf.Tensor:
        """The goal-aware straight-line policy (the oracle of the issue's evaluation)."""
        return tf.clip_by_value(state.goal - state.position, -self.max_action, self.max_action)


def register() -> None:
    """Registers ``metarl_tf/PointNav-v0`` (TimeLimit 100) with gymnasium; safe to call twice."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="metarl_tf.tasks.pointnav:PointNavEnv",
                           max_episode_steps=PointNavTasks().horizon)


register()
