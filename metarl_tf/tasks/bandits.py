"""Bernoulli multi-armed bandits: the first RL² task family, plus the classic bandit baselines.

The setting of RL² (Duan et al. 2016, arXiv:1611.02779, section 4.1), as in the public
re-implementations (``PAPERS.md`` section 4)::

    task      p_1, ..., p_k ~ U[0, 1]            (one task = k arm means)
    episode   one pull: action a in {0..k-1}, reward r ~ Bernoulli(p_a), then the episode ends
    trial     n episodes (pulls) on the same task; the score is the total reward of the trial

The observation carries nothing (a constant ``[0.0]``); everything an RL² agent learns about the
task comes through its previous action, reward and done flag.

Three implementations with the same task distribution and reward:

* ``BanditEnv``, a ``gymnasium.Env`` with ``set_task`` / ``get_task`` (and a ``task`` attribute),
  registered as ``metarl_tf/BernoulliBandit-v0``;
* ``BanditTF``, pure batched TensorFlow, so that a whole RL² PPO iteration (rollout and update)
  compiles into one ``tf.function``;
* ``bandit_baselines``: random, greedy, epsilon-greedy, UCB1, Thompson sampling and the Gittins
  index policy (indices computed by ``gittins_index_table``), vectorized over trials in NumPy,
  for the benchmark's comparison.

Example::

    tasks = BernoulliBanditTasks(num_arms=5, num_pulls=10)
    means = tasks.sample(1000, seed=0, split="test")           # [1000, 5] float32
    env = tasks.make_env(means[0])
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(2)     # terminated is always True
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import gymnasium
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_float, check_int
from metarl_tf.tasks._task_env import TaskAttribute
from metarl_tf.tasks.splits import split_rng, split_seed_tf

ENV_ID = "metarl_tf/BernoulliBandit-v0"



def _check_num_tasks(num_tasks) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")


@dataclasses.dataclass(frozen=True)
class BernoulliBanditTasks:
    """The Bernoulli bandit family: ``num_arms`` arms with means ``U[0, 1]``, ``num_pulls`` per trial.

    Train and test tasks come from the same distribution but from separate random streams.
    """

    num_arms: int = 5  # k, the number of arms (RL² paper: 5, 10, 50).
    num_pulls: int = 10  # n, pulls (one-step episodes) per trial (RL² paper: 10, 100, 500).
    obs_dim = 1  # the constant, empty observation
    horizon = 1  # steps per episode

    def __post_init__(self):
        check_int(self, "num_arms", minimum=2)
        check_int(self, "num_pulls", minimum=1)

    @property
    def num_actions(self) -> int:
        return self.num_arms

    @property
    def episodes_per_trial(self) -> int:
        return self.num_pulls

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> np.ndarray:
        """Draws ``[num_tasks, num_arms]`` float32 arm means with NumPy (gymnasium / baselines)."""
        _check_num_tasks(num_tasks)
        rng = split_rng(seed, split)
        return rng.uniform(0.0, 1.0, size=(num_tasks, self.num_arms)).astype(np.float32)

    def sample_tf(self, seed, num_tasks: int, split: str = "train") -> tf.Tensor:
        """Draws ``[num_tasks, num_arms]`` arm means in TensorFlow from a stateless ``seed`` [2]."""
        seed = split_seed_tf(seed, split)
        return tf.random.stateless_uniform([num_tasks, self.num_arms], seed, alg="philox")

    def make_env(self, task=None) -> gymnasium.Env:
        """A ``BanditEnv`` with this family's number of arms (each episode is one pull)."""
        return BanditEnv(num_arms=self.num_arms, means=task)

    def tf_env(self) -> "BanditTF":
        return BanditTF(num_arms=self.num_arms)


def _as_means(means, num_arms: int) -> np.ndarray:
    means = np.asarray(means, dtype=np.float32)
    if means.shape != (num_arms,) or not np.all((means >= 0.0) & (means <= 1.0)):
        raise ValueError(f"a bandit task must be {num_arms} arm means in [0, 1], got {means!r}")
    return means


class BanditEnv(TaskAttribute, gymnasium.Env):
    """Gymnasium Bernoulli bandit: every episode is a single pull.

    Args:
      num_arms: number of arms (>= 2).
      means: the task (``[num_arms]`` in [0, 1]); ``None`` draws one ``U[0, 1]`` at the first reset
        with the env's ``np_random`` and keeps it until ``set_task``.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_arms: int = 5, means=None):
        if isinstance(num_arms, bool) or not isinstance(num_arms, int) or num_arms < 2:
            raise ValueError(f"`num_arms` must be an integer >= 2, got {num_arms!r}")
        self.num_arms = num_arms
        self.action_space = gymnasium.spaces.Discrete(num_arms)
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self._means = None if means is None else _as_means(means, num_arms)

    def set_task(self, task) -> None:
        """Sets the arm means; takes effect at once (a bandit has no state)."""
        self._means = _as_means(task, self.num_arms)

    def get_task(self) -> np.ndarray | None:
        return None if self._means is None else self._means.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._means is None:
            self._means = self.np_random.uniform(0.0, 1.0, self.num_arms).astype(np.float32)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        if self._means is None:
            raise RuntimeError("BanditEnv.step called before reset")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"`action` must be an arm index in [0, {self.num_arms}), got {action!r}")
        reward = float(self.np_random.random() < self._means[int(action)])
        return np.zeros(1, np.float32), reward, True, False, {}


class BanditState(NamedTuple):
    """State of a batch of bandits: ``means`` ``[B, k]`` (a bandit has no other state)."""

    means: tf.Tensor


@dataclasses.dataclass(frozen=True)
class BanditTF:
    """Bernoulli bandits as pure, batched TensorFlow functions (batch ``[B]``).

    The trial-environment protocol of ``metarl_tf.algorithms.rl2``: ``reset(task)`` starts a trial,
    ``observe(state)`` is the current observation, ``step(state, action, seed)`` returns
    ``(state, reward, done)`` and starts the next episode of the trial by itself.
    """

    num_arms: int = 5  # k
    obs_dim = 1
    horizon = 1
    supports_trials = True  # the rl2 trial-environment protocol (auto-reset between episodes)

    def __post_init__(self):
        check_int(self, "num_arms", minimum=2)

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def reset(self, means) -> BanditState:
        return BanditState(tf.convert_to_tensor(means, tf.float32))

    def observe(self, state: BanditState) -> tf.Tensor:
        return tf.zeros([tf.shape(state.means)[0], 1], tf.float32)

    def step(self, state: BanditState, action, seed):
        """Pulls arm ``action`` ``[B]`` (int) of every bandit; every episode ends (done is True)."""
        p = tf.gather(state.means, tf.cast(action, tf.int32), batch_dims=1)
        u = tf.random.stateless_uniform(tf.shape(p), seed, alg="philox")
        reward = tf.cast(u < p, tf.float32)
        return state, reward, tf.ones_like(reward, tf.bool)


# -- baselines ------------------------------------------------------------------------------------
def gittins_discount(num_pulls: int) -> float:
    """The discount at which the Gittins baseline runs a trial of ``num_pulls`` pulls: ``1 - 1/n``.

    The Gittins index is optimal for geometrically discounted pulls over an infinite horizon; a
    trial is ``n`` undiscounted pulls. ``gamma = 1 - 1/n`` gives the discounted problem the same
    expected length: a total weight ``sum_t gamma^t = 1 / (1 - gamma) = n``, i.e. a trial that
    survives each pull with probability ``gamma`` lasts ``n`` pulls on average. It is 0.9 for
    n=10 and 0.99 for n=100, the two discounts of the published tables (Gittins, Glazebrook and
    Weber 2011, "Multi-armed Bandit Allocation Indices", 2nd ed., tables for Bernoulli arms).
    """
    check_int(_Named(num_pulls=num_pulls), "num_pulls", minimum=1)
    return 1.0 - 1.0 / num_pulls


class _Named:
    """Attribute holder so that the ``_checks`` helpers name plain arguments."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class GittinsTable(NamedTuple):
    """Gittins indices of Bernoulli arms under a Beta(1, 1) prior (``gittins_index_table``)."""

    index: np.ndarray  # [n + 1, n + 1]: index[s, f] for s + f <= n (NaN beyond).
    error: float  # Largest half-width of the calibration bracket over the table.
    discount: float  # gamma.
    depth: int  # Truncation: states with a + b <= depth (Beta parameters) are solved exactly.


def _calibration(lams: np.ndarray, discount: float, depth: int, keep: int):
    """Backward induction of the retirement problem over the Beta-state triangle, for every
    retirement reward in ``lams`` at once.

    For a retirement reward ``lam`` per pull (``lam / (1 - gamma)`` in all), the value of Beta
    state ``(a, b)`` (mean ``mu = a / (a + b)``) is::

        V(a, b) = max(lam / (1 - gamma),  Q(a, b))
        Q(a, b) = mu * (1 + gamma * V(a + 1, b)) + (1 - mu) * gamma * V(a, b + 1)

    States with ``a + b = depth`` end the recursion with ``max(mu, lam) / (1 - gamma)`` (the better
    of retiring and pulling forever, whose expected reward per pull is ``mu``): a lower bound of
    their value, so the indices found are lower bounds of the true ones (see
    ``gittins_index_table`` for the size of the gap).

    Returns, per diagonal ``m = a + b <= keep``, ``D = Q - lam / (1 - gamma)`` and its derivative
    in ``lam``, each ``[len(lams), m - 1]`` (column ``a - 1``).
    """
    lam = lams[:, None]
    scale = 1.0 / (1.0 - discount)
    retire = lam * scale
    mu = np.arange(1, depth, dtype=np.float64) / depth
    value = np.maximum(mu[None, :], lam) * scale
    slope = np.where(lam > mu[None, :], scale, 0.0)  # d value / d lam
    out = {}
    for m in range(depth - 1, 1, -1):
        mu = np.arange(1, m, dtype=np.float64) / m
        # V(a + 1, b) is column a of the next diagonal, V(a, b + 1) column a - 1.
        q = mu * (1.0 + discount * value[:, 1:]) + (1.0 - mu) * discount * value[:, :-1]
        dq = discount * (mu * slope[:, 1:] + (1.0 - mu) * slope[:, :-1])
        if m <= keep:
            out[m] = (q - retire, dq - scale)
        stop = retire >= q
        value = np.where(stop, retire, q)
        slope = np.where(stop, scale, dq)
    return out


@functools.lru_cache(maxsize=8)
def gittins_index_table(num_pulls: int, discount: float, depth: int | None = None,
                        grid: int = 1000) -> GittinsTable:
    """Gittins indices of a Bernoulli arm with a Beta(1, 1) prior, for every state
    ``(s successes, f failures)`` with ``s + f <= num_pulls``, by calibration (Gittins 1979;
    Gittins, Glazebrook and Weber 2011, section 8.4).

    The index of a state is the retirement reward ``lam`` (per pull) at which pulling the arm once
    more and then stopping optimally is worth exactly retiring now::

        G(s, f) = the lam with  Q_lam(1 + s, 1 + f) = lam / (1 - gamma)

    One backward induction over the triangle of Beta states solves the retirement problem for a
    whole grid of ``lam`` at once (``_calibration``); ``D(lam) = Q_lam - lam / (1 - gamma)`` is
    convex, piecewise linear and strictly decreasing in ``lam`` (slope <= -1), so the grid cell
    where it changes sign brackets the index: above by the chord's root, below by the roots of
    the tangents at the cell's two ends. The table holds the bracket's midpoint; ``error`` is its
    largest half-width.

    Truncation: the induction stops at Beta states ``a + b = depth`` (default
    ``num_pulls + 2 + max(ceil(3 / (1 - gamma)), 100)``: at least ``gamma^(3 / (1 - gamma)) ~
    e^-3`` of discount past the deepest state of the table) and values them as the better of
    retiring and pulling forever, a lower bound of their value. The truncated index is therefore a
    lower bound of the true one, short by at most ``gamma^(depth - a - b) / (4 (1 - gamma)
    sqrt(depth))`` (the discounted most a boundary state can lose: ``E max(p, lam) - max(mu, lam)
    <= sd(p) / 2 <= 1 / (4 sqrt(depth))``, and ``D`` falls by at least 1 per unit of ``lam``).
    That bound is loose; measured against a 4x deeper truncation the default tables move by at
    most 1e-5 (n=10, gamma=0.9: 5e-10 against a calibration error of 5e-6; n=100, gamma=0.99:
    9e-6 against 2.8e-4; ``tests/test_bandit_gittins.py`` checks the first).

    Args:
      num_pulls: ``n``: the table covers ``s + f <= n``.
      discount: ``gamma`` in [0, 1).
      depth: truncation (Beta states ``a + b <= depth``), > ``num_pulls + 2``.
      grid: number of cells of the ``lam`` grid on [0, 1].

    Returns:
      a ``GittinsTable``.
    """
    args = _Named(num_pulls=num_pulls, discount=discount, grid=grid)
    check_int(args, "num_pulls", minimum=1)
    check_float(args, "discount", 0.0, 1.0, low_inclusive=True)
    check_int(args, "grid", minimum=2)
    if discount >= 1.0:
        raise ValueError(f"`discount` must be < 1 (the index of an undiscounted arm is 1), "
                         f"got {discount!r}")
    keep = num_pulls + 2  # Beta states (1 + s, 1 + f) with s + f <= n
    if depth is None:
        depth = keep + max(math.ceil(3.0 / (1.0 - discount)), 100)
    args.depth = depth
    check_int(args, "depth", minimum=keep + 1)
    lams = np.linspace(0.0, 1.0, grid + 1)
    solved = _calibration(lams, discount, depth, keep)
    index = np.full((num_pulls + 1, num_pulls + 1), np.nan)
    error = 0.0
    for m in range(2, keep + 1):
        d, dd = solved[m]
        # D >= 0 at lam = 0 (Q >= 0) and D < 0 at lam = 1 (mu < 1): a sign change in every column.
        cell = np.minimum((d >= 0.0).sum(axis=0) - 1, grid - 1)
        cols = np.arange(d.shape[1])
        lo, hi = lams[cell], lams[cell + 1]
        d0, d1 = d[cell, cols], d[cell + 1, cols]
        upper = lo + d0 * (hi - lo) / np.where(d0 > d1, d0 - d1, 1.0)
        lower = np.maximum(lo - d0 / dd[cell, cols], hi - d1 / dd[cell + 1, cols])
        lower = np.minimum(lower, upper)
        s = np.arange(m - 1)  # a - 1
        index[s, m - 2 - s] = 0.5 * (lower + upper)
        error = max(error, float(np.max(upper - lower)) / 2.0)
    index.flags.writeable = False  # shared by every caller through the cache
    return GittinsTable(index, error, float(discount), int(depth))


def _argmax_random_ties(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax with ties broken uniformly at random."""
    noise = rng.random(scores.shape) * 1e-9
    best = scores.max(axis=1, keepdims=True)
    return np.argmax(np.where(scores >= best - 1e-12, 1.0 + noise, 0.0), axis=1)


def run_bandit_strategy(name: str, means: np.ndarray, num_pulls: int, seed: int = 0,
                        epsilon: float = 0.1, discount: float | None = None) -> np.ndarray:
    """Total reward of one classic strategy on each of ``M`` bandits (vectorized over trials).

    Strategies (``s_a`` successes and ``f_a`` failures of arm ``a`` so far, ``c_a = s_a + f_a``):

    * ``random``: a uniform arm every pull;
    * ``greedy``: the highest posterior mean ``(s_a + 1) / (c_a + 2)`` (Beta(1, 1) prior);
    * ``epsilon_greedy``: a uniform arm with probability ``epsilon``, else greedy;
    * ``ucb1`` (Auer et al. 2002): each arm once, then ``argmax s_a / c_a + sqrt(2 ln t / c_a)``;
    * ``thompson`` (Thompson 1933): a draw ``theta_a ~ Beta(s_a + 1, f_a + 1)``, argmax;
    * ``gittins`` (Gittins 1979): the highest Gittins index ``G(s_a, f_a)`` at ``discount``
      (default ``gittins_discount(num_pulls) = 1 - 1/n``), from ``gittins_index_table``: the
      Bayes-optimal policy of the discounted infinite-horizon problem, a strong (not optimal)
      policy for the trial's ``n`` undiscounted pulls.

    Ties are broken at random.

    Args:
      name: one of the strategies above.
      means: ``[M, k]`` arm means.
      num_pulls: ``n``.
      seed: NumPy seed of the rewards and the strategies' randomness.
      epsilon: for ``epsilon_greedy``.
      discount: for ``gittins``.

    Returns:
      ``[M]`` float64 total rewards.
    """
    means = np.asarray(means, np.float64)
    m, k = means.shape
    rng = np.random.default_rng(seed)
    succ = np.zeros((m, k))
    count = np.zeros((m, k))
    total = np.zeros(m)
    rows = np.arange(m)
    if name == "gittins":
        gamma = gittins_discount(num_pulls) if discount is None else discount
        table = gittins_index_table(num_pulls, gamma).index
    for t in range(num_pulls):
        if name == "random":
            arm = rng.integers(0, k, size=m)
        elif name == "greedy":
            arm = _argmax_random_ties((succ + 1.0) / (count + 2.0), rng)
        elif name == "epsilon_greedy":
            arm = _argmax_random_ties((succ + 1.0) / (count + 2.0), rng)
            explore = rng.random(m) < epsilon
            arm = np.where(explore, rng.integers(0, k, size=m), arm)
        elif name == "ucb1":
            if t < k:
                arm = np.full(m, t)
            else:
                score = succ / count + np.sqrt(2.0 * np.log(t) / count)
                arm = _argmax_random_ties(score, rng)
        elif name == "thompson":
            arm = _argmax_random_ties(rng.beta(succ + 1.0, count - succ + 1.0), rng)
        elif name == "gittins":
            s = succ.astype(np.int64)
            arm = _argmax_random_ties(table[s, count.astype(np.int64) - s], rng)
        else:
            raise ValueError(f"`name` must be one of {BANDIT_BASELINES}, got {name!r}")
        reward = (rng.random(m) < means[rows, arm]).astype(np.float64)
        succ[rows, arm] += reward
        count[rows, arm] += 1.0
        total += reward
    return total


BANDIT_BASELINES = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson", "gittins")


def bandit_baselines(means: np.ndarray, num_pulls: int, seed: int = 0, epsilon: float = 0.1,
                     discount: float | None = None) -> dict[str, np.ndarray]:
    """Every strategy of ``run_bandit_strategy`` on the same bandits: name -> ``[M]`` totals."""
    return {name: run_bandit_strategy(name, means, num_pulls, seed=seed, epsilon=epsilon,
                                      discount=discount)
            for name in BANDIT_BASELINES}


def register() -> None:
    """Registers ``metarl_tf/BernoulliBandit-v0`` with gymnasium; safe to call twice."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="metarl_tf.tasks.bandits:BanditEnv")


register()
