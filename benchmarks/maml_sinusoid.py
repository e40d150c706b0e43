"""Speed of second-order MAML on the MAML paper's sinusoid workload, single thread, against JAX.

usage:
    python benchmarks/maml_sinusoid.py [--peers PYTHON] [--rounds 5] [--tiny] [--json FILE]
                                       [--sweep] [--torch] [--peer-script PATH]

Workload (MAML paper, section 5.1): MLP 1-40-40-1 ReLU, K=10 support + 10 query points per task,
meta-batch 25, one inner SGD step at 0.01, Adam 1e-3, second order -- i.e.
``MAMLLearner(mlp(1, 1), SinusoidTasks(), MAMLConfig(...))``. TensorFlow runs with one intra-op and
one inter-op thread; the JAX peer (``--peers``: an interpreter with jax, e.g. the one
``../shared/peers/setup.sh`` builds) is pinned to one core with single-threaded XLA.

What is measured:

* **like for like** (the headline): meta-steps per second at 1 meta-step per compiled call on each
  side (TF: ``learner.train(1)`` with ``steps_per_execution=1``, one XLA call and a host read of
  the metrics per meta-step; JAX: ``jax.jit`` of one meta-step and ``float(loss)`` per call) and at
  50 per call on each side (TF: ``steps_per_execution=50``, ``train(50)``; JAX: 50 meta-steps in
  ``jax.lax.scan`` inside one jit call, ``--steps-per-call 50``). Every round times TF 1, JAX 1,
  TF 50, JAX 50 in turn (alternating, so load changes hit both sides); ``--rounds`` rounds; the
  figures are medians over rounds and the ratios are TF / JAX of the medians (also per round). The
  1-minute load average is printed with every round: the machine is shared.
* **per CPU second** (``*_meta_steps_per_cpu_s``): TF's process CPU time over the timed calls; with
  ``--peer-cpu`` (not with ``--tiny``) also JAX's, from the CPU time of a peer run of 2N steps
  minus one of N steps (start-up and compilation cancel, up to their run-to-run variation, which is
  large next to N = 2000-3000 steps: read ``ratio_vs_jax_*_cpu`` with care).
* **the floor**: FLOPs per meta-step, counted from the dot ops of the XLA-optimised HLO of TF's
  meta-gradient (``2 * output size * contracted size`` per dot; elementwise ops and Adam are not
  counted), against this machine's single-thread matmul rate (an XLA-compiled 256^3 matmul,
  and the workload's own batched shapes). ``floor_us_per_meta_step`` is FLOPs / the 256^3 rate;
  ``*_floor_fraction`` is how much of each side's time that floor is.
* without ``--tiny``: FOMAML and Meta-SGD at 50 per call, the exported ``adapt`` latency;
  ``--sweep`` adds every compiled variant (``jit_compile`` x ``steps_per_execution`` 1/10/50);
  ``--torch`` adds the torch.func and learn2learn peers (1 step per call; they have no scan).

``--tiny``: one short round (a few seconds plus JAX start-up), for a results registry.
Output: ``key=value`` lines; ``--json FILE`` also writes every figure as one JSON dict.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

# One thread, set before any TensorFlow op runs (and so before metarl_tf builds anything).
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

from export import export_learner  # noqa: E402
from metarl_tf import adaptation  # noqa: E402
from metarl_tf.algorithms import MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner  # noqa: E402
from metarl_tf.networks import mlp  # noqa: E402
from metarl_tf.params import mse  # noqa: E402
from metarl_tf.tasks import SinusoidTasks  # noqa: E402
from metarl_tf.tasks.regression import sample_task_batch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _hlo import dot_flops  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared beside the main checkout; ../../shared beside a worktree under wt/
DEFAULT_PEER_SCRIPT = next(
    (c for c in (os.path.join(REPO, "..", "shared", "peers", "maml_sinusoid_peer.py"),
                 os.path.join(REPO, "..", "..", "shared", "peers", "maml_sinusoid_peer.py"))
     if os.path.exists(c)), os.path.join(REPO, "..", "shared", "peers", "maml_sinusoid_peer.py"))
# torch peers -> (output key, default timed steps). Rough rates: l2l ~20/s, func ~140/s.
TORCH_PEERS = {"func": ("torch_func", 300), "l2l": ("l2l", 100)}
FIGURES: dict = {}


def emit(key, value):
    FIGURES[key] = value
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.2f}"
    print(f"{key}={value}", flush=True)


def make_learner(algo="maml", jit_compile=True, steps_per_execution=50):
    fields = dict(meta_batch_size=25, num_support=10, num_query=10, inner_steps=1, inner_lr=0.01,
                  meta_lr=1e-3, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    if algo == "metasgd":
        return MetaSGDLearner(mlp(1, 1), SinusoidTasks(), MetaSGDConfig(**fields))
    return MAMLLearner(mlp(1, 1), SinusoidTasks(),
                       MAMLConfig(first_order=(algo == "fomaml"), **fields))


def timed_rate(learner, steps, per_call):
    """Meta-steps per second over ``steps`` meta-steps run ``per_call`` per ``train`` call (each call
    ends with a host read of the metrics), and process CPU seconds per wall second."""
    calls = max(1, steps // per_call)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        metrics = learner.train(per_call)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if not math.isfinite(metrics["query_loss"]):
        raise RuntimeError(f"non-finite meta-loss after timing: {metrics}")
    return calls * per_call / wall, cpu / wall


class Variant:
    """One compiled configuration: built, warmed up, then timed on demand."""

    def __init__(self, name, algo, jit_compile, spe):
        self.name, self.spe = name, spe
        self.learner = make_learner(algo, jit_compile, spe)
        t0 = time.perf_counter()
        self.learner.train(spe)  # first call: trace (+ XLA compile)
        self.compile_s = time.perf_counter() - t0
        self.learner.train(3 * spe)  # a few more calls before timing

    def steps_for(self, target_steps, budget_s):
        """``target_steps`` rounded to whole calls, cut down so one timing takes ~``budget_s``."""
        probe, _ = timed_rate(self.learner, max(self.spe, 50 // self.spe * self.spe), self.spe)
        n = min(target_steps, max(int(probe * budget_s), 100))
        return max(self.spe, n // self.spe * self.spe)

    def time(self, steps, repeats=3):
        """Median rate over ``repeats`` timings of ``steps`` meta-steps each."""
        runs = [timed_rate(self.learner, steps, self.spe) for _ in range(repeats)]
        return statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


def run_peer(python, script, impl, steps, per_call=1):
    """Runs one peer implementation; returns (its meta-steps per second, the child's CPU seconds
    from start to exit) -- (nan, nan) on failure."""
    cmd = [python, script, impl, "--threads", "1", "--steps", str(steps)]
    if per_call != 1:
        cmd += ["--steps-per-call", str(per_call)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("meta_steps_per_s="):
        print(f"# peer {impl} failed (rc={proc.returncode}): {' '.join(cmd)}\n"
              f"# {proc.stderr.strip()[-2000:]}", file=sys.stderr, flush=True)
        return float("nan"), float("nan")
    return float(lines[-1].split("=", 1)[1]), cpu


def peer_cpu_rate(python, script, steps, per_call):
    """JAX meta-steps per CPU second: the CPU time of a run of ``2 * steps`` minus that of a run
    of ``steps`` (start-up, compilation and warm-up cancel), over ``steps``."""
    _, short = run_peer(python, script, "jax", steps, per_call)
    _, long = run_peer(python, script, "jax", 2 * steps, per_call)
    return steps / (long - short) if long > short else float("nan")


def adapt_latency(learner, calls=200):
    """Latency of the exported ``adapt`` signature, and its agreement with the library's adaptation."""
    rng = np.random.default_rng(0)
    amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)
    sx = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    qx = rng.uniform(-5, 5, (100, 1)).astype(np.float32)
    sy = (amp * np.sin(sx - phase)).astype(np.float32)
    sx, sy, qx = tf.constant(sx), tf.constant(sy), tf.constant(qx)

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        # validate_steps=False: the latency rows need 10 steps whatever the partly trained
        # learner's validated bound is
        path = export_learner(learner, tmp, "bench", validate_steps=False)
        loaded = tf.saved_model.load(path)
        adapt = loaded.signatures["adapt"]
        fm = learner.fmodel
        params = fm.tile(fm.params(), 1)
        loss = lambda p: mse(fm.apply_batched(p, sx[None]), sy[None])  # noqa: E731
        diffs = []
        for steps, key in ((1, "adapt_latency_ms_1_step"), (10, "adapt_latency_ms_10_steps")):
            n = tf.constant(steps, tf.int32)
            for _ in range(20):
                y = adapt(support_x=sx, support_y=sy, query_x=qx, num_steps=n)["y"]
            t0 = time.perf_counter()
            for _ in range(calls):
                y = adapt(support_x=sx, support_y=sy, query_x=qx, num_steps=n)["y"].numpy()
            out[key] = (time.perf_counter() - t0) / calls * 1e3
            adapted = adaptation.adapt(loss, params, learner.update_rule(), steps)
            ref = fm.apply_batched(adapted.params, qx[None])[0].numpy()
            diffs.append(float(np.max(np.abs(y - ref))))
    out["adapt_max_abs_diff_vs_library"] = max(diffs)
    return out


# -- the floor -------------------------------------------------------------------------------------
def meta_step_flops(learner) -> tuple[int, int]:
    """(matmul FLOPs of one meta-gradient, dot ops) from the XLA-optimised HLO."""
    cfg = learner.config
    batch = sample_task_batch(learner.tasks, tf.constant([0, 0], tf.int64), cfg.meta_batch_size,
                              cfg.num_support, cfg.num_query)
    fn = tf.function(lambda b: learner.grads(b)[2], jit_compile=True)
    return dot_flops(fn.experimental_get_compiler_ir(batch)(stage="optimized_hlo"))


def matmul_rates(repeats=20) -> dict:
    """Single-thread matmul GFLOP/s: an XLA-compiled 256^3 matmul, and the workload's own largest
    product (25 tasks x [10, 40] @ [40, 40], batched)."""
    out = {}
    for key, (a_shape, b_shape) in {"matmul_gflops_256": ([256, 256], [256, 256]),
                                    "matmul_gflops_workload_shape": ([25, 10, 40], [25, 40, 40])
                                    }.items():
        a = tf.random.stateless_normal(a_shape, [1, 2])
        b = tf.random.stateless_normal(b_shape, [3, 4])
        inner = 64  # products per call, so the call overhead is not what is measured
        f = tf.function(lambda a, b: tf.add_n([tf.matmul(a + float(i), b) for i in range(inner)]),
                        jit_compile=True)
        f(a, b).numpy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, b).numpy()
            times.append(time.perf_counter() - t0)
        flops = 2 * math.prod(a_shape) * b_shape[-1] * inner
        out[key] = flops / statistics.median(times) / 1e9
    return out


# -- like for like ---------------------------------------------------------------------------------
def like_for_like(args) -> None:
    learners = {1: Variant("tf_xla_spe1", "maml", True, 1), 50: Variant("tf_xla_spe50", "maml",
                                                                         True, 50)}
    tf_steps = {1: 200 if args.tiny else 1000, 50: 500 if args.tiny else 2500}
    jax_steps = {1: 300 if args.tiny else 2000, 50: 500 if args.tiny else 3000}
    runs = {k: [] for k in ("tf_1", "jax_1", "tf_50", "jax_50", "tf_cpu_1", "jax_cpu_1",
                            "tf_cpu_50", "jax_cpu_50")}
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        for per_call in (1, 50):
            rate, util = timed_rate(learners[per_call].learner, tf_steps[per_call], per_call)
            runs[f"tf_{per_call}"].append(rate)
            runs[f"tf_cpu_{per_call}"].append(rate / util)  # meta-steps per CPU second
            if args.peers:
                runs[f"jax_{per_call}"].append(run_peer(args.peers, args.peer_script, "jax",
                                                        jax_steps[per_call], per_call)[0])
                if args.peer_cpu and not args.tiny:
                    runs[f"jax_cpu_{per_call}"].append(peer_cpu_rate(
                        args.peers, args.peer_script, jax_steps[per_call], per_call))
        line = " ".join(f"{k}={v[-1]:.0f}" for k, v in runs.items() if v)
        print(f"# round {r + 1}: {line} loadavg_1min={load:.2f}->{os.getloadavg()[0]:.2f}",
              flush=True)
    emit("rounds", args.rounds)
    for per_call in (1, 50):
        tf_rate = statistics.median(runs[f"tf_{per_call}"])
        emit(f"tf_{per_call}_per_call_meta_steps_per_s", tf_rate)
        emit(f"tf_{per_call}_per_call_rounds", ",".join(f"{v:.0f}" for v in runs[f"tf_{per_call}"]))
        if args.peers:
            jax_rate = statistics.median(runs[f"jax_{per_call}"])
            emit(f"jax_{per_call}_per_call_meta_steps_per_s", jax_rate)
            emit(f"jax_{per_call}_per_call_rounds",
                 ",".join(f"{v:.0f}" for v in runs[f"jax_{per_call}"]))
            emit(f"ratio_vs_jax_{per_call}_per_call", tf_rate / jax_rate)
            emit(f"ratio_vs_jax_{per_call}_per_call_by_round", ",".join(
                f"{t / j:.2f}" for t, j in zip(runs[f"tf_{per_call}"], runs[f"jax_{per_call}"])))
        # per CPU second: the figures a shared machine disturbs least (same rounds)
        emit(f"tf_{per_call}_per_call_meta_steps_per_cpu_s",
             statistics.median(runs[f"tf_cpu_{per_call}"]))
        if runs[f"jax_cpu_{per_call}"]:
            jax_cpu = statistics.median(runs[f"jax_cpu_{per_call}"])
            emit(f"jax_{per_call}_per_call_meta_steps_per_cpu_s", jax_cpu)
            emit(f"ratio_vs_jax_{per_call}_per_call_cpu",
                 FIGURES[f"tf_{per_call}_per_call_meta_steps_per_cpu_s"] / jax_cpu)
    flops, dots = meta_step_flops(learners[1].learner)
    rates = matmul_rates(5 if args.tiny else 20)
    emit("flops_per_meta_step", flops)
    emit("dot_ops_per_meta_step", dots)
    for key, value in rates.items():
        emit(key, value)
    floor_us = flops / (rates["matmul_gflops_256"] * 1e9) * 1e6
    emit("floor_us_per_meta_step", floor_us)
    emit("floor_us_per_meta_step_at_workload_shape",
         flops / (rates["matmul_gflops_workload_shape"] * 1e9) * 1e6)
    for side in ("tf", "jax") if args.peers else ("tf",):
        for per_call in (1, 50):
            rate = FIGURES[f"{side}_{per_call}_per_call_meta_steps_per_s"]
            emit(f"{side}_{per_call}_per_call_us_per_meta_step", 1e6 / rate)
            emit(f"{side}_{per_call}_per_call_floor_fraction", floor_us * rate / 1e6)
    return learners


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", metavar="PYTHON", help="interpreter with jax (and torch) for the peers")
    p.add_argument("--peer-script", default=os.path.normpath(DEFAULT_PEER_SCRIPT))
    p.add_argument("--rounds", type=int, default=5, help="alternating TF/JAX rounds (medians)")
    p.add_argument("--tiny", action="store_true", help="one short round, headline figures only")
    p.add_argument("--json", metavar="FILE", help="also write every figure as one JSON dict")
    p.add_argument("--sweep", action="store_true",
                   help="also time jit_compile x steps_per_execution 1/10/50")
    p.add_argument("--torch", action="store_true", help="also run the torch.func and l2l peers")
    p.add_argument("--peer-cpu", action="store_true",
                   help="also JAX meta-steps per CPU second (two more peer runs per mode and round)")
    p.add_argument("--steps", type=int, default=3000, help="--sweep: timed meta-steps per repeat")
    p.add_argument("--budget", type=float, default=2.0,
                   help="--sweep: seconds one timing repeat may take; caps slow variants' steps")
    a = p.parse_args()
    if a.tiny:
        a.rounds = 1

    emit("tensorflow_version", tf.__version__)
    emit("keras_version", keras.__version__)
    emit("threads", 1)
    emit("cpu_count", os.cpu_count())
    emit("loadavg_1min_start", os.getloadavg()[0])
    if a.peers:
        emit("peer_script", a.peer_script)

    # 1. Like for like against JAX, and the floor.
    learners = like_for_like(a)

    if not a.tiny:
        # 2. FOMAML and Meta-SGD at 50 per call.
        for algo in ("fomaml", "metasgd"):
            v = Variant(f"tf_{algo}", algo, True, 50)
            rate, cpu = v.time(v.steps_for(a.steps, a.budget))
            emit(f"tf_{algo}_xla_spe50_compile_s", v.compile_s)
            emit(f"tf_{algo}_xla_spe50_cpu_util", cpu)
            emit(f"tf_{algo}_xla_spe50_meta_steps_per_s", rate)
        # 3. The exported adapt signature (on the partly trained learner).
        for key, value in adapt_latency(learners[50].learner).items():
            emit(key, value)

    # 4. Every compiled variant.
    if a.sweep:
        for jit in (False, True):
            for spe in (1, 10, 50):
                name = f"tf_{'xla' if jit else 'nojit'}_spe{spe}"
                v = Variant(name, "maml", jit, spe)
                steps = v.steps_for(a.steps, a.budget)
                rate, cpu = v.time(steps)
                emit(f"{name}_compile_s", v.compile_s)
                emit(f"{name}_timed_steps", steps)
                emit(f"{name}_cpu_util", cpu)
                emit(f"{name}_meta_steps_per_s", rate)

    # 5. torch peers (one meta-step per call; they have no counterpart of 50 per call).
    if a.peers and a.torch:
        for impl, (key, steps) in TORCH_PEERS.items():
            rate = run_peer(a.peers, a.peer_script, impl, steps)
            emit(f"{key}_meta_steps_per_s", rate)
            emit(f"ratio_vs_{key}_1_per_call", FIGURES["tf_1_per_call_meta_steps_per_s"] / rate)

    if "ratio_vs_jax_1_per_call" in FIGURES and "ratio_vs_jax_50_per_call" in FIGURES:
        # The target holds in both modes at once: the worse mode is the figure to judge.
        emit("ratio_vs_jax_worse_mode", min(FIGURES["ratio_vs_jax_1_per_call"],
                                            FIGURES["ratio_vs_jax_50_per_call"]))
    emit("loadavg_1min_end", os.getloadavg()[0])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(FIGURES, f, indent=1, sort_keys=True)
        print(f"# wrote {a.json}", flush=True)


if __name__ == "__main__":
    main()
