"""Cost curves: how the time of one meta-step / iteration grows with the work.

usage:
    python benchmarks/cost_curves.py [--tiny] [--only sinusoid,pointnav,rl2] [--repeats 3]
                                     [--out-dir docs/notes/benchmarks] [--no-two-threads]

Curves (one TensorFlow thread; the largest point of each sinusoid curve also with two threads, in
a child process, since a process's thread count is fixed when TensorFlow starts):

* **sinusoid MAML meta-step** (the MAML paper's sinusoid workload: MLP 1-40-40-1 ReLU, K=10
  support + 10 query, meta-batch 25, one inner step, Adam; XLA, 10 meta-steps per compiled call),
  second and first order, against the meta-batch size (5 to 200), the inner steps (1 to 10) and
  the hidden width (40 to 400; both hidden layers);
* **PointNav MAML-TRPO iteration** (``MAMLRLLearner`` with in-graph sampling, policy 64-64 tanh,
  10 episodes per task, everything else ``MAMLRLConfig()``), against the meta-batch size (at
  horizon 50) and the horizon (at meta-batch 10);
* **RL² bandit iteration** (``RL2Learner`` on 5-armed Bernoulli bandits, 100 trials per
  iteration, GRU 64, in-graph rollouts, ``RL2Config()`` PPO), against the trial length (pulls).

Each point: built, one or two warm-up calls (tracing / XLA compilation), then the median of
``--repeats`` timed calls, in process CPU seconds (one thread: the figure other jobs on a shared
machine disturb least) and wall seconds; the two-thread rows compare wall seconds. For every consecutive pair of points the local growth exponent
``log(t2 / t1) / log(x2 / x1)`` is printed (1: linear; above 1: worse than linear).

Outputs in ``--out-dir``: ``cost_curves.txt`` (the table), ``cost_curves.json`` (every figure) and
``cost_curves.png`` (log-log plots). ``--tiny``: two small points per curve, one repeat, no
two-thread child (for a results registry; about a minute on a quiet machine).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _threads_from_argv() -> int:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


import tensorflow as tf  # noqa: E402

THREADS = _threads_from_argv()
# Set before any op runs: a process's thread pools are fixed once TensorFlow starts.
tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(THREADS)

# Sweeps: name -> (x label, points, points in --tiny). The sinusoid ones run in both orders.
SINUSOID = {
    "meta_batch": ("meta-batch size (tasks)", [5, 10, 25, 50, 100, 200], [5, 25]),
    "inner_steps": ("inner steps", [1, 2, 3, 5, 10], [1, 2]),
    "width": ("hidden width (both layers)", [40, 80, 160, 400], [40, 80]),
}
POINTNAV = {
    "meta_batch": ("meta-batch size (tasks), horizon 50", [5, 10, 20, 40], [2, 4]),
    "horizon": ("horizon (steps), meta-batch 10", [25, 50, 100, 200], [10, 20]),
}
RL2 = {"trial_length": ("pulls per trial, 100 trials", [10, 25, 50, 100], [5, 10])}


def timed(call, repeats: int, warmup: int) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of ``call()`` over ``repeats`` calls after
    ``warmup`` calls. With one TF thread the CPU time is the figure other jobs on the machine
    disturb least (a wall second shared with them is not all ours)."""
    for _ in range(warmup):
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def sinusoid_point(sweep: str, x: int, first_order: bool, repeats: int) -> float:
    """Seconds per MAML meta-step at one point of a sinusoid sweep."""
    from metarl_tf.algorithms import MAMLConfig, MAMLLearner
    from metarl_tf.networks import mlp
    from metarl_tf.tasks import SinusoidTasks

    fields = dict(meta_batch_size=25, num_support=10, num_query=10, inner_steps=1, inner_lr=0.01,
                  meta_lr=1e-3, jit_compile=True, steps_per_execution=10, first_order=first_order)
    hidden = (40, 40)
    if sweep == "meta_batch":
        fields["meta_batch_size"] = x
    elif sweep == "inner_steps":
        fields["inner_steps"] = x
    else:
        hidden = (x, x)
    learner = MAMLLearner(mlp(1, 1, hidden=hidden), SinusoidTasks(), MAMLConfig(**fields))
    wall, cpu = timed(lambda: learner.train(10), repeats, warmup=2)
    return wall / 10, cpu / 10


def pointnav_point(sweep: str, x: int, repeats: int) -> float:
    """Seconds per in-graph MAML-TRPO iteration on PointNav."""
    from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner
    from metarl_tf.networks import gaussian_mlp_policy
    from metarl_tf.tasks import PointNavTasks

    fields = dict(meta_batch_size=10, episodes_per_task=10, horizon=50)
    fields["meta_batch_size" if sweep == "meta_batch" else "horizon"] = x
    policy = gaussian_mlp_policy(2, 2, hidden=(64, 64), activation="tanh", seed=1)
    learner = MAMLRLLearner(policy, PointNavTasks(), MAMLRLConfig(**fields), seed=1)
    return timed(lambda: learner.train(1), repeats, warmup=1)


def rl2_point(sweep: str, x: int, repeats: int) -> float:
    """Seconds per RL² PPO iteration on bandits with ``x`` pulls per trial."""
    from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for
    from metarl_tf.tasks import BernoulliBanditTasks

    tasks = BernoulliBanditTasks(num_arms=5, num_pulls=x)
    cfg = RL2Config(episodes_per_trial=x, num_arms=5, meta_batch_size=100, in_graph=True)
    learner = RL2Learner(rl2_policy_for(tasks, units=64, seed=0), tasks, cfg, seed=0)
    return timed(lambda: learner.train(1), repeats, warmup=2)


def exponents(points: list) -> list:
    """Local growth exponents between consecutive ``(x, seconds)`` points."""
    return [math.log(t2 / t1) / math.log(x2 / x1) for (x1, t1), (x2, t2) in zip(points, points[1:])]


def run_curves(args) -> dict:
    """Every requested curve: ``{curve_name: {"x_label", "points": [[x, seconds], ...]}}``."""
    only = set(args.only.split(","))
    pick = (lambda spec: spec[2]) if args.tiny else (lambda spec: spec[1])
    curves = {}

    def record(name, label, x, seconds):
        wall, cpu = seconds
        curve = curves.setdefault(name, {"x_label": label, "points": [], "wall_points": []})
        curve["points"].append([x, cpu if THREADS == 1 else wall])
        curve["wall_points"].append([x, wall])
        print(f"{name} x={x} wall_s={wall:.6g} cpu_s={cpu:.6g} "
              f"loadavg_1min={os.getloadavg()[0]:.2f}", flush=True)

    if "sinusoid" in only:
        for sweep, spec in SINUSOID.items():
            for order, first in (("second_order", False), ("first_order", True)):
                for x in pick(spec):
                    if args.largest_only and x != spec[1][-1]:
                        continue
                    record(f"sinusoid_{sweep}_{order}", spec[0], x,
                           sinusoid_point(sweep, x, first, args.repeats))
    if "pointnav" in only and not args.largest_only:
        for sweep, spec in POINTNAV.items():
            for x in pick(spec):
                record(f"pointnav_trpo_{sweep}", spec[0], x, pointnav_point(sweep, x, args.repeats))
    if "rl2" in only and not args.largest_only:
        for sweep, spec in RL2.items():
            for x in pick(spec):
                record(f"rl2_bandits_{sweep}", spec[0], x, rl2_point(sweep, x, args.repeats))
    return curves


def table(curves: dict, two_threads: dict) -> list[str]:
    lines = []
    for name, curve in curves.items():
        pts = curve["points"]
        lines.append(f"# {name}: CPU ms (one thread) and wall ms per meta-step/iteration vs "
                     f"{curve['x_label']}")
        slopes = exponents(pts) if len(pts) > 1 else []
        for i, ((x, t), (_, w)) in enumerate(zip(pts, curve["wall_points"])):
            extra = f"  growth_exponent_from_previous={slopes[i - 1]:.2f}" if i else ""
            if slopes and i and slopes[i - 1] > 1.1:
                extra += "  (worse than linear)"
            lines.append(f"{name} x={x} cpu_ms={1e3 * t:.3f} wall_ms={1e3 * w:.3f}{extra}")
        if len(pts) > 1:
            (x0, t0), (x1, t1) = pts[0], pts[-1]
            lines.append(f"{name} overall_exponent={math.log(t1 / t0) / math.log(x1 / x0):.2f} "
                         f"time_ratio={t1 / t0:.2f} work_ratio={x1 / x0:.2f}")
        if name in two_threads:
            # A quiet machine runs one thread in about its CPU time, so one-thread CPU over
            # two-thread wall is the speed-up there; on a loaded machine the two-thread wall also
            # holds waiting, and the figure understates it.
            x2, t2 = two_threads[name]
            c1 = pts[-1][1]
            lines.append(f"{name} x={x2} two_threads_wall_ms={1e3 * t2:.3f} one_thread_cpu_ms="
                         f"{1e3 * c1:.3f} two_thread_speedup_lower_bound={c1 / t2:.2f}")
    return lines


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for name, curve in curves.items():
        key = name.replace("_second_order", "").replace("_first_order", "")
        groups.setdefault(key, []).append((name, curve))
    cols = 3
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (key, members) in zip(axes.flat, groups.items()):
        for name, curve in members:
            xs = [p[0] for p in curve["points"]]
            ms = [1e3 * p[1] for p in curve["points"]]
            label = ("first order" if "first_order" in name else
                     "second order" if "second_order" in name else "measured")
            ax.loglog(xs, ms, "o-", label=label)
        xs = [p[0] for p in members[0][1]["points"]]
        ms = [1e3 * p[1] for p in members[0][1]["points"]]
        ax.loglog(xs, [ms[0] * x / xs[0] for x in xs], "k:", label="linear from first point")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(members[0][1]["x_label"])
        ax.set_ylabel("CPU ms per meta-step / iteration")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle("metarl-tf cost curves (1 TF thread, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="two small points per curve, one repeat")
    p.add_argument("--only", default="sinusoid,pointnav,rl2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "notes", "benchmarks"))
    p.add_argument("--no-two-threads", action="store_true",
                   help="skip the two-thread child run of the largest sinusoid points")
    p.add_argument("--threads", type=int, default=1, help="TF threads (read before TF starts)")
    p.add_argument("--largest-only", action="store_true",
                   help="(the two-thread child) only the largest point of each sinusoid curve")
    p.add_argument("--json-to", help="(the two-thread child) write the curves to this JSON file")
    p.add_argument("--from-json", metavar="FILE",
                   help="only rewrite the table and plot from a cost_curves.json of an earlier run")
    args = p.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        stem = args.from_json[:-len(".json")]
        lines = saved["header"] + table(saved["curves"], saved["two_threads"])
        with open(stem + ".txt", "w") as f:
            f.write("\n".join(lines) + "\n")
        plot(saved["curves"], stem + ".png")
        print("\n".join(lines))
        return 0
    if args.tiny:
        args.repeats = 1
    start = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()[0]
    curves = run_curves(args)
    if args.json_to:
        with open(args.json_to, "w") as f:
            json.dump(curves, f)
        return 0

    two_threads = {}
    if not args.tiny and not args.no_two_threads and "sinusoid" in args.only:
        child_json = os.path.join(args.out_dir, ".cost_curves_two_threads.json")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--threads", "2",
                        "--largest-only", "--only", "sinusoid", "--repeats", str(args.repeats),
                        "--json-to", child_json], check=True)
        with open(child_json) as f:
            for name, curve in json.load(f).items():
                two_threads[name] = curve["points"][-1]
        os.remove(child_json)

    header = [f"# date={start} command=benchmarks/cost_curves.py {' '.join(sys.argv[1:])}",
              f"# tensorflow={tf.__version__} threads={THREADS} cpus={os.cpu_count()} "
              f"repeats={args.repeats} loadavg_1min_start={load_start:.2f} "
              f"loadavg_1min_end={os.getloadavg()[0]:.2f} (machine shared with other jobs)"]
    lines = header + table(curves, two_threads)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, "cost_curves" + ("_tiny" if args.tiny else ""))
    with open(stem + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"curves": curves, "two_threads": two_threads, "header": header}, f, indent=1)
    plot(curves, stem + ".png")
    print("\n".join(lines[2:]))
    print(f"wrote {stem}.txt {stem}.json {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
