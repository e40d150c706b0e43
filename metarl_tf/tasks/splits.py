"""The three task splits every task family draws from: train, validation and test.

Presets, schedules, stopping points and variant choices are tuned on ``validation``; ``test`` is
touched only by the final evaluation (``metarl results``). Families with continuous task parameters
(goals, velocities, arm means, MDPs, sinusoids) draw each split from its own random stream: the
NumPy generator ``SeedSequence(seed, spawn_key=(index,))`` or the Philox seed folded with ``index``.
Streams with different keys are independent, so the splits share no draw; the indices of ``train``
(0) and ``test`` (1) predate ``validation`` (2) and keep their streams. Families with a finite task
set (grid-world goals, Meta-World's classes) partition it instead, each in its own module.

The supervised (regression) families key their meta-batches by ``(seed, n)``: meta-step ``n >= 0``
trains on ``(seed, n)``, and ``split_seed(seed, split)`` gives the held-out streams ``(seed, -1)``
(test) and ``(seed, -2)`` (validation).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

SPLITS = ("train", "test", "validation")
# (seed, n) with n >= 0 is meta-step n's training batch; held-out splits use negative counters.
_REGRESSION_COUNTER = {"test": -1, "validation": -2}


def split_index(split: str) -> int:
    """The stream key of ``split``; an error naming the valid splits otherwise."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def split_rng(seed, split: str) -> np.random.Generator:
    """The NumPy generator of ``split`` for ``seed``: no two splits share a stream."""
    key = split_index(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key,)))


def split_seed_tf(seed, split: str) -> tf.Tensor:
    """A stateless Philox seed ``[2]`` for ``split``: ``seed`` folded with the split's key."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), split_index(split),
                                                    alg="philox")


def split_seed(seed: int, split: str) -> tf.Tensor:
    """The held-out ``(seed, counter)`` of a regression family's ``split`` ("test" or
    "validation"); training uses ``(seed, n)`` with ``n >= 0``."""
    split_index(split)
    if split not in _REGRESSION_COUNTER:
        raise ValueError(f"`split` of a held-out evaluation must be one of "
                         f"{sorted(_REGRESSION_COUNTER)}, got {split!r} (training draws (seed, n))")
    return tf.constant([int(seed), _REGRESSION_COUNTER[split]], tf.int64)
