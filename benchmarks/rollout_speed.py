"""Rollout collection speed on HalfCheetah vs the raw environment step rate (issue 3, "Speed").

    python benchmarks/rollout_speed.py [--envs 20] [--horizon 200] [--repeats 3] [--no-async]

Measures, alternately and best of ``--repeats`` (the machine is shared), in env steps per second:

* ``raw``: gymnasium's ``HalfCheetah-v5`` (``gymnasium.make``), ``--envs`` of them in a
  ``SyncVectorEnv`` (and ``AsyncVectorEnv``), ``--horizon`` steps of uniform random actions after a
  reset; actions are drawn outside the timed loop.
* ``task_env``: the same loop on ``metarl_tf/HalfCheetahVel-v0`` in ``make_vector_env``'s
  ``TaskEnv`` sub-environments, random actions: the cost of the task environment alone.
* ``sampler``: ``metarl_tf.rollouts.collect_episodes`` on ``metarl_tf/HalfCheetahVel-v0``,
  ``--envs`` tasks x 1 episode x ``--horizon`` steps, with a Gaussian MLP policy (100, 100)
  evaluated with task-batched parameters (``policy_from_params``), policy inference, padding and
  checks included. The policy function is traced before timing.

Two diagnostic rows locate the overhead (same ``collect_episodes``, other policies):

* ``sampler_random_policy``: pre-drawn random actions, no network: the sampler's own bookkeeping;
* ``sampler_numpy_policy``: the same Gaussian MLP and parameters evaluated in NumPy
  (``numpy_gaussian_policy`` below, checked against the TensorFlow policy's mean): a prototype of
  a faster per-step policy path for the sampler.

Prints key=value lines: ``ratio=`` is sampler / raw with the same vector env (sync; target >= 0.70),
``ratio_async=`` likewise for ``AsyncVectorEnv``; ``policy_ms_per_call`` and ``policy_share`` (of
the sampler's time) say where the rest goes. One TF thread.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "disable")  # no rendering, no display needed
import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from metarl_tf.networks import gaussian_mlp_policy, policy_apply_fn  # noqa: E402
from metarl_tf.params import FunctionalModel  # noqa: E402
from metarl_tf.rollouts import collect_episodes, make_vector_env, policy_from_params  # noqa: E402
from metarl_tf.tasks.mujoco import HalfCheetahVelTasks  # noqa: E402

ENV_ID = "metarl_tf/HalfCheetahVel-v0"


class Clock:
    """Wall time and this process's CPU time (all its threads) since construction."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, steps):
        return steps / (time.perf_counter() - self.wall), steps / (time.process_time() - self.cpu)


def raw_rate(envs, horizon, seed):
    """(wall, cpu) env steps per second of ``horizon`` vector steps with random actions."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(horizon,) + envs.action_space.shape).astype(np.float32)
    envs.reset(seed=seed)
    clock = Clock()
    for a in actions:
        envs.step(a)
    return clock.rates(horizon * envs.num_envs)


class TimedPolicy:
    """Wraps a PolicyFn and accumulates the wall time and number of its calls."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, obs, task_ids):
        t0 = time.process_time()
        out = self.fn(obs, task_ids)
        self.seconds += time.process_time() - t0
        self.calls += 1
        return out


def numpy_gaussian_policy(params, min_std=1e-6, seed=0):
    """A ``PolicyFn`` for ``gaussian_mlp_policy`` (ReLU) params ``[T, ...]``, evaluated in NumPy.

    Same math as ``gaussian_policy_apply`` + ``gaussian_sample``; the noise comes from NumPy's
    Philox generator instead of TensorFlow's stateless Philox (a different stream).
    """
    weights = [np.asarray(p) for p in params]
    rng = np.random.Generator(np.random.Philox(seed))
    floor = np.float32(np.log(min_std))
    cache = {"ids": None, "rows": None}

    def mean_of(obs, task_ids):
        ids = np.asarray(task_ids, np.int32)
        if cache["ids"] is None or not np.array_equal(ids, cache["ids"]):
            cache["rows"], cache["ids"] = [w[ids] for w in weights], ids.copy()
        rows = cache["rows"]
        h = np.asarray(obs, np.float32)[:, None, :]
        layers = (len(rows) - 1) // 2
        for j in range(layers):
            h = h @ rows[2 * j] + rows[2 * j + 1][:, None, :]
            if j < layers - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0], np.maximum(rows[-1], floor)

    def policy(obs, task_ids):
        mean, log_std = mean_of(obs, task_ids)
        return mean + np.exp(log_std) * rng.standard_normal(mean.shape, dtype=np.float32)

    policy.mean_of = mean_of
    return policy


def random_policy(act_dim, horizon, seed=0):
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(horizon, 1, act_dim)).astype(
        np.float32)
    step = {"i": 0}

    def policy(obs, task_ids):
        a = actions[step["i"] % horizon]
        step["i"] += 1
        return np.broadcast_to(a, (obs.shape[0], act_dim))

    return policy


def sampler_rate(envs, policy, tasks, horizon, seed):
    if isinstance(policy, TimedPolicy):
        policy.seconds, policy.calls = 0.0, 0
    clock = Clock()
    episodes = collect_episodes(envs, policy, tasks, episodes_per_task=1, horizon=horizon,
                                seed=seed)
    cpu = time.process_time() - clock.cpu
    wall, cpu_rate = clock.rates(float(np.sum(episodes.mask)))
    if not isinstance(policy, TimedPolicy):
        return wall, cpu_rate
    return wall, cpu_rate, policy.seconds / cpu, 1e3 * policy.seconds / max(policy.calls, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--envs", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-async", action="store_true", help="skip the AsyncVectorEnv rows")
    a = p.parse_args()

    family = HalfCheetahVelTasks()
    tasks = family.sample(a.envs, seed=0)
    model = gaussian_mlp_policy(family.obs_dim, family.act_dim, hidden=(100, 100))
    fmodel = FunctionalModel(model)
    params = fmodel.tile(fmodel.params(), a.envs)                 # [T, ...]: one row per task
    policy = TimedPolicy(policy_from_params(policy_apply_fn(model), params, seed=0))
    fast = numpy_gaussian_policy(params)
    obs = np.random.default_rng(0).normal(size=(a.envs, family.obs_dim)).astype(np.float32)
    ids = np.arange(a.envs, dtype=np.int32)
    exact = policy_from_params(policy_apply_fn(model), params, deterministic=True)(obs, ids)
    np.testing.assert_allclose(fast.mean_of(obs, ids)[0], exact, rtol=1e-4, atol=1e-5)
    rand = random_policy(family.act_dim, a.horizon)

    modes = [False] if a.no_async else [False, True]
    results = {}
    for asynchronous in modes:
        kind = "async" if asynchronous else "sync"
        vec = gymnasium.vector.AsyncVectorEnv if asynchronous else gymnasium.vector.SyncVectorEnv
        raw_envs = vec([lambda: gymnasium.make("HalfCheetah-v5") for _ in range(a.envs)])
        task_envs = make_vector_env(ENV_ID, a.envs, asynchronous=asynchronous)
        task_envs.set_attr("task", list(tasks))
        sampler_envs = make_vector_env(ENV_ID, a.envs, asynchronous=asynchronous)
        sampler_rate(sampler_envs, policy, tasks, 5, seed=0)       # trace the policy, warm up
        raw_rate(raw_envs, 5, seed=0)
        rows = {"raw": [], "task": [], "sampler": [], "random": [], "numpy": []}
        for r in range(a.repeats):                                  # alternate: shared machine
            rows["raw"].append(raw_rate(raw_envs, a.horizon, seed=r))
            rows["task"].append(raw_rate(task_envs, a.horizon, seed=r))
            rows["sampler"].append(sampler_rate(sampler_envs, policy, tasks, a.horizon, seed=r))
            rows["random"].append(sampler_rate(sampler_envs, rand, tasks, a.horizon, seed=r))
            rows["numpy"].append(sampler_rate(sampler_envs, fast, tasks, a.horizon, seed=r))
        # Best of the repeats, by wall time and (sync only: the workers of AsyncVectorEnv are other
        # processes) by this process's CPU time, which other load on the machine disturbs less.
        results[kind] = {name: (max(x[0] for x in v), max(x[1] for x in v))
                         for name, v in rows.items()}
        results[kind]["policy"] = min((x[3], x[2]) for x in rows["sampler"])   # (ms/call, share)
        for envs in (raw_envs, task_envs, sampler_envs):
            envs.close()

    print(f"envs={a.envs} horizon={a.horizon} repeats={a.repeats} policy=gaussian_mlp(100,100) "
          f"tf_threads=1 tensorflow={tf.__version__} gymnasium={gymnasium.__version__}")
    for kind, res in results.items():
        sfx = "" if kind == "sync" else "_async"
        clocks = ((0, ""), (1, "_cpu")) if kind == "sync" else ((0, ""),)
        for i, c in clocks:
            raw = res["raw"][i]
            print(f"raw{sfx}_env_steps_per{c}_s={raw:.0f}")
            print(f"task{sfx}_env_steps_per{c}_s={res['task'][i]:.0f}")
            print(f"sampler{sfx}_steps_per{c}_s={res['sampler'][i]:.0f}")
            print(f"ratio{sfx}{c}={res['sampler'][i] / raw:.3f}")
            print(f"sampler_random_policy{sfx}_steps_per{c}_s={res['random'][i]:.0f} "
                  f"ratio_random_policy{sfx}{c}={res['random'][i] / raw:.3f}")
            print(f"sampler_numpy_policy{sfx}_steps_per{c}_s={res['numpy'][i]:.0f} "
                  f"ratio_numpy_policy{sfx}{c}={res['numpy'][i] / raw:.3f}")
        print(f"policy{sfx}_cpu_ms_per_call={res['policy'][0]:.3f}")
        print(f"policy{sfx}_share_of_sampler_cpu={res['policy'][1]:.3f}")


if __name__ == "__main__":
    main()
