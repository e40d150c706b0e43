"""Speed of second-order MAML on the MAML paper's sinusoid workload, single thread.

usage:
    python benchmarks/maml_sinusoid.py [--steps 3000] [--peers PYTHON] [--peer-script PATH]

Workload (MAML paper, section 5.1): MLP 1-40-40-1 ReLU, K=10 support + 10 query points per task,
meta-batch 25, one inner SGD step at 0.01, Adam 1e-3, second order -- i.e.
``MAMLLearner(mlp(1, 1), SinusoidTasks(), MAMLConfig(...))``. TensorFlow runs with one intra-op and
one inter-op thread.

What is measured:

* every compiled variant of the meta-step: ``jit_compile`` False/True crossed with
  ``steps_per_execution`` 1, 10 and 50 (keys ``tf_{nojit,xla}_spe{N}_meta_steps_per_s``), with the
  time of the first call (trace + compile, ``..._compile_s``) and the process CPU time per wall
  second while timing (``..._cpu_util``, ~1.0 when the run really is single-threaded);
* FOMAML and Meta-SGD at the fastest setting (extra lines);
* the exported ``adapt`` signature: mean latency per call (10 support, 100 query points) for 1 and
  10 inner steps, and its max abs difference from the in-library adaptation;
* with ``--peers PYTHON``: the peer script (torch.func, learn2learn, JAX) run as subprocesses with
  that interpreter, one at a time, alternating with re-timings of our best variant; the reported
  ``tf_meta_steps_per_s`` is then the median of those re-timings.

``learner.train(n)`` returns Python floats, so every timed call ends with a host sync. Note that the
peers sync after every meta-step; ``tf_best_spe1_meta_steps_per_s`` is the like-for-like figure.

Output is ``key=value`` lines. The last lines are ``tf_meta_steps_per_s`` and, with ``--peers``,
``torch_func_meta_steps_per_s``, ``l2l_meta_steps_per_s``, ``ratio_vs_torch_func``, ``ratio_vs_l2l``
(preceded by ``jax_meta_steps_per_s`` and ``ratio_vs_jax``). Ratios are ours / theirs.
"""
from __future__ import annotations

import argparse
import math
import os
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER_SCRIPT = os.path.join(REPO, "..", "shared", "peers", "maml_sinusoid_peer.py")
# Peer implementation -> (output key, default timed steps). Rough rates: l2l ~20/s, func ~140/s,
# jax ~1100/s; the counts keep each peer run to a few seconds.
PEERS = {"func": ("torch_func", 300), "l2l": ("l2l", 100), "jax": ("jax", 2000)}


def emit(key, value):
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


def timed_rate(learner, steps):
    """Meta-steps per second over ``steps`` meta-steps, and process CPU seconds per wall second."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    metrics = learner.train(steps)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if not math.isfinite(metrics["query_loss"]):
        raise RuntimeError(f"non-finite meta-loss after timing: {metrics}")
    return steps / wall, cpu / wall


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
        probe, _ = timed_rate(self.learner, max(self.spe, 50 // self.spe * self.spe))
        n = min(target_steps, max(int(probe * budget_s), 100))
        return max(self.spe, n // self.spe * self.spe)

    def time(self, steps, repeats=3):
        """Median rate over ``repeats`` timings of ``steps`` meta-steps each."""
        runs = [timed_rate(self.learner, steps) for _ in range(repeats)]
        rates = [r for r, _ in runs]
        return statistics.median(rates), statistics.median(c for _, c in runs)


def run_peer(python, script, impl, steps):
    """Runs one peer implementation; returns its meta-steps per second (nan on failure)."""
    cmd = [python, script, impl, "--threads", "1", "--steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("meta_steps_per_s="):
        print(f"# peer {impl} failed (rc={proc.returncode}): {' '.join(cmd)}\n"
              f"# {proc.stderr.strip()[-2000:]}", file=sys.stderr, flush=True)
        return float("nan")
    for line in lines[:-1]:
        print(f"# peer {impl}: {line}", flush=True)
    return float(lines[-1].split("=", 1)[1])


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
        path = export_learner(learner, tmp, "bench")
        loaded = tf.saved_model.load(path)
        adapt = loaded.signatures["adapt"]
        fm = learner.fmodel
        params = fm.tile(fm.params(), 1)
        loss = lambda p: mse(fm.apply_batched(p, sx[None]), sy[None])
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000,
                   help="timed meta-steps per repeat for fast variants (slow ones get fewer)")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds one timing repeat may take; caps the steps of slow variants")
    p.add_argument("--peers", metavar="PYTHON", help="interpreter with torch/jax for the peer script")
    p.add_argument("--peer-script", default=DEFAULT_PEER_SCRIPT)
    for impl, (_, steps) in PEERS.items():
        p.add_argument(f"--{impl}-steps", type=int, default=steps, help=f"timed steps for peer {impl}")
    a = p.parse_args()

    emit("tensorflow_version", tf.__version__)
    emit("keras_version", keras.__version__)
    emit("threads", 1)
    emit("cpu_count", os.cpu_count())
    emit("loadavg_1min_start", os.getloadavg()[0])

    # 1. Every compiled variant of second-order MAML.
    rates = {}
    variants = {}
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
            rates[name], variants[name] = rate, v
    best = max(rates, key=rates.get)
    best_spe1 = max((k for k in rates if k.endswith("_spe1")), key=rates.get)
    emit("tf_best_variant", best)
    emit("tf_best_spe1_variant", best_spe1)
    emit("tf_best_spe1_meta_steps_per_s", rates[best_spe1])

    # 2. FOMAML and Meta-SGD at the best setting.
    bv = variants[best]
    jit, spe = bv.learner.config.jit_compile, bv.spe
    for algo in ("fomaml", "metasgd"):
        v = Variant(f"tf_{algo}", algo, jit, spe)
        steps = v.steps_for(a.steps, a.budget)
        rate, cpu = v.time(steps)
        emit(f"tf_{algo}_{best[3:]}_compile_s", v.compile_s)
        emit(f"tf_{algo}_{best[3:]}_cpu_util", cpu)
        emit(f"tf_{algo}_{best[3:]}_meta_steps_per_s", rate)

    # 3. The exported adapt signature (on the best variant's partly trained learner).
    for key, value in adapt_latency(bv.learner).items():
        emit(key, value)

    # 4. Peers, one at a time, alternating with re-timings of our best variant.
    best_steps = bv.steps_for(a.steps, a.budget)
    peer_rates = {}
    ours = []
    if a.peers:
        script = os.path.normpath(a.peer_script)
        emit("peer_script", script)
        for impl in PEERS:
            ours.append(bv.time(best_steps, repeats=1)[0])
            peer_rates[impl] = run_peer(a.peers, script, impl, getattr(a, f"{impl}_steps"))
            emit(f"{PEERS[impl][0]}_timed_steps", getattr(a, f"{impl}_steps"))
        ours.append(bv.time(best_steps, repeats=1)[0])
        emit("tf_best_retimings", ",".join(f"{r:.1f}" for r in ours))
    tf_rate = statistics.median(ours) if ours else rates[best]
    emit("loadavg_1min_end", os.getloadavg()[0])

    if a.peers:
        emit("jax_meta_steps_per_s", peer_rates["jax"])
        emit("ratio_vs_jax", tf_rate / peer_rates["jax"])
    emit("tf_meta_steps_per_s", tf_rate)
    if a.peers:
        emit("torch_func_meta_steps_per_s", peer_rates["func"])
        emit("l2l_meta_steps_per_s", peer_rates["l2l"])
        emit("ratio_vs_torch_func", tf_rate / peer_rates["func"])
        emit("ratio_vs_l2l", tf_rate / peer_rates["l2l"])


if __name__ == "__main__":
    main()
