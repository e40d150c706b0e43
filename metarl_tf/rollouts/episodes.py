"""The padded episode batch that every RL piece exchanges."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Episodes(NamedTuple):
    """``N`` episodes for each of ``T`` tasks, padded to the horizon ``H`` (fixed shapes).

    Step ``h`` of an episode is: observe ``observations[..., h, :]``, take ``actions[..., h]``,
    receive ``rewards[..., h]``. ``mask`` is 1 on the steps that happened and 0 on the padding after
    the episode ended (termination, truncation or the horizon), so it is a run of ones followed by
    zeros; padded entries are zero everywhere.

    Attributes:
      observations: ``[T, N, H, obs_dim]`` float32.
      actions: ``[T, N, H, act_dim]`` float32 (continuous) or ``[T, N, H]`` int32 (discrete), as
        sampled by the policy (before any clipping the environment applies).
      rewards: ``[T, N, H]`` float32.
      mask: ``[T, N, H]`` float32.

    The fields may be NumPy arrays (``collect_episodes``) or tensors (``rollout_pointnav``).
    """

    observations: object
    actions: object
    rewards: object
    mask: object


def check_episodes(episodes: Episodes) -> None:
    """Raises ``ValueError`` (naming the field) unless ``episodes`` is a usable batch.

    Checks: consistent ``[T, N, H]`` shapes; finite observations, actions and rewards; a 0/1 mask
    that is ones-then-zeros along time; at least one valid step per task.
    """
    obs, act, rew, mask = (np.asarray(x) for x in episodes)
    if rew.ndim != 3:
        raise ValueError(f"`rewards` must be [T, N, H], got shape {rew.shape}")
    if mask.shape != rew.shape:
        raise ValueError(f"`mask` must have the rewards' shape {rew.shape}, got {mask.shape}")
    if obs.shape[:3] != rew.shape or obs.ndim != 4:
        raise ValueError(f"`observations` must be [T, N, H, obs_dim] with [T, N, H] = {rew.shape}, "
                         f"got {obs.shape}")
    if act.shape[:3] != rew.shape or act.ndim not in (3, 4):
        raise ValueError(f"`actions` must be [T, N, H] or [T, N, H, act_dim] with [T, N, H] = "
                         f"{rew.shape}, got {act.shape}")
    for name, value in (("observations", obs), ("actions", act), ("rewards", rew)):
        bad = ~np.isfinite(value)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0][:3])
            raise ValueError(f"`{name}` contains NaN or inf (first at [task, episode, step] = "
                             f"{list(where)})")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError("`mask` must contain only 0 and 1")
    if np.any(mask[..., 1:] > mask[..., :-1]):
        raise ValueError("`mask` must be ones then zeros along time (a step after the end of an "
                         "episode is marked valid)")
    empty = np.flatnonzero(mask.reshape(mask.shape[0], -1).sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"`mask` is all zero for task(s) {empty.tolist()}: no valid step to learn from")
