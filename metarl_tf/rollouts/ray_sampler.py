"""Episode collection on Ray actors: the local sampler's episodes, stepped on other cores or hosts.

The learner stays one TensorFlow process; only environment stepping moves. One collection::

    params_ref = ray.put(params)                    # task-batched [T, ...]: broadcast ONCE
    tasks 0..T-1 -> W contiguous chunks, chunk w -> actor w
    actor w: rows = params[chunk]; collect_episodes(its vector env, keyed NumPy policy,
             tasks[chunk], N, H, seed, task_keys=chunk)        -> Episodes [T_w, N, H, ...]
    concatenate the chunks in task order                       -> Episodes [T, N, H, ...]

Every episode is seeded by ``(seed, task index, episode)`` (``collect_episodes``' ``task_keys``),
so the result equals ``LocalSampler(vector_env, keyed=True).collect(...)`` on the same seed and
parameters whatever the number of workers, and a chunk collected again is the same chunk. An actor
that dies (its process killed, its node lost: ``ray.exceptions.RayActorError``) is replaced by a
fresh one and its chunk collected again, up to ``max_worker_restarts`` times per collection; each
replacement is recorded in the ``faults`` counter (the learner's ``env_faults`` metric) like an
environment fault. Environment faults inside an actor are handled there, by ``collect_episodes``
(``max_env_faults``); one it cannot recover from is raised here as its own exception type.

Ray is optional (``pip install 'metarl-tf[ray]'``). ``RaySampler`` connects to a running cluster
(``address="auto"`` or ``"ray://host:10001"``) or starts one inside this process with ``num_cpus``
CPUs (``ray.init``); see ``docs/METAWORLD.md`` for a two-host cluster started with ``ray start``.

Example::

    sampler = RaySampler(ML10Tasks().make_env, num_workers=2, num_cpus=2)
    episodes = sampler.collect(apply_fn, "gaussian", params, tasks, episodes_per_task=10,
                               horizon=500, seed=0)            # Episodes [20, 10, 500, ...]
"""
from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as _err:  # an optional extra
    raise ImportError("metarl_tf.rollouts.ray_sampler needs Ray: pip install 'metarl-tf[ray]' "
                      f"(ray==2.60.0) [{type(_err).__name__}: {_err}]") from _err

from metarl_tf.rollouts.episodes import Episodes
from metarl_tf.rollouts.sampler import EnvFaults

# Environment variables of the actors' processes: one thread each (the actor is one CPU's worth
# of environment stepping; BLAS or TF thread pools would only contend with the learner).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2", "MUJOCO_GL": "disable"}


class _Worker:
    """A Ray actor: one vector env of ``num_envs`` sub-environments, collecting task chunks."""

    def __init__(self, env_fn: Callable, num_envs: int):
        from metarl_tf.rollouts.sampler import make_vector_env
        self.vector_env = make_vector_env(env_fn, num_envs=num_envs)

    def pid(self) -> int:
        return os.getpid()

    def collect(self, apply_fn, distribution, params, task_ids, tasks, episodes_per_task, horizon,
                seed, deterministic, max_env_faults):
        from metarl_tf.rollouts.sampler import collect_episodes, policy_from_params
        rows = [np.asarray(p)[task_ids] for p in params]          # this chunk's parameters
        policy = policy_from_params(apply_fn, rows, distribution, seed=seed,
                                    deterministic=deterministic, backend="numpy", keyed=True)
        faults = EnvFaults()
        episodes = collect_episodes(self.vector_env, policy, tasks, episodes_per_task, horizon,
                                    seed=seed, max_env_faults=max_env_faults, faults=faults,
                                    task_keys=task_ids)
        return tuple(episodes), faults.messages


def chunks(num_tasks: int, num_workers: int) -> list[list[int]]:
    """Task indices ``0..num_tasks-1`` in at most ``num_workers`` contiguous chunks whose sizes
    differ by at most one (the first ones larger); no empty chunk."""
    used = min(num_tasks, num_workers)
    bounds = [round(w * num_tasks / used) for w in range(used + 1)]
    return [list(range(bounds[w], bounds[w + 1])) for w in range(used)]


class RaySampler:
    """Collects meta-batches of episodes on Ray actors (the ``LocalSampler`` protocol).

    Args:
      env_fn: a no-argument, picklable environment factory (e.g. ``MetaWorldTasks.make_env``); each
        actor builds ``envs_per_worker`` sub-environments from it, wrapped like ``make_vector_env``.
      num_workers: actors (each takes one CPU).
      envs_per_worker: sub-environments per actor (default: enough for one wave of the first
        collection's chunk, ``ceil(T / num_workers)``).
      address: a running cluster (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``);
        ``None`` starts a local one inside this process (unless Ray is already initialised, which
        is then used as it is).
      num_cpus: CPUs of the local cluster started here (``None``: Ray counts the machine's). Not
        with ``address``.
      max_worker_restarts: actor deaths recovered per collection before raising.

    The policy must be a Gaussian MLP with a NumPy forward (``policy_apply_fn(gaussian_mlp_policy
    (...))``): actors act with NumPy, no TensorFlow op per step.
    """

    def __init__(self, env_fn: Callable, num_workers: int = 2, envs_per_worker: int | None = None,
                 address: str | None = None, num_cpus: int | None = None,
                 max_worker_restarts: int = 3):
        if not callable(env_fn):
            raise TypeError(f"`env_fn` must be a callable returning an environment, got "
                            f"{type(env_fn).__name__}")
        for name, value, allow_none in (("num_workers", num_workers, False),
                                        ("envs_per_worker", envs_per_worker, True),
                                        ("num_cpus", num_cpus, True)):
            if value is None and allow_none:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        if isinstance(max_worker_restarts, bool) or not isinstance(max_worker_restarts, int) \
                or max_worker_restarts < 0:
            raise ValueError(f"`max_worker_restarts` must be an integer >= 0, got "
                             f"{max_worker_restarts!r}")
        if address is not None and num_cpus is not None:
            raise ValueError("`num_cpus` sizes a local cluster started here; a cluster at "
                             "`address` has its own CPUs (give one of them)")
        self.started_ray = False
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False)
            self.started_ray = True
        self.env_fn, self.num_workers = env_fn, num_workers
        self.envs_per_worker = envs_per_worker
        self.max_worker_restarts = max_worker_restarts
        self.restarts = 0                   # actors replaced, over this sampler's life
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_Worker).options(
            runtime_env={"env_vars": dict(WORKER_ENV)})
        self.workers: list = []
        if envs_per_worker is not None:
            self._start_workers()

    def _start_workers(self) -> None:
        self.workers = [self._new_worker() for _ in range(self.num_workers)]

    def _new_worker(self):
        return self._actor_cls.remote(self.env_fn, self.envs_per_worker)

    def collect(self, apply_fn, distribution: str, params, tasks, episodes_per_task: int,
                horizon: int, seed: int, deterministic: bool = False,
                faults: EnvFaults | None = None, max_env_faults: int = 3) -> Episodes:
        """``episodes_per_task`` episodes of at most ``horizon`` steps for every task on the
        actors: ``Episodes`` of NumPy arrays ``[T, N, H, ...]``, equal to the keyed local
        sampler's (module docstring). ``params`` are task-batched ``[T, ...]``.

        Raises:
          RuntimeError: more than ``max_worker_restarts`` actor deaths in this collection.
          ValueError: ``distribution`` is not ``"gaussian"`` or the policy has no NumPy forward.
        """
        if distribution != "gaussian" or getattr(apply_fn, "numpy_apply", None) is None:
            raise ValueError("RaySampler needs a Gaussian MLP policy with a NumPy forward "
                             "(policy_apply_fn(gaussian_mlp_policy(...)) with a mirrored "
                             f"activation); got distribution {distribution!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an integer, got {seed!r}")
        tasks = list(tasks)
        if not tasks:
            raise ValueError("`tasks` must contain at least one task")
        params = [np.asarray(p, np.float32) for p in params]
        if any(p.shape[0] != len(tasks) for p in params):
            raise ValueError(f"`params` must be task-batched with {len(tasks)} rows (one per "
                             f"task), got leading sizes {[p.shape[0] for p in params]}")
        if not self.workers:
            if self.envs_per_worker is None:
                self.envs_per_worker = math.ceil(len(tasks) / self.num_workers)
            self._start_workers()
        params_ref = ray.put(params)                    # one broadcast per collection
        parts = chunks(len(tasks), self.num_workers)
        args = (int(episodes_per_task), int(horizon), int(seed), bool(deterministic),
                int(max_env_faults))

        def submit(w):
            ids = parts[w]
            return self.workers[w].collect.remote(apply_fn, distribution, params_ref, ids,
                                                  [tasks[i] for i in ids], *args)

        pending = {submit(w): w for w in range(len(parts))}
        results: dict[int, tuple] = {}
        deaths = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            w = pending.pop(ref)
            try:
                arrays, messages = ray.get(ref)
            except RayActorError as err:
                deaths += 1
                if deaths > self.max_worker_restarts:
                    raise RuntimeError(
                        f"Ray worker {w} died while collecting tasks {parts[w]} ({deaths} worker "
                        f"deaths in this collection, more than max_worker_restarts="
                        f"{self.max_worker_restarts}): {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from err
                message = (f"Ray worker {w} died while collecting tasks {parts[w]}; replaced and "
                           "the tasks collected again")
                if faults is not None:
                    faults.record(message)
                try:
                    ray.kill(self.workers[w])
                except Exception:  # noqa: BLE001 -- already gone; it is replaced below
                    pass
                self.workers[w] = self._new_worker()
                self.restarts += 1
                pending[submit(w)] = w
                continue
            except RayTaskError as err:     # the actor raised: raise it as its own type here
                raise err.as_instanceof_cause() from None
            if faults is not None:
                for message in messages:
                    faults.record(f"worker {w}: {message}")
            results[w] = arrays
        fields = zip(*(results[w] for w in range(len(parts))))
        return Episodes(*(np.concatenate(field, axis=0) for field in fields))

    def worker_pids(self) -> list[int]:
        """The process ids of the current actors (after the first collection)."""
        return ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        """Stops the actors (and the local cluster, if this sampler started it)."""
        for worker in self.workers:
            try:
                ray.kill(worker)
            except Exception:  # noqa: BLE001 -- best effort: the actor may be gone
                pass
        self.workers = []
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
            self.started_ray = False


__all__ = ["RaySampler", "chunks", "WORKER_ENV"]
