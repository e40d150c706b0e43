"""CartPole variants whose force direction is part of the task: a family no single policy solves.

A fixed controller balances every CartPole whose only changes are pole length, masses and force
magnitude, so such a family needs no adaptation. Here each task also draws a *direction*: with
``direction = -1`` action 1 pushes the cart left instead of right. Any task-agnostic policy then
fails on half the tasks, and the direction must be inferred from experience (the observation is the
usual ``(x, x_dot, theta, theta_dot)``; nothing in it tells the task)::

    task = (half_length, masspole, masscart, force_mag, direction)
    force = direction * (force_mag if a == 1 else -force_mag)
    dynamics, reward (+1 per step, including the failing one), termination (|x| > 2.4 or
    |theta| > 12 degrees) and the reset U[-0.05, 0.05]^4: gymnasium's CartPole-v1 (Euler, tau 0.02)
    horizon: 200 steps (CartPole-v0's limit; keeps the from-scratch DQN baselines cheap)

Train and held-out test tasks come from disjoint ranges of every continuous parameter (the test
poles are longer and heavier, the test carts heavier, the test forces stronger); the direction is
+1 or -1 with probability 1/2 in both.

Two implementations: ``CartPoleDirEnv`` (gymnasium's ``CartPoleEnv`` with ``set_task``, registered
as ``metarl_tf/CartPoleDir-v0``) and ``CartPoleTF`` (batched TensorFlow, the same float32 math).
"""
from __future__ import annotations

import dataclasses
import math

import gymnasium
import numpy as np
import tensorflow as tf
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from metarl_tf._checks import check_int, check_range
from metarl_tf.tasks._discrete import as_task, check_num_tasks, rng_for
from metarl_tf.tasks._task_env import TaskAttribute

ENV_ID = "metarl_tf/CartPoleDir-v0"
GRAVITY, TAU, X_LIMIT, THETA_LIMIT = 9.8, 0.02, 2.4, 12 * 2 * math.pi / 360
DEFAULT_TASK = (0.5, 0.1, 1.0, 10.0, 1.0)  # gymnasium's CartPole, direction +1


@dataclasses.dataclass(frozen=True)
class CartPoleDirTasks:
    """The CartPoleDir family: ranges of the continuous parameters per split, and the horizon."""

    half_length_train: tuple[float, float] = (0.3, 0.7)  # Half pole length, train (default 0.5).
    half_length_test: tuple[float, float] = (0.7, 0.9)  # Half pole length, held-out test.
    masspole_train: tuple[float, float] = (0.05, 0.15)  # Pole mass, train (default 0.1).
    masspole_test: tuple[float, float] = (0.15, 0.2)  # Pole mass, test.
    masscart_train: tuple[float, float] = (0.7, 1.3)  # Cart mass, train (default 1.0).
    masscart_test: tuple[float, float] = (1.3, 1.6)  # Cart mass, test.
    force_mag_train: tuple[float, float] = (7.0, 13.0)  # Force magnitude, train (default 10).
    force_mag_test: tuple[float, float] = (13.0, 16.0)  # Force magnitude, test.
    horizon: int = 200  # Episode length cap (TimeLimit).
    obs_dim = 4
    num_actions = 2
    task_dim = 5

    def __post_init__(self):
        for name in ("half_length", "masspole", "masscart", "force_mag"):
            for split in ("train", "test"):
                check_range(self, f"{name}_{split}")
                if getattr(self, f"{name}_{split}")[0] <= 0:
                    raise ValueError(f"`{name}_{split}` must be positive, got "
                                     f"{getattr(self, f'{name}_{split}')!r}")
        check_int(self, "horizon")

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """``[num_tasks, 5]`` float32 tasks ``(half_length, masspole, masscart, force_mag, dir)``."""
        check_num_tasks(num_tasks)
        rng = rng_for(seed, split)
        cols = [rng.uniform(*getattr(self, f"{name}_{split}"), size=num_tasks)
                for name in ("half_length", "masspole", "masscart", "force_mag")]
        cols.append(np.where(rng.uniform(size=num_tasks) < 0.5, -1.0, 1.0))
        return np.stack(cols, axis=1).astype(np.float32)

    def make_env(self, task=None) -> gymnasium.Env:
        return gymnasium.wrappers.TimeLimit(CartPoleDirEnv(task), max_episode_steps=self.horizon)

    def tf_env(self) -> "CartPoleTF":
        return CartPoleTF()


def _check_task(task) -> np.ndarray:
    task = as_task(task, 5, "CartPoleDir")
    if np.any(task[:4] <= 0) or abs(abs(float(task[4])) - 1.0) > 0:
        raise ValueError("CartPoleDir task must be (half_length > 0, masspole > 0, masscart > 0, "
                         f"force_mag > 0, direction +1 or -1), got {task.tolist()}")
    return task


class CartPoleDirEnv(TaskAttribute, CartPoleEnv):
    """Gymnasium's CartPole with ``set_task((half_length, masspole, masscart, force_mag, dir))``.

    A direction of -1 swaps the meaning of the two actions (the force is symmetric in them).
    """

    def __init__(self, task=None, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.set_task(DEFAULT_TASK if task is None else task)

    def set_task(self, task) -> None:
        task = _check_task(task)
        self._task = task
        self.length, self.masspole, self.masscart, self.force_mag = (float(v) for v in task[:4])
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
        self.direction = int(task[4])

    def get_task(self) -> np.ndarray:
        return self._task.copy()

    def step(self, action):
        action = int(action)
        if action not in (0, 1):
            raise ValueError(f"`action` must be 0 or 1, got {action!r}")
        return super().step(action if self.direction > 0 else 1 - action)


class CartPoleTF:
    """Batched CartPoleDir in TensorFlow: ``state`` is ``[T, 4]``, as the observation."""

    obs_dim, num_actions = 4, 2

    def reset(self, task: tf.Tensor, seed: tf.Tensor):
        n = tf.shape(task)[0]
        state = tf.random.stateless_uniform([n, 4], seed, -0.05, 0.05, alg="philox")
        return state, state

    def step(self, task: tf.Tensor, state: tf.Tensor, action: tf.Tensor):
        length, masspole, masscart, force_mag, direction = tf.unstack(task, axis=1)
        x, x_dot, theta, theta_dot = tf.unstack(state, axis=1)
        sign = tf.where(tf.equal(action, 1), 1.0, -1.0) * direction
        force = sign * force_mag
        total_mass = masspole + masscart
        polemass_length = masspole * length
        cos, sin = tf.cos(theta), tf.sin(theta)
        temp = (force + polemass_length * tf.square(theta_dot) * sin) / total_mass
        thetaacc = (GRAVITY * sin - cos * temp) / (
            length * (4.0 / 3.0 - masspole * tf.square(cos) / total_mass))
        xacc = temp - polemass_length * thetaacc * cos / total_mass
        new = tf.stack([x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot,
                        theta_dot + TAU * thetaacc], axis=1)
        terminated = ((tf.abs(new[:, 0]) > X_LIMIT) | (tf.abs(new[:, 2]) > THETA_LIMIT))
        return new, new, tf.ones_like(x), terminated
