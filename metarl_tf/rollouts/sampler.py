"""Collects N episodes per task for a meta-batch of tasks with gymnasium's vector API.

The sub-environments of a ``gymnasium.vector.VectorEnv`` (``SyncVectorEnv``, or ``AsyncVectorEnv``
for one process per environment) serve ``(task, episode)`` slots in waves: slot ``i`` of the
``T * N`` needed belongs to task ``i % T``, and a wave fills all ``E`` sub-environments at once. Each
wave sets the sub-environments' tasks (``set_attr("task", ...)``), resets them, and steps them
together for at most ``horizon`` steps, asking the policy for all ``E`` actions in one call; a
sub-environment whose episode ended keeps being stepped (the vector env auto-resets it) but its steps
are masked out. When ``E`` is a multiple of ``T`` every sub-environment keeps its task across waves.

The result has fixed shapes ``[T, N, H, ...]`` whatever the episode lengths, so a compiled train step
never retraces. In error messages "step k" is the k-th ``step`` call of an episode (1-based): the
reward of step k sits at time index ``k - 1`` of ``Episodes``.

Given ``task_keys`` (integer keys of the tasks, e.g. their indices in the meta-batch), every episode
is seeded by ``(seed, task key, episode index)`` alone: its sub-environment's reset
(``episode_seed``) and, for a keyed policy (``policy_from_params(..., keyed=True)``), its action
noise. The episodes then do not depend on which sub-environment, wave or process runs them, which
is what lets ``RaySampler`` (``metarl_tf.rollouts.ray_sampler``) split a meta-batch over workers
and still return exactly the local sampler's episodes.

Example::

    tasks = PointNavTasks()
    envs = make_vector_env(tasks.make_env, num_envs=40)          # sub-envs wrapped in TaskEnv
    policy = policy_from_params(policy_apply_fn(model), params, seed=0)   # params: [T, ...] each
    episodes = collect_episodes(envs, policy, tasks.sample(40, seed=0), episodes_per_task=20,
                                horizon=100, seed=0)               # Episodes of [40, 20, 100, ...]
"""
from __future__ import annotations

import itertools
import warnings
from typing import Callable, Protocol, Sequence

import gymnasium
import numpy as np
import tensorflow as tf

from metarl_tf.networks.policies import (categorical_sample, gaussian_sample, split_gaussian)
from metarl_tf.rollouts.episodes import Episodes


class PolicyFn(Protocol):
    """Maps the observations of all sub-environments to their actions.

    Args:
      observations: ``[E, *obs_shape]`` float32, one row per sub-environment.
      task_ids: ``[E]`` int32, the index (into the collected ``tasks``) of each row's task; a
        policy with task-batched parameters ``[T, ...]`` picks row ``e``'s parameters with it.

    Returns:
      ``[E, *act_shape]`` actions (NumPy or tensor).

    A keyed policy also has ``start_wave(task_keys [E], episodes [E], horizon)``, which
    ``collect_episodes`` calls before each wave when given ``task_keys``: the noise of row ``e`` at
    step ``h`` of the wave is then a function of ``(seed, task_keys[e], episodes[e], h)`` only.
    """

    def __call__(self, observations: np.ndarray, task_ids: np.ndarray):
        ...


def episode_seed(seed: int, task_key: int, episode: int, stream: int = 0) -> int:
    """A 31-bit seed for one episode: a function of ``(seed, task_key, episode, stream)`` only.

    ``stream`` 0 seeds the environment's reset, 1 the policy's action noise.
    """
    entropy = [int(v) % 2 ** 32 for v in (seed, task_key, episode, stream)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


class EnvStepError(RuntimeError):
    """An environment raised during a rollout; the message names its task and step."""


class EnvFaults:
    """Counts the environment faults ``collect_episodes`` recovered from (and keeps their messages).

    A fault is an environment that raised in ``reset``/``step``/``set_attr``, returned a NaN/inf
    observation or reward, or whose ``AsyncVectorEnv`` worker process died. Learners hold one and
    report ``count`` as the ``env_faults`` metric (TensorBoard). ``count`` only grows.
    """

    def __init__(self):
        self.count = 0
        self.messages: list[str] = []

    def record(self, message: str) -> None:
        self.count += 1
        self.messages.append(message)


class _Fault(Exception):
    """Internal: a wave hit an environment fault; ``error`` is what to raise when out of retries."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def restart_vector_env(vector_env: gymnasium.vector.VectorEnv) -> None:
    """Closes and rebuilds ``vector_env``'s sub-environments in place (new worker processes for an
    ``AsyncVectorEnv``), from the factories it was built with."""
    try:
        if isinstance(vector_env, gymnasium.vector.AsyncVectorEnv):
            vector_env.close(terminate=True)
        else:
            vector_env.close()
    except Exception:  # noqa: BLE001 -- a broken env may fail to close; it is replaced below
        pass
    vector_env.closed = False     # __init__ checks that the env runs while it builds the workers
    if isinstance(vector_env, gymnasium.vector.AsyncVectorEnv):
        gymnasium.vector.AsyncVectorEnv.__init__(
            vector_env, vector_env.env_fns, shared_memory=vector_env.shared_memory,
            copy=vector_env.copy, context=vector_env.context, daemon=vector_env.daemon,
            worker=vector_env.worker, observation_mode=vector_env.observation_mode,
            autoreset_mode=vector_env.autoreset_mode)
    elif isinstance(vector_env, gymnasium.vector.SyncVectorEnv):
        gymnasium.vector.SyncVectorEnv.__init__(
            vector_env, vector_env.env_fns, copy=vector_env.copy,
            observation_mode=vector_env.observation_mode, autoreset_mode=vector_env.autoreset_mode)
    else:
        raise TypeError(f"cannot restart a {type(vector_env).__name__}; use SyncVectorEnv or "
                        "AsyncVectorEnv (make_vector_env)")


class TaskEnv(gymnasium.Wrapper):
    """Gives a task environment a settable ``task`` attribute and error reports with task and step.

    The wrapped environment must implement ``set_task(task)`` (``get_task()`` optional); the
    attribute lets ``vector_env.set_attr("task", [task_0, task_1, ...])`` give every sub-environment
    its own task, with ``SyncVectorEnv`` and ``AsyncVectorEnv`` alike. An exception in ``reset`` or
    ``step`` is re-raised as ``EnvStepError("task <task>, step <k>: <Type>: <message>")``.
    """

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        if not callable(getattr(env.unwrapped, "set_task", None)):
            raise TypeError(f"{type(env.unwrapped).__name__} has no `set_task(task)` method; "
                            "a task environment needs one")
        self._task = None
        self._steps = 0

    @property
    def task(self):
        return self._task

    @task.setter
    def task(self, value):
        self.env.unwrapped.set_task(value)
        self._task = value

    def reset(self, *, seed=None, options=None):
        self._steps = 0
        try:
            return self.env.reset(seed=seed, options=options)
        except Exception as err:  # re-raised with context, never swallowed
            raise EnvStepError(f"task {_describe(self._task)}, reset: {type(err).__name__}: "
                               f"{err}") from err

    def step(self, action):
        self._steps += 1
        try:
            return self.env.step(action)
        except Exception as err:  # re-raised with context, never swallowed
            raise EnvStepError(f"task {_describe(self._task)}, step {self._steps}: "
                               f"{type(err).__name__}: {err}") from err


def _describe(task) -> str:
    if isinstance(task, np.ndarray):
        return np.array2string(task, precision=4, separator=", ")
    return repr(task)


def make_vector_env(env_fn: Callable[[], gymnasium.Env] | str, num_envs: int,
                    asynchronous: bool = False, context: str | None = None,
                    **make_kwargs) -> gymnasium.vector.VectorEnv:
    """A vector env of ``num_envs`` task environments, each wrapped in ``TaskEnv``.

    Args:
      env_fn: a no-argument environment factory, or a gymnasium id (``make_kwargs`` go to
        ``gymnasium.make``).
      num_envs: number of sub-environments ``E``.
      asynchronous: one subprocess per sub-environment (``AsyncVectorEnv``) instead of stepping them
        in this process (``SyncVectorEnv``).
      context: multiprocessing start method for ``AsyncVectorEnv`` (default: the platform's).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"`num_envs` must be an integer >= 1, got {num_envs!r}")
    if isinstance(env_fn, str):
        env_id = env_fn
        env_fn = lambda: gymnasium.make(env_id, **make_kwargs)  # noqa: E731
    elif make_kwargs:
        raise ValueError("keyword arguments for gymnasium.make need a gymnasium id as `env_fn`")
    fns = [lambda: TaskEnv(env_fn()) for _ in range(num_envs)]
    if asynchronous:
        return gymnasium.vector.AsyncVectorEnv(fns, context=context)
    return gymnasium.vector.SyncVectorEnv(fns)


def collect_episodes(vector_env: gymnasium.vector.VectorEnv, policy_fn: PolicyFn,
                     tasks: Sequence, episodes_per_task: int, horizon: int,
                     seed: int | None = None, max_env_faults: int = 3,
                     faults: EnvFaults | None = None,
                     task_keys: Sequence[int] | None = None) -> Episodes:
    """Runs ``episodes_per_task`` episodes of at most ``horizon`` steps for every task.

    Args:
      vector_env: sub-environments with a settable ``task`` attribute (``make_vector_env``).
      policy_fn: ``(observations [E, ...], task_ids [E]) -> actions [E, ...]`` (``PolicyFn``).
      tasks: the ``T`` tasks (a sequence, or an array whose first axis indexes tasks).
      episodes_per_task: ``N``.
      horizon: ``H``; an episode longer than this is cut (the sub-env's own ``TimeLimit`` may end it
        earlier).
      seed: passed to the first ``reset`` (gymnasium seeds sub-env ``e`` with ``seed + e``).
      max_env_faults: environment faults (an env raising, a NaN/inf observation or reward, a dead
        ``AsyncVectorEnv`` worker) tolerated in this call. On each, the vector env is restarted
        (``restart_vector_env``), the fault recorded in ``faults``, and the wave's episodes
        re-collected from scratch (reset seeded ``seed + 7919 * fault`` when ``seed`` is given), so
        the result stays well-formed. Fault ``max_env_faults + 1`` raises. 0: raise on the first.
      faults: an ``EnvFaults`` counter to record recovered faults in (e.g. the learner's).
      task_keys: one integer per task; given, episode ``n`` of task ``t`` resets its
        sub-environment with ``episode_seed(seed, task_keys[t], n)`` (every wave, and the same
        again when a fault re-collects it) and a keyed policy draws its noise from
        ``(seed, task_keys[t], n)``: the episodes are independent of waves and processes (module
        docstring). Needs ``seed``.

    Returns:
      ``Episodes`` of NumPy arrays: observations ``[T, N, H, obs_dim]``, actions ``[T, N, H,
      act_dim]`` (``[T, N, H]`` int32 for a ``Discrete`` action space), rewards and mask
      ``[T, N, H]``; padding is zero.

    Raises:
      RuntimeError: an environment raised more than ``max_env_faults`` times (the message names
        the tasks, episodes and step of the last fault).
      ValueError: a NaN/inf reward or observation more than ``max_env_faults`` times, or a policy
        output of the wrong shape.
    """
    if isinstance(max_env_faults, bool) or not isinstance(max_env_faults, int) or \
            max_env_faults < 0:
        raise ValueError(f"`max_env_faults` must be an integer >= 0, got {max_env_faults!r}")
    for name, value in (("episodes_per_task", episodes_per_task), ("horizon", horizon)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    if not isinstance(vector_env, gymnasium.vector.VectorEnv):
        raise TypeError(f"`vector_env` must be a gymnasium.vector.VectorEnv, got "
                        f"{type(vector_env).__name__}")
    try:  # set_attr would silently CREATE a missing attribute: check that it exists first
        vector_env.get_attr("task")
    except Exception as err:
        raise TypeError("the sub-environments of `vector_env` need a settable `task` attribute; "
                        "build it with make_vector_env (TaskEnv maps `task` to set_task) "
                        f"[{type(err).__name__}: {err}]") from err
    tasks = list(tasks)
    if not tasks:
        raise ValueError("`tasks` must contain at least one task")
    if task_keys is not None:
        task_keys = [int(k) for k in task_keys]
        if len(task_keys) != len(tasks):
            raise ValueError(f"`task_keys` must have one key per task ({len(tasks)}), got "
                             f"{len(task_keys)}")
        if seed is None:
            raise ValueError("`task_keys` needs a `seed` (episodes are seeded from (seed, task "
                             "key, episode))")
    num_tasks, num_envs = len(tasks), vector_env.num_envs
    obs_space, act_space = vector_env.single_observation_space, vector_env.single_action_space
    discrete = isinstance(act_space, gymnasium.spaces.Discrete)
    act_shape = () if discrete else tuple(act_space.shape)
    obs_shape = tuple(obs_space.shape)

    total = num_tasks * episodes_per_task
    observations = np.zeros((total, horizon) + obs_shape, np.float32)
    actions = np.zeros((total, horizon) + act_shape, np.int32 if discrete else np.float32)
    rewards = np.zeros((total, horizon), np.float32)
    mask = np.zeros((total, horizon), np.float32)

    assigned = [None] * num_envs      # task index each sub-env currently holds
    faults_here = 0
    for wave in itertools.count():
        first = wave * num_envs
        if first >= total:
            break
        slots = np.arange(first, first + num_envs)
        while True:
            try:
                reset_seed = seed if wave == 0 else None
                if faults_here and seed is not None:
                    reset_seed = seed + 7919 * faults_here
                if task_keys is not None:   # every slot seeded by (seed, task key, episode)
                    reset_seed = [episode_seed(seed, task_keys[i % num_tasks], i // num_tasks)
                                  for i in slots]
                    start_wave = getattr(policy_fn, "start_wave", None)
                    if start_wave is not None:
                        start_wave([task_keys[i % num_tasks] for i in slots],
                                   [int(i) // num_tasks for i in slots], horizon)
                assigned = _wave(vector_env, policy_fn, tasks, slots, total, num_tasks, num_envs,
                                 act_shape, horizon, wave, reset_seed, assigned,
                                 observations, actions, rewards, mask)
                break
            except _Fault as fault:
                faults_here += 1
                if faults_here > max_env_faults:
                    err = fault.error
                    raise type(err)(f"{err} [environment fault {faults_here} in this rollout, "
                                     f"more than max_env_faults={max_env_faults}]"
                                     ) from err.__cause__
                if faults is not None:
                    faults.record(str(fault.error))
                warnings.warn(f"environment fault {faults_here}/{max_env_faults}, restarting the "
                              f"sub-environments and re-collecting wave {wave}: {fault.error}",
                              RuntimeWarning, stacklevel=2)
                restart_vector_env(vector_env)
                assigned = [None] * num_envs
                live = slots[slots < total]
                for buf in (observations, actions, rewards, mask):
                    buf[live] = 0

    def by_task(x):  # slot i = episode i // T of task i % T  ->  [T, N, ...]
        x = x.reshape((episodes_per_task, num_tasks) + x.shape[1:])
        return np.ascontiguousarray(np.swapaxes(x, 0, 1))

    return Episodes(by_task(observations), by_task(actions), by_task(rewards), by_task(mask))


def _wave(vector_env, policy_fn, tasks, slots, total, num_tasks, num_envs, act_shape, horizon,
          wave, reset_seed, assigned, observations, actions, rewards, mask):
    """Collects one wave into the buffers; an environment fault raises ``_Fault``.

    Returns the task index each sub-environment holds afterwards."""
    live_slots = slots < total
    # Slot i is task i % T; idle slots past the end (last wave) run too and are discarded.
    task_ids = (slots % num_tasks).astype(np.int32)
    if [int(t) for t in task_ids] != assigned:
        try:
            vector_env.set_attr("task", [tasks[t] for t in task_ids])
        except Exception as err:
            raise _fault(RuntimeError(f"could not set the tasks {task_ids.tolist()} on the "
                                      f"sub-environments: {type(err).__name__}: {err}"), err) from err
        assigned = [int(t) for t in task_ids]
    context = lambda step: (f"wave {wave}, step {step}, tasks {task_ids.tolist()} "  # noqa: E731
                            f"(episodes {(slots // num_tasks).tolist()})")
    try:
        obs, _ = vector_env.reset(seed=reset_seed)
    except Exception as err:
        raise _fault(RuntimeError(f"environment raised on reset ({context(0)}): "
                                  f"{type(err).__name__}: {err}"), err) from err
    alive = live_slots.copy()
    for h in range(horizon):
        obs = np.asarray(obs, np.float32)
        try:
            _check_finite(obs[alive], "observation", task_ids[alive], slots[alive], num_tasks,
                          f"after step {h}" if h else "on reset")
        except ValueError as err:
            raise _fault(err, None) from err
        action = np.asarray(policy_fn(obs, task_ids))
        if action.shape != (num_envs,) + act_shape:
            raise ValueError(f"policy_fn returned actions of shape {action.shape}, expected "
                             f"{(num_envs,) + act_shape} for {num_envs} sub-environments")
        try:
            obs_next, reward, terminated, truncated, _ = vector_env.step(action)
        except Exception as err:  # includes EOFError/BrokenPipeError from a dead worker process
            raise _fault(RuntimeError(f"environment raised during the rollout ({context(h + 1)}): "
                                      f"{type(err).__name__}: {err}"), err) from err
        reward = np.asarray(reward, np.float32)
        try:
            _check_finite(reward[alive], "reward", task_ids[alive], slots[alive], num_tasks,
                          f"at step {h + 1}")
        except ValueError as err:
            raise _fault(err, None) from err
        live = np.flatnonzero(alive)
        observations[slots[live], h] = obs[live]
        actions[slots[live], h] = action[live]
        rewards[slots[live], h] = reward[live]
        mask[slots[live], h] = 1.0
        alive &= ~(np.asarray(terminated) | np.asarray(truncated))
        obs = obs_next
        if not alive.any():
            break
    return assigned


def _fault(error: Exception, cause: BaseException | None) -> _Fault:
    error.__cause__ = cause
    return _Fault(error)


def _check_finite(values, what, task_ids, slots, num_tasks, when):
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"non-finite {what} (NaN or inf) from the environment of task "
                         f"{int(task_ids[i])}, episode {int(slots[i]) // num_tasks}, {when}: "
                         f"{values[i]!r}")


BACKENDS = ("auto", "numpy", "tf")


def policy_from_params(apply_fn: Callable, params: Sequence[tf.Tensor],
                       distribution: str = "gaussian", seed: int = 0,
                       deterministic: bool = False, backend: str = "auto",
                       keyed: bool = False) -> PolicyFn:
    """A ``PolicyFn`` that samples from a policy with task-batched parameters.

    Two backends compute the same policy. ``"tf"`` runs ``apply_fn`` and the draw as one traced
    TensorFlow function per call. ``"numpy"`` runs the NumPy mirror of a Gaussian MLP
    (``apply_fn.numpy_apply``, which ``policy_apply_fn`` provides for ``gaussian_mlp_policy`` with
    a mirrored activation): next to a fast simulator one TF call per vector step (~1.5 ms on one
    CPU thread, most of it dispatch) costs more than the environments, the NumPy forward ~0.15 ms.
    ``"auto"`` (default) takes NumPy where a mirror exists and TF otherwise (categorical policies,
    other activations, arbitrary ``apply_fn``).

    Seed contract: for a given backend, ``seed`` fixes the whole stream of actions (the same seed
    and observations give the same actions). The streams of the two backends differ: ``"tf"``
    draws ``mean + std * eps`` with ``eps`` from TF's stateless Philox (a fresh key per call from
    a ``tf.random.Generator``), ``"numpy"`` draws ``eps`` from NumPy's ``Generator(Philox(seed))``;
    both are ``N(mean, diag(std^2))``. ``deterministic=True`` returns the mean on both (equal to
    float32 rounding, ~1e-6).

    Args:
      apply_fn: ``(params, obs [T', M, obs_dim]) -> [T', M, out]`` (``policy_apply_fn(model)``).
      params: task-batched parameters ``[T, ...]`` each (index ``t`` = task ``t`` of the rollout).
      distribution: ``"gaussian"`` (output = ``concat([mean, log_std])``) or ``"categorical"``
        (output = logits).
      seed: seeds the noise stream (see above).
      deterministic: act with the mean / the most likely action instead of sampling.
      backend: ``"auto"``, ``"numpy"`` or ``"tf"``.
      keyed: noise keyed by episode instead of one stream: the policy gets ``start_wave`` (see
        ``PolicyFn``) and row ``e``'s noise at step ``h`` of a wave is draw ``h`` of
        ``Generator(Philox(episode_seed(seed, key_e, episode_e, 1)))``. NumPy backend only (a
        Gaussian MLP with a NumPy mirror).

    Returns:
      A callable ``(observations [E, obs_dim], task_ids [E]) -> np.ndarray actions``; each
      sub-environment row is evaluated with its task's parameters. The callable's ``backend``
      attribute says which backend it uses.

    Raises:
      ValueError: an unknown ``distribution`` or ``backend``, or ``backend="numpy"`` for a policy
        without a NumPy mirror.
    """
    if distribution not in ("gaussian", "categorical"):
        raise ValueError(f"`distribution` must be 'gaussian' or 'categorical', got {distribution!r}")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    numpy_apply = getattr(apply_fn, "numpy_apply", None) if distribution == "gaussian" else None
    if backend == "numpy" and numpy_apply is None:
        raise ValueError("`backend='numpy'` needs a Gaussian MLP policy with a NumPy mirror "
                         "(policy_apply_fn(gaussian_mlp_policy(...)) with a linear, relu, tanh, "
                         "sigmoid, elu, softplus or silu activation); use backend='tf' or 'auto'")
    if keyed and (backend == "tf" or numpy_apply is None):
        raise ValueError("`keyed=True` needs the NumPy backend: a Gaussian MLP policy with a NumPy "
                         "mirror (policy_apply_fn(gaussian_mlp_policy(...)))")
    if backend != "tf" and numpy_apply is not None:
        policy = _numpy_gaussian_policy(numpy_apply, params, seed, deterministic, keyed)
        policy.backend = "numpy"
        return policy
    policy = _tf_policy(apply_fn, params, distribution, seed, deterministic)
    policy.backend = "tf"
    return policy


def _numpy_gaussian_policy(numpy_apply, params, seed, deterministic, keyed=False):
    """The NumPy backend of ``policy_from_params`` for a Gaussian MLP."""
    weights = [np.asarray(p, np.float32) for p in params]
    rng = np.random.Generator(np.random.Philox(seed))
    cache = {"ids": None, "rows": None}
    wave = {"noise": None, "step": 0}

    def policy(observations, task_ids):
        ids = np.asarray(task_ids, np.int32)
        if cache["ids"] is None or not np.array_equal(ids, cache["ids"]):
            cache["rows"] = [w[ids] for w in weights]                   # [E, ...] per variable
            cache["ids"] = ids.copy()
        obs = np.asarray(observations, np.float32)[:, None]             # [E, 1, obs_dim]
        mean, log_std = numpy_apply(cache["rows"], obs)
        mean = mean[:, 0]
        if deterministic:
            return mean
        if keyed:
            if wave["noise"] is None or wave["step"] >= wave["noise"].shape[1]:
                raise RuntimeError("a keyed policy needs start_wave(task_keys, episodes, horizon) "
                                   "before each wave of at most `horizon` steps "
                                   "(collect_episodes(..., task_keys=...) calls it)")
            eps = wave["noise"][:, wave["step"]]
            wave["step"] += 1
        else:
            eps = rng.standard_normal(mean.shape, dtype=np.float32)
        return mean + np.exp(log_std) * eps

    def start_wave(task_keys, episodes, horizon):
        act_dim = weights[-1].shape[-1]                                 # log_std [T, act_dim]
        wave["noise"] = np.stack([
            np.random.Generator(np.random.Philox(episode_seed(seed, k, n, 1))).standard_normal(
                (int(horizon), act_dim), dtype=np.float32)
            for k, n in zip(task_keys, episodes)])
        wave["step"] = 0

    if keyed:
        policy.start_wave = start_wave
    return policy


class LocalSampler:
    """Collects a meta-batch on a local vector env: the sampler protocol the learners call.

    ``collect(apply_fn, distribution, params, tasks, episodes_per_task, horizon, seed, ...)`` is
    ``collect_episodes`` with ``policy_from_params(apply_fn, params, ...)``; ``RaySampler`` has the
    same method. With ``keyed=True`` the episodes are seeded per ``(seed, task index, episode)``
    (``task_keys``), so a run gives the same episodes as one sampling on Ray.

    Args:
      vector_env: sub-environments from ``make_vector_env``.
      keyed: seed per episode (NumPy Gaussian policies only), else one noise stream per call.
    """

    def __init__(self, vector_env: gymnasium.vector.VectorEnv, keyed: bool = False):
        if not isinstance(vector_env, gymnasium.vector.VectorEnv):
            raise TypeError(f"`vector_env` must be a gymnasium.vector.VectorEnv, got "
                            f"{type(vector_env).__name__}")
        self.vector_env = vector_env
        self.keyed = bool(keyed)

    def collect(self, apply_fn, distribution: str, params, tasks, episodes_per_task: int,
                horizon: int, seed: int, deterministic: bool = False,
                faults: EnvFaults | None = None, max_env_faults: int = 3) -> Episodes:
        """``episodes_per_task`` episodes of at most ``horizon`` steps for every task
        (``Episodes`` ``[T, N, H, ...]``); ``params`` are task-batched ``[T, ...]``."""
        tasks = list(tasks)
        policy = policy_from_params(apply_fn, params, distribution, seed=seed,
                                    deterministic=deterministic, keyed=self.keyed)
        return collect_episodes(self.vector_env, policy, tasks, episodes_per_task, horizon,
                                seed=seed, faults=faults, max_env_faults=max_env_faults,
                                task_keys=range(len(tasks)) if self.keyed else None)

    def close(self) -> None:
        self.vector_env.close()


def _tf_policy(apply_fn, params, distribution, seed, deterministic):
    """The TensorFlow backend of ``policy_from_params``."""
    params = [tf.convert_to_tensor(p) for p in params]
    generator = tf.random.Generator.from_seed(seed, alg="philox")

    def act(obs, rows):
        out = apply_fn(rows, obs[:, None])[:, 0]                 # [E, out], row e with its task
        step_seed = generator.make_seeds(1)[:, 0]
        if distribution == "gaussian":
            mean, log_std = split_gaussian(out)
            return mean if deterministic else gaussian_sample(mean, log_std, step_seed)
        if deterministic:
            return tf.argmax(out, axis=-1, output_type=tf.int32)
        return categorical_sample(out, step_seed)

    # Per-call overhead matters next to fast simulators: the function is traced once (a concrete
    # function, no signature lookup per call) and each wave's per-row parameters gathered once.
    cache = {"fn": None, "ids": None, "rows": None}

    def policy(observations, task_ids):
        obs = tf.convert_to_tensor(observations, params[0].dtype)
        ids = np.asarray(task_ids, np.int32)
        if cache["ids"] is None or not np.array_equal(ids, cache["ids"]):
            cache["rows"] = [tf.gather(p, ids) for p in params]          # [E, ...] per variable
            cache["ids"] = ids.copy()
        if cache["fn"] is None:
            specs = [tf.TensorSpec([None] + list(r.shape[1:]), r.dtype) for r in cache["rows"]]
            cache["fn"] = tf.function(act).get_concrete_function(
                tf.TensorSpec([None] + list(obs.shape[1:]), obs.dtype), specs)
        return cache["fn"](obs, cache["rows"]).numpy()

    return policy
