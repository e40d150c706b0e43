"""Random tabular MDPs: the second RL² task family, plus its exact baselines.

The setting of RL² (Duan et al. 2016, arXiv:1611.02779, section 4.2), as in the public
re-implementations (lucaslingle/pytorch_rl2 ``rl2/envs/mdp_env.py``; ``PAPERS.md`` section 4)::

    task      P(. | s, a) ~ Dirichlet(1, ..., 1)     for every (s, a)   (|S| = 10, |A| = 5)
              mu(s, a)    ~ N(1, 1)                   mean reward of (s, a)
    episode   starts in state 0, lasts ``horizon`` = 10 steps; r_t ~ N(mu(s_t, a_t), 1),
              s_t+1 ~ P(. | s_t, a_t)
    trial     n episodes (RL² paper: n = 10, 25, 50, 75, 100) on the same MDP

The observation is the one-hot state ``[num_states]``.

* ``TabularMDPEnv``: a ``gymnasium.Env`` with ``set_task`` / ``get_task``, registered as
  ``metarl_tf/TabularMDP-v0`` (``TimeLimit`` of 10 steps);
* ``TabularMDPTF``: pure batched TensorFlow, so a whole RL² PPO iteration compiles;
* ``optimal_return`` / ``uniform_random_return``: the exact expected episode return of the
  optimal policy with the true model (finite-horizon value iteration, the upper bound of the RL²
  paper's table 2) and of the uniformly random policy.

A task is an ``MDPTask(transitions [S, A, S], reward_means [S, A])``; batched in TensorFlow every
field gets a leading ``[B]`` axis.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import gymnasium
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_int
from metarl_tf.tasks._task_env import TaskAttribute
from metarl_tf.tasks.splits import split_rng, split_seed_tf

ENV_ID = "metarl_tf/TabularMDP-v0"


class MDPTask(NamedTuple):
    """One tabular MDP (NumPy or TensorFlow; batched: a leading ``[B]`` axis on both).

    Attributes:
      transitions: ``[S, A, S]``, ``transitions[s, a, s']`` = P(s' | s, a).
      reward_means: ``[S, A]``, the mean reward of taking ``a`` in ``s``.
    """

    transitions: object
    reward_means: object



@dataclasses.dataclass(frozen=True)
class TabularMDPTasks:
    """The random tabular MDP family of RL²; train and test MDPs come from separate streams."""

    num_states: int = 10  # |S| (RL² paper: 10).
    num_actions: int = 5  # |A| (RL² paper: 5).
    horizon: int = 10  # Steps per episode (RL² paper: 10).
    num_episodes: int = 10  # n, episodes per trial (RL² paper: 10, 25, 50, 75, 100).

    def __post_init__(self):
        check_int(self, "num_states", minimum=1)
        check_int(self, "num_actions", minimum=2)
        check_int(self, "horizon", minimum=1)
        check_int(self, "num_episodes", minimum=1)

    @property
    def obs_dim(self) -> int:
        return self.num_states

    @property
    def episodes_per_trial(self) -> int:
        return self.num_episodes

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> list[MDPTask]:
        """Draws ``num_tasks`` MDPs with NumPy (for gymnasium environments and the baselines)."""
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
        rng = split_rng(seed, split)
        s, a = self.num_states, self.num_actions
        p = rng.dirichlet(np.ones(s), size=(num_tasks, s, a)).astype(np.float32)
        mu = rng.normal(1.0, 1.0, size=(num_tasks, s, a)).astype(np.float32)
        return [MDPTask(p[i], mu[i]) for i in range(num_tasks)]

    def sample_tf(self, seed, num_tasks: int, split: str = "train") -> MDPTask:
        """Draws a batch of ``num_tasks`` MDPs in TensorFlow from a stateless ``seed`` (shape [2]).

        Dirichlet(1) rows are normalized Gamma(1) (i.e. exponential) draws.
        """
        seed = split_seed_tf(seed, split)
        seeds = tf.random.experimental.stateless_split(seed, 2, alg="philox")
        s, a = self.num_states, self.num_actions
        u = tf.random.stateless_uniform([num_tasks, s, a, s], seeds[0], minval=1e-12, maxval=1.0,
                                        alg="philox")
        gamma1 = -tf.math.log(u)  # Gamma(1, 1) = Exp(1)
        p = gamma1 / tf.reduce_sum(gamma1, axis=-1, keepdims=True)
        mu = tf.random.stateless_normal([num_tasks, s, a], seeds[1], mean=1.0, stddev=1.0,
                                        alg="philox")
        return MDPTask(p, mu)

    def stack(self, tasks) -> MDPTask:
        """A list of NumPy ``MDPTask`` -> one batched ``MDPTask`` of float32 tensors."""
        return MDPTask(tf.constant(np.stack([t.transitions for t in tasks]), tf.float32),
                       tf.constant(np.stack([t.reward_means for t in tasks]), tf.float32))

    def make_env(self, task=None) -> gymnasium.Env:
        """A ``TabularMDPEnv`` with this family's sizes inside a ``TimeLimit(horizon)``."""
        env = TabularMDPEnv(self.num_states, self.num_actions, task=task)
        return gymnasium.wrappers.TimeLimit(env, max_episode_steps=self.horizon)

    def tf_env(self) -> "TabularMDPTF":
        return TabularMDPTF(self.num_states, self.num_actions, self.horizon)


def _as_task(task, num_states: int, num_actions: int) -> MDPTask:
    try:
        p, mu = task
    except (TypeError, ValueError):
        raise ValueError("a tabular MDP task must be an MDPTask(transitions, reward_means), got "
                         f"{type(task).__name__}") from None
    p, mu = np.asarray(p, np.float64), np.asarray(mu, np.float32)
    s, a = num_states, num_actions
    if p.shape != (s, a, s) or mu.shape != (s, a):
        raise ValueError(f"a tabular MDP task needs transitions {(s, a, s)} and reward_means "
                         f"{(s, a)}, got {p.shape} and {mu.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(-1), 1.0, atol=1e-4) or not np.all(np.isfinite(mu)):
        raise ValueError("a tabular MDP's transitions must be probability rows (>= 0, sum 1) and "
                         "its reward_means finite")
    return MDPTask(p / p.sum(-1, keepdims=True), mu)


class TabularMDPEnv(TaskAttribute, gymnasium.Env):
    """Gymnasium tabular MDP; episodes start in state 0 (the ``TimeLimit`` ends them).

    Args:
      num_states, num_actions: sizes.
      task: an ``MDPTask``; ``None`` draws one from the family at the first reset.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_states: int = 10, num_actions: int = 5, task=None):
        self._family = TabularMDPTasks(num_states=num_states, num_actions=num_actions)
        self.num_states, self.num_actions = num_states, num_actions
        self.action_space = gymnasium.spaces.Discrete(num_actions)
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(num_states,),
                                                      dtype=np.float32)
        self._task = None if task is None else _as_task(task, num_states, num_actions)
        self._state = 0

    def set_task(self, task) -> None:
        """Sets the MDP; takes effect from the next ``reset``."""
        self._task = _as_task(task, self.num_states, self.num_actions)

    def get_task(self) -> MDPTask | None:
        return self._task

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_states, np.float32)
        obs[self._state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._task is None:
            self._task = _as_task(self._family.sample(1, int(self.np_random.integers(2**31)))[0],
                                  self.num_states, self.num_actions)
        self._state = 0
        return self._obs(), {"state": 0}

    def step(self, action):
        if self._task is None:
            raise RuntimeError("TabularMDPEnv.step called before reset")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"`action` must be in [0, {self.num_actions}), got {action!r}")
        s, a = self._state, int(action)
        reward = float(self._task.reward_means[s, a] + self.np_random.normal())
        self._state = int(self.np_random.choice(self.num_states, p=self._task.transitions[s, a]))
        return self._obs(), reward, False, False, {"state": self._state}


class MDPState(NamedTuple):
    """State of a batch of tabular MDPs: the tasks, the current state ``[B]`` and the step ``[B]``
    within the current episode."""

    task: MDPTask
    state: tf.Tensor
    t: tf.Tensor


@dataclasses.dataclass(frozen=True)
class TabularMDPTF:
    """Tabular MDPs as pure, batched TensorFlow functions (the ``rl2`` trial-environment protocol).

    ``step`` ends an episode after ``horizon`` steps and starts the next one in state 0, so a trial
    of ``n * horizon`` steps is a plain loop over ``step``.
    """

    num_states: int = 10
    num_actions: int = 5
    horizon: int = 10
    supports_trials = True  # the rl2 trial-environment protocol (auto-reset between episodes)

    def __post_init__(self):
        check_int(self, "num_states", minimum=1)
        check_int(self, "num_actions", minimum=2)
        check_int(self, "horizon", minimum=1)

    @property
    def obs_dim(self) -> int:
        return self.num_states

    def reset(self, task: MDPTask) -> MDPState:
        task = MDPTask(tf.convert_to_tensor(task.transitions, tf.float32),
                       tf.convert_to_tensor(task.reward_means, tf.float32))
        zeros = tf.zeros([tf.shape(task.reward_means)[0]], tf.int32)
        return MDPState(task, zeros, zeros)

    def observe(self, state: MDPState) -> tf.Tensor:
        return tf.one_hot(state.state, self.num_states, dtype=tf.float32)

    def step(self, state: MDPState, action, seed):
        """One step of every MDP: ``(next_state, reward [B], done [B])``."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2, alg="philox")
        action = tf.cast(action, tf.int32)
        idx = tf.stack([state.state, action], axis=1)
        mu = tf.gather_nd(state.task.reward_means, idx, batch_dims=1)
        probs = tf.gather_nd(state.task.transitions, idx, batch_dims=1)  # [B, S]
        reward = mu + tf.random.stateless_normal(tf.shape(mu), seeds[0], alg="philox")
        nxt = tf.random.stateless_categorical(tf.math.log(tf.maximum(probs, 1e-30)), 1, seeds[1],
                                              dtype=tf.int32)[:, 0]
        t = state.t + 1
        done = t >= self.horizon
        nxt = tf.where(done, tf.zeros_like(nxt), nxt)
        t = tf.where(done, tf.zeros_like(t), t)
        return MDPState(state.task, nxt, t), reward, done


def _finite_horizon_values(task: MDPTask, horizon: int, policy: str) -> float:
    p, mu = np.asarray(task.transitions, np.float64), np.asarray(task.reward_means, np.float64)
    v = np.zeros(p.shape[0])
    for _ in range(horizon):
        q = mu + p @ v  # [S, A]
        v = q.max(axis=1) if policy == "optimal" else q.mean(axis=1)
    return float(v[0])


def optimal_return(task: MDPTask, horizon: int = 10) -> float:
    """The optimal expected return of one episode from state 0, with the true model.

    Finite-horizon value iteration, ``V_H = 0``::

        Q_h(s, a) = mu(s, a) + sum_s' P(s' | s, a) V_h+1(s'),     V_h(s) = max_a Q_h(s, a)

    Returns ``V_0(0)``; a trial of ``n`` episodes can expect at most ``n V_0(0)``.
    """
    return _finite_horizon_values(task, horizon, "optimal")


def uniform_random_return(task: MDPTask, horizon: int = 10) -> float:
    """The exact expected episode return (from state 0) of the uniformly random policy."""
    return _finite_horizon_values(task, horizon, "random")


def register() -> None:
    """Registers ``metarl_tf/TabularMDP-v0`` (TimeLimit 10) with gymnasium; safe to call twice."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="metarl_tf.tasks.tabular_mdp:TabularMDPEnv",
                           max_episode_steps=TabularMDPTasks().horizon)


register()
