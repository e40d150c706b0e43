"""What the discrete-action task families of Meta-DQN share (CartPoleDir, GridWorld, MountainCarLR).

Each family is a frozen dataclass with

* ``sample(num_tasks, seed, split) -> np.ndarray [num_tasks, P]`` float32 task parameters, with
  separate train and held-out test ranges;
* ``make_env(task) -> gymnasium.Env`` (a ``TimeLimit``-wrapped env with ``set_task``/``get_task``);
* ``tf_env()`` -> a batched, pure-TensorFlow environment with the same dynamics::

      state, obs = env.reset(task, seed)                     # task [T, P], seed [2]
      state, obs, reward, terminated = env.step(task, state, action)   # action int32 [T]

  so that collection and the DQN update compile into one graph (``metarl_tf.rollouts.replay``).

and the class attributes ``obs_dim``, ``num_actions`` and the field ``horizon``.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("train", "test")


def split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def check_num_tasks(num_tasks) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")


def rng_for(seed: int, split: str) -> np.random.Generator:
    """A NumPy generator for ``split``: train and test never share a stream."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(split_index(split),)))


def as_task(task, size: int, name: str) -> np.ndarray:
    """``task`` as a float32 vector of ``size`` finite numbers, or an error naming ``name``."""
    arr = np.asarray(task, dtype=np.float32).reshape(-1)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` task must be {size} finite numbers, got {task!r}")
    return arr
