"""ML10 collection throughput: local sampler vs Ray at 1 and 2 workers; MAML-TRPO iteration split.

usage:
    python benchmarks/ml10_throughput.py [--tasks 20] [--episodes 1] [--horizon 500] [--repeats 2]
        [--iteration-episodes 2] [--full-iteration] [--iterations 2] [--skip-collection]
        [--skip-iteration] [--ml45-workers 2 4 8 16 32]
        [--out docs/notes/benchmarks/ml10_throughput]

Part 1, env steps per second collecting ML10 (``ML10Tasks``, Meta-World's train tasks,
``--tasks`` tasks stratified over the 10 classes, ``--episodes`` episodes of ``--horizon`` steps
each, a (100, 100) tanh Gaussian MLP acting through its NumPy forward, keyed seeding) with

* ``local``: ``LocalSampler`` over one ``SyncVectorEnv`` of ``--tasks`` sub-environments in this
  process;
* ``ray-1`` / ``ray-2``: ``RaySampler`` with 1 / 2 actors (a local Ray cluster of 2 CPUs started
  here), ``ceil(tasks / workers)`` sub-environments per actor.

A control beside them: the same 1 vs 2 actors running a pure-Python CPU loop (no environment, no
data), whose 2/1 ratio is what the machine itself allows at that moment (on a shared VM the other
jobs take cores: the sampler cannot scale past the control).

Each is timed ``--repeats`` times after one warm-up collection (actor start-up and the first
builds of the Meta-World classes excluded); the best and the mean are reported. The three return the
same episodes (checked: the rewards are compared).

Part 2, the per-iteration time split of MAML-TRPO on ML10 (the ``maml-trpo-ml10`` preset's settings
except ``episodes_per_task=--iteration-episodes``; ``--full-iteration`` uses the preset's 10), from
``MAMLRLLearner.timings``: sampling (both collections), inner step (preparation + adaptation),
outer step (preparation + TRPO), for the last of ``--iterations`` iterations (the first also traces
the TF functions: ~15 s here). With fewer episodes than the preset's 10 the full preset is
projected by scaling every part by ``10 / episodes``.

Part 3, projected seconds per MAML-TRPO iteration on ML45 (same settings: 200,000 env steps per
iteration) on N Ray workers: ``200000 / (N * r1 * e) + learner``, with ``r1`` the measured 1-worker
rate, ``e`` the measured 2-worker efficiency (rate_2 / (2 rate_1), capped at 1) and ``learner`` the
measured inner + outer seconds. It assumes ML45's classes step like ML10's and that the learner
does not grow with the task count (the meta-batch stays 20).

The machine is a 2-core VM shared with other agents' jobs; ``uptime`` load averages are recorded
before and after each part: a load above 2 means the workers competed with other processes.
Writes ``<out>.json`` and ``<out>.txt``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "disable")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner  # noqa: E402
from metarl_tf.networks import gaussian_mlp_policy, policy_apply_fn  # noqa: E402
from metarl_tf.params import FunctionalModel  # noqa: E402
from metarl_tf.rollouts import LocalSampler, make_vector_env  # noqa: E402
from metarl_tf.tasks.metaworld import ML10Tasks  # noqa: E402
from _report import Report  # noqa: E402  (benchmarks/_report.py)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def spin(n: int) -> float:
    """A pure-Python CPU loop (the scaling control); returns its CPU seconds."""
    t, x = time.process_time(), 0
    for i in range(n):
        x += i * i
    return time.process_time() - t


def scaling_control(ray, repeats: int, n: int = 20_000_000) -> dict:
    """Wall seconds of ``spin`` on 1 actor and on 2 actors at once (best of ``repeats``)."""
    actor = ray.remote(num_cpus=1)(type("Spin", (), {"spin": lambda self, k: spin(k)}))
    a, b = actor.remote(), actor.remote()
    ray.get([a.spin.remote(10), b.spin.remote(10)])
    one, two = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ray.get(a.spin.remote(n))
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ray.get([a.spin.remote(n), b.spin.remote(n)])
        two.append(time.perf_counter() - t0)
    for h in (a, b):
        ray.kill(h)
    # rate ratio: 2 loops in `two` seconds vs 1 loop in `one` seconds
    return {"one_s": one, "two_s": two, "ratio_2_over_1": 2 * min(one) / min(two)}


def time_collections(sampler, apply_fn, params, tasks, episodes, horizon, repeats):
    sampler.collect(apply_fn, "gaussian", params, tasks, episodes, horizon, seed=0)   # warm-up
    seconds, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = sampler.collect(apply_fn, "gaussian", params, tasks, episodes, horizon, seed=0)
        seconds.append(time.perf_counter() - t0)
    steps = len(tasks) * episodes * horizon
    return {"steps_per_collection": steps, "seconds": seconds,
            "best_steps_per_s": steps / min(seconds),
            "mean_steps_per_s": steps / float(np.mean(seconds))}, result


def iteration_part(a, report, out):
    """Part 2: the MAML-TRPO iteration split; returns the projected learner seconds (or None)."""
    learner_s = None
    if not a.skip_iteration:
        episodes = 10 if a.full_iteration else a.iteration_episodes
        cfg = MAMLRLConfig(outer="trpo", meta_batch_size=20, episodes_per_task=episodes,
                           horizon=500, inner_lr=0.1, max_kl=0.01)
        report(f"# part 2: MAML-TRPO ML10 iteration, 20 tasks x {episodes} episodes x 500 steps "
               f"(x2 collections), keyed local sampler; load before: {load()}")
        sampler = LocalSampler(make_vector_env(ML10Tasks().make_env, num_envs=20), keyed=True)
        learner = MAMLRLLearner(gaussian_mlp_policy(39, 4, (100, 100), "tanh", seed=0),
                                ML10Tasks(), cfg, seed=0, sampler=sampler)
        splits = []
        for i in range(a.iterations):
            t0 = time.perf_counter()
            learner.train(1)
            total = time.perf_counter() - t0
            splits.append({**learner.timings, "total": total})
            report(iteration=i + 1, **{k: round(v, 2) for k, v in splits[-1].items()},
                   load=load())
        t = splits[-1]
        scale = 10 / episodes
        projected = {"sampling": t["sampling"] * scale, "inner": t["inner"] * scale,
                     "outer": t["outer"] * scale}
        projected["total"] = sum(projected.values())
        learner_s = projected["inner"] + projected["outer"]
        out["iteration"] = {"episodes_per_task": episodes, "measured": splits,
                            "projected_full_preset": projected,
                            "note": "projection scales every part linearly with episodes"}
        report(projected_full_preset_s=round(projected["total"], 1),
               sampling_s=round(projected["sampling"], 1), inner_s=round(projected["inner"], 1),
               outer_s=round(projected["outer"], 1),
               hours_for_300_iterations=round(300 * projected["total"] / 3600, 1))

    return learner_s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--horizon", type=int, default=500)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--iteration-episodes", type=int, default=2)
    p.add_argument("--full-iteration", action="store_true")
    p.add_argument("--skip-iteration", action="store_true")
    p.add_argument("--skip-collection", action="store_true", help="parts 2 only")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--ml45-workers", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--out", default="docs/notes/benchmarks/ml10_throughput")
    a = p.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    start = datetime.datetime.now(datetime.timezone.utc)
    report = Report(a.out + ".txt", header=[
        "$ " + " ".join([".venv/bin/python"] + sys.argv),
        f"# date: {start:%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()}-core VM shared with other "
        "agents' jobs, CPU only, one TF thread"])
    out = {"command": " ".join(sys.argv), "date": f"{start:%Y-%m-%d %H:%M} UTC",
           "cpus": os.cpu_count(), "settings": vars(a)}

    # -- part 1: collection rates --------------------------------------------------------------
    family = ML10Tasks(horizon=a.horizon)
    tasks = family.sample(a.tasks, seed=0)
    model = gaussian_mlp_policy(39, 4, (100, 100), "tanh", seed=0)
    fmodel = FunctionalModel(model)
    params = [np.asarray(x) for x in fmodel.tile(fmodel.params(), a.tasks)]
    apply_fn = policy_apply_fn(model)
    rates = {}
    if a.skip_collection:
        iteration_part(a, report, out)
        finish(a, report, out)
        return
    report(f"# part 1: ML10 collection, {a.tasks} tasks x {a.episodes} episodes x {a.horizon} "
           f"steps; load before: {load()}")
    local = LocalSampler(make_vector_env(family.make_env, num_envs=a.tasks), keyed=True)
    rates["local"], reference = time_collections(local, apply_fn, params, tasks, a.episodes,
                                                 a.horizon, a.repeats)
    local.close()
    rates["local"]["load_after"] = load()
    report(sampler="local", **{k: v for k, v in rates["local"].items() if k != "seconds"})

    import ray
    from metarl_tf.rollouts.ray_sampler import RaySampler
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    control = scaling_control(ray, a.repeats)
    out["control_before"] = control
    report(control="pure-Python loop, 2 actors / 1 actor", ratio=round(control["ratio_2_over_1"], 3),
           load=load())
    same = True
    for workers in (1, 2):
        sampler = RaySampler(family.make_env, num_workers=workers,
                             envs_per_worker=math.ceil(a.tasks / workers))
        name = f"ray-{workers}"
        rates[name], episodes = time_collections(sampler, apply_fn, params, tasks, a.episodes,
                                                 a.horizon, a.repeats)
        rates[name]["load_after"] = load()
        same &= bool(np.array_equal(episodes.rewards, reference.rewards))
        sampler.close()
        report(sampler=name, **{k: v for k, v in rates[name].items() if k != "seconds"})
    control = scaling_control(ray, a.repeats)
    out["control_after"] = control
    report(control="pure-Python loop, 2 actors / 1 actor", ratio=round(control["ratio_2_over_1"], 3),
           load=load())
    ray.shutdown()
    speedup = rates["ray-2"]["best_steps_per_s"] / rates["ray-1"]["best_steps_per_s"]
    out["collection"] = rates
    out["ray2_over_ray1"] = speedup
    out["same_episodes"] = same
    report(ray2_over_ray1_best=round(speedup, 3), target=1.6, met=speedup >= 1.6,
           same_episodes_local_ray1_ray2=same)

    learner_s = iteration_part(a, report, out)

    # -- part 3: ML45 projection ---------------------------------------------------------------
    r1 = rates["ray-1"]["best_steps_per_s"]
    eff = min(1.0, speedup / 2)
    steps = 2 * 20 * 10 * 500
    proj = {}
    for n in a.ml45_workers:
        seconds = steps / (n * r1 * eff) + (learner_s or 0.0)
        proj[n] = seconds
        report(ml45_workers=n, projected_s_per_iteration=round(seconds, 1),
               hours_for_300_iterations=round(300 * seconds / 3600, 2))
    out["ml45_projection"] = {"per_worker_steps_per_s": r1, "efficiency": eff,
                              "learner_s": learner_s, "seconds_per_iteration": proj}
    finish(a, report, out)


def finish(a, report, out):
    out["load_end"] = load()
    with open(a.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    report(f"# wrote {a.out}.json; load at end: {load()}")


if __name__ == "__main__":
    main()
