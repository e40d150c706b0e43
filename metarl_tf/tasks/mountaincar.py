"""MountainCar whose goal is on the left or on the right hill: the task is the side.

Gymnasium's MountainCar-v0 dynamics, extended to a valley that is symmetric about its bottom
``c = -pi/6`` (where ``sin(3x)`` is lowest), so that both hills are the same: the track is
``[c - 1.1236, c + 1.1236] = [-1.6472, 0.6]`` and the goal sits at distance 1.0236 from the bottom on
the task's side (x >= 0.5 on the right, the original goal, or x <= -1.5472 on the left)::

    task      = (side, force)                   side +1 right / -1 left; force (default 0.001)
    v_t+1     = clip(v_t + (a - 1) force - 0.0025 cos(3 x_t), -0.07, 0.07)
    x_t+1     = clip(x_t + v_t+1, -1.6472, 0.6);  v_t+1 = 0 when the car hits either end
    reward    = -1 per step; terminated when the car reaches the goal side's flag
    reset     = x ~ U[-0.6, -0.4], v = 0;  horizon 200 (MountainCar-v0)

The observation is ``(x, v)``: the side is not observed. Train and test differ in the force range
(``force_train``/``force_test``); the side is +1 or -1 with probability 1/2 in both.
``MountainCarLREnv`` is the gymnasium env (``metarl_tf/MountainCarLR-v0``), ``MountainCarTF`` the
batched TensorFlow one.
"""
from __future__ import annotations

import dataclasses
import math

import gymnasium
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_int, check_range
from metarl_tf.tasks._discrete import as_task, check_num_tasks, rng_for
from metarl_tf.tasks._task_env import TaskAttribute

ENV_ID = "metarl_tf/MountainCarLR-v0"
BOTTOM = -math.pi / 6
HALF_WIDTH = 0.6 - BOTTOM  # 1.1236
MIN_X, MAX_X = BOTTOM - HALF_WIDTH, 0.6
GOAL_OFFSET = 0.5 - BOTTOM  # 1.0236
MAX_SPEED, GRAVITY = 0.07, 0.0025


@dataclasses.dataclass(frozen=True)
class MountainCarLRTasks:
    """The MountainCarLR family: force ranges per split and the horizon."""

    force_train: tuple[float, float] = (0.0009, 0.0012)  # Engine force, train (gymnasium: 0.001).
    force_test: tuple[float, float] = (0.0012, 0.0013)  # Engine force, held-out test.
    horizon: int = 200  # Episode length cap (MountainCar-v0: 200).
    obs_dim = 2
    num_actions = 3
    task_dim = 2

    def __post_init__(self):
        check_range(self, "force_train")
        check_range(self, "force_test")
        check_int(self, "horizon")

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """``[num_tasks, 2]`` float32 tasks ``(side, force)``."""
        check_num_tasks(num_tasks)
        rng = rng_for(seed, split)
        force = rng.uniform(*getattr(self, f"force_{split}"), size=num_tasks)
        side = np.where(rng.uniform(size=num_tasks) < 0.5, -1.0, 1.0)
        return np.stack([side, force], axis=1).astype(np.float32)

    def make_env(self, task=None) -> gymnasium.Env:
        return gymnasium.wrappers.TimeLimit(MountainCarLREnv(task), max_episode_steps=self.horizon)

    def tf_env(self) -> "MountainCarTF":
        return MountainCarTF()


class MountainCarLREnv(TaskAttribute, gymnasium.Env):
    """Gymnasium MountainCar with the goal side as the task; ``set_task((side, force))``."""

    metadata = {"render_modes": []}

    def __init__(self, task=None):
        self.action_space = gymnasium.spaces.Discrete(3)
        self.observation_space = gymnasium.spaces.Box(
            np.array([MIN_X, -MAX_SPEED], np.float32), np.array([MAX_X, MAX_SPEED], np.float32))
        self.set_task((1.0, 0.001) if task is None else task)
        self._state = np.zeros(2, np.float32)

    def set_task(self, task) -> None:
        task = as_task(task, 2, "MountainCarLR")
        if abs(float(task[0])) != 1.0 or task[1] <= 0:
            raise ValueError(f"MountainCarLR task must be (side +1 or -1, force > 0), got "
                             f"{task.tolist()}")
        self._task = task

    def get_task(self) -> np.ndarray:
        return self._task.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state = np.array([self.np_random.uniform(-0.6, -0.4), 0.0], np.float32)
        return self._state.copy(), {}

    def step(self, action):
        action = int(action)
        if not 0 <= action < 3:
            raise ValueError(f"`action` must be in [0, 3), got {action!r}")
        side, force = np.float32(self._task[0]), np.float32(self._task[1])
        x, v = self._state
        v = np.clip(v + np.float32(action - 1) * force - np.float32(GRAVITY) * np.cos(
            np.float32(3) * x), -MAX_SPEED, MAX_SPEED)
        x = np.clip(x + v, MIN_X, MAX_X)
        if x <= MIN_X or x >= MAX_X:
            v = np.float32(0.0)
        self._state = np.array([x, v], np.float32)
        goal = BOTTOM + side * GOAL_OFFSET
        terminated = bool(x >= goal) if side > 0 else bool(x <= goal)
        return self._state.copy(), -1.0, terminated, False, {}


class MountainCarTF:
    """Batched MountainCarLR in TensorFlow: ``state`` is ``[T, 2] = (x, v)``, as the observation."""

    obs_dim, num_actions = 2, 3

    def reset(self, task: tf.Tensor, seed: tf.Tensor):
        n = tf.shape(task)[0]
        x = tf.random.stateless_uniform([n], seed, -0.6, -0.4, alg="philox")
        state = tf.stack([x, tf.zeros_like(x)], axis=1)
        return state, state

    def step(self, task: tf.Tensor, state: tf.Tensor, action: tf.Tensor):
        side, force = task[:, 0], task[:, 1]
        x, v = state[:, 0], state[:, 1]
        v = tf.clip_by_value(v + tf.cast(action - 1, tf.float32) * force
                             - GRAVITY * tf.cos(3.0 * x), -MAX_SPEED, MAX_SPEED)
        x = tf.clip_by_value(x + v, MIN_X, MAX_X)
        v = tf.where((x <= MIN_X) | (x >= MAX_X), 0.0, v)
        goal = BOTTOM + side * GOAL_OFFSET
        terminated = tf.where(side > 0, x >= goal, x <= goal)
        new = tf.stack([x, v], axis=1)
        return new, new, -tf.ones_like(x), terminated
