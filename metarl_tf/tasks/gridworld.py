"""A grid-world whose goal cell varies and is not observed: adaptation must find it.

``size x size`` cells; the agent starts in a uniformly random cell other than the goal, observes
only its own position, and must walk to the goal::

    task        = (goal_x, goal_y)                 integer cell coordinates, as float32
    observation = 2 * (x, y) / (size - 1) - 1      in [-1, 1]^2 (the goal is NOT observed)
    actions     = 0 up (y + 1), 1 down (y - 1), 2 left (x - 1), 3 right (x + 1); walls block
    reward      = 1 on entering the goal (the episode terminates there), else 0
    horizon     = 20 steps (size 5: the farthest goal is 8 steps away)

Held-out goals: the cells with ``(x + 2 y) mod 5 == 2`` (one per row and column on the 5 x 5 grid:
(2,0), (0,1), (3,2), (1,3), (4,4)) are never goals in training; the others are the train goals.

``GridWorldEnv`` is the gymnasium env (``metarl_tf/GridWorld-v0``), ``GridWorldTF`` the batched
TensorFlow one with the same dynamics.
"""
from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_int
from metarl_tf.tasks._discrete import as_task, check_num_tasks, rng_for, split_index
from metarl_tf.tasks._task_env import TaskAttribute

ENV_ID = "metarl_tf/GridWorld-v0"
# action -> (dx, dy)
MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))


def is_test_goal(x: int, y: int) -> bool:
    return (x + 2 * y) % 5 == 2


@dataclasses.dataclass(frozen=True)
class GridWorldTasks:
    """The GridWorld family: grid size and horizon; tasks are goal cells."""

    size: int = 5  # Cells per side.
    horizon: int = 20  # Episode length cap (TimeLimit).
    obs_dim = 2
    num_actions = 4
    task_dim = 2

    def __post_init__(self):
        check_int(self, "size", minimum=3)
        check_int(self, "horizon")

    def goals(self, split: str = "train") -> np.ndarray:
        """All goal cells of ``split``, ``[G, 2]`` float32, row-major."""
        test = split_index(split) == 1
        cells = [(x, y) for y in range(self.size) for x in range(self.size)
                 if is_test_goal(x, y) == test]
        return np.asarray(cells, np.float32)

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """``[num_tasks, 2]`` goals of ``split``, balanced: shuffled passes over all its cells, so
        every goal appears ``floor`` or ``ceil(num_tasks / G)`` times."""
        check_num_tasks(num_tasks)
        goals = self.goals(split)
        rng = rng_for(seed, split)
        passes = -(-num_tasks // len(goals))
        order = np.concatenate([rng.permutation(len(goals)) for _ in range(passes)])
        return goals[order[:num_tasks]]

    def make_env(self, task=None) -> gymnasium.Env:
        return gymnasium.wrappers.TimeLimit(GridWorldEnv(task, size=self.size),
                                            max_episode_steps=self.horizon)

    def tf_env(self) -> "GridWorldTF":
        return GridWorldTF(self.size)


class GridWorldEnv(TaskAttribute, gymnasium.Env):
    """Gymnasium grid-world; ``set_task((goal_x, goal_y))``."""

    metadata = {"render_modes": []}

    def __init__(self, task=None, size: int = 5):
        self.size = int(size)
        self.action_space = gymnasium.spaces.Discrete(4)
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.set_task((self.size - 1, self.size - 1) if task is None else task)
        self._pos = np.zeros(2, np.int64)

    def set_task(self, task) -> None:
        task = as_task(task, 2, "GridWorld")
        if np.any(task != np.round(task)) or np.any(task < 0) or np.any(task >= self.size):
            raise ValueError(f"GridWorld task must be integer cell coordinates in [0, {self.size}),"
                             f" got {task.tolist()}")
        self._goal = task.astype(np.int64)

    def get_task(self) -> np.ndarray:
        return self._goal.astype(np.float32)

    def _obs(self) -> np.ndarray:
        return (2.0 * self._pos / (self.size - 1) - 1.0).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        goal = int(self._goal[0] + self.size * self._goal[1])
        cell = int(self.np_random.integers(0, self.size * self.size - 1))
        cell += cell >= goal
        self._pos = np.array([cell % self.size, cell // self.size], np.int64)
        return self._obs(), {}

    def step(self, action):
        action = int(action)
        if not 0 <= action < 4:
            raise ValueError(f"`action` must be in [0, 4), got {action!r}")
        self._pos = np.clip(self._pos + np.array(MOVES[action]), 0, self.size - 1)
        reached = bool(np.all(self._pos == self._goal))
        return self._obs(), float(reached), reached, False, {}


class GridWorldTF:
    """Batched grid-world in TensorFlow: ``state`` is the ``[T, 2]`` cell (float32 integers)."""

    num_actions, obs_dim = 4, 2

    def __init__(self, size: int = 5):
        self.size = int(size)

    def observe(self, state):
        return 2.0 * state / (self.size - 1) - 1.0

    def reset(self, task: tf.Tensor, seed: tf.Tensor):
        n = tf.shape(task)[0]
        goal = tf.cast(task[:, 0] + self.size * task[:, 1], tf.int32)
        cell = tf.random.stateless_uniform([n], seed, 0, self.size * self.size - 1, tf.int32,
                                           alg="philox")
        cell += tf.cast(cell >= goal, tf.int32)
        state = tf.cast(tf.stack([cell % self.size, cell // self.size], axis=1), tf.float32)
        return state, self.observe(state)

    def step(self, task: tf.Tensor, state: tf.Tensor, action: tf.Tensor):
        move = tf.gather(tf.constant(MOVES, tf.float32), action)
        new = tf.clip_by_value(state + move, 0.0, float(self.size - 1))
        reached = tf.reduce_all(tf.equal(new, task), axis=1)
        return new, self.observe(new), tf.cast(reached, tf.float32), reached
