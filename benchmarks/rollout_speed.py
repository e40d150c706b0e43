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
  evaluated with task-batched parameters by ``policy_from_params`` as the learners call it
  (``backend="auto"``, i.e. the NumPy forward of the Gaussian MLP), policy inference, noise,
  padding and checks included.

Two diagnostic rows locate the overhead (same ``collect_episodes``, other policies):

* ``sampler_tf_policy``: ``policy_from_params(..., backend="tf")``, one traced TensorFlow call
  per vector step (traced before timing): what the sampler cost before the NumPy backend;
* ``sampler_random_policy``: pre-drawn random actions, no network: the sampler's own bookkeeping.

Prints key=value lines: ``ratio=`` is sampler / raw with the same vector env (sync; target >= 0.70),
``ratio_async=`` likewise for ``AsyncVectorEnv``; ``policy_ms_per_call`` and ``policy_share`` (of
the sampler's time) say where the rest goes. One TF thread. The machine may be shared: compare
the ratios (measured alternately in one process), not the absolute rates.
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
    apply_fn = policy_apply_fn(model)
    policy = TimedPolicy(policy_from_params(apply_fn, params, seed=0))
    tf_policy = TimedPolicy(policy_from_params(apply_fn, params, seed=0, backend="tf"))
    assert policy.fn.backend == "numpy" and tf_policy.fn.backend == "tf"
    obs = np.random.default_rng(0).normal(size=(a.envs, family.obs_dim)).astype(np.float32)
    ids = np.arange(a.envs, dtype=np.int32)
    # The two backends compute the same mean (tests/test_numpy_policy.py pins this to 1e-5).
    np.testing.assert_allclose(
        policy_from_params(apply_fn, params, deterministic=True)(obs, ids),
        policy_from_params(apply_fn, params, deterministic=True, backend="tf")(obs, ids),
        rtol=1e-4, atol=1e-5)
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
        sampler_rate(sampler_envs, policy, tasks, 5, seed=0)       # warm up
        sampler_rate(sampler_envs, tf_policy, tasks, 5, seed=0)    # trace the TF policy
        raw_rate(raw_envs, 5, seed=0)
        rows = {"raw": [], "task": [], "sampler": [], "random": [], "tf": []}
        for r in range(a.repeats):                                  # alternate: shared machine
            rows["raw"].append(raw_rate(raw_envs, a.horizon, seed=r))
            rows["task"].append(raw_rate(task_envs, a.horizon, seed=r))
            rows["sampler"].append(sampler_rate(sampler_envs, policy, tasks, a.horizon, seed=r))
            rows["random"].append(sampler_rate(sampler_envs, rand, tasks, a.horizon, seed=r))
            rows["tf"].append(sampler_rate(sampler_envs, tf_policy, tasks, a.horizon, seed=r))
        # Best of the repeats, by wall time and (sync only: the workers of AsyncVectorEnv are other
        # processes) by this process's CPU time, which other load on the machine disturbs less.
        results[kind] = {name: (max(x[0] for x in v), max(x[1] for x in v))
                         for name, v in rows.items()}
        results[kind]["policy"] = min((x[3], x[2]) for x in rows["sampler"])   # (ms/call, share)
        results[kind]["policy_tf"] = min((x[3], x[2]) for x in rows["tf"])
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
            print(f"sampler_tf_policy{sfx}_steps_per{c}_s={res['tf'][i]:.0f} "
                  f"ratio_tf_policy{sfx}{c}={res['tf'][i] / raw:.3f}")
        print(f"policy{sfx}_cpu_ms_per_call={res['policy'][0]:.3f}")
        print(f"policy{sfx}_share_of_sampler_cpu={res['policy'][1]:.3f}")
        print(f"tf_policy{sfx}_cpu_ms_per_call={res['policy_tf'][0]:.3f}")
        print(f"tf_policy{sfx}_share_of_sampler_cpu={res['policy_tf'][1]:.3f}")


if __name__ == "__main__":
    main()
