"""Keras fit() vs. the library learner on the MAML sinusoid workload: speed and learning quality.

usage:
    python benchmarks/keras_fit.py [--timed-steps 2000] [--repeats 5] [--quality-steps 20000]

Workload (MAML paper, section 5.1): MLP 1-40-40-1 ReLU, K=10 support + 10 query points per task,
meta-batch 25, one inner SGD step at 0.01, Adam 1e-3, second order, XLA, 50 meta-steps per compiled
call, one intra-op and one inter-op TensorFlow thread. The two sides:

* learner: ``MAMLLearner(mlp(1, 1), SinusoidTasks(), cfg).train(n)`` -- task sampling inside the
  compiled step, the whole 50-step loop one XLA call;
* fit: ``MetaModel(mlp(1, 1), cfg)`` compiled with ``jit_compile=True, steps_per_execution=50`` and
  ``fit()`` on ``task_dataset(SinusoidTasks(), 25, 10, 10)`` (infinite, prefetched) -- sampling in a
  tf.data pipeline, Keras' multi-step loop calling the XLA-compiled ``train_step`` (the learner's
  ``grads`` / ``apply``) once per meta-step.

Throughput: after a warm-up call each (trace + XLA compile), three runs are timed alternately,
``--repeats`` times each, ``--timed-steps`` meta-steps per timing (a whole ``train(n)`` call or a whole
``fit(steps_per_epoch=n)`` call, so fit's per-call set-up is included), and the medians reported:
the learner, ``fit`` on the live task dataset, and ``fit_cached`` on the same meta-batches read back
from memory (``.take(n).cache().repeat()``), which separates the cost of Keras' loop from that of
sampling in tf.data. ``*_cpu_us_per_meta_step`` is process CPU time (all threads: tf.data's are extra
to the one TF op thread) per meta-step.

Quality: for each of ``--quality-seeds`` seeds, a fresh learner and a fresh MetaModel with that seed
(same initialisation, and the same task stream: ``task_dataset`` samples under XLA as the learner
does) are each meta-trained for ``--quality-steps`` meta-steps, then scored by
``metarl_tf.evaluation.adaptation_curve`` on the same 600 held-out tasks (``learner.evaluate()`` and
``MetaModel.adaptation_curve``): query MSE after 0, 1 and 10 inner steps with 95% intervals. The two
runs of a seed agree to rounding at first (printed: the largest weight difference after 1000
steps); different XLA programs round differently, and MAML's early training amplifies that until the
runs are as different as two seeds, so "the same MSE" means the same spread over seeds.

Output is ``key=value`` lines; the last three are ``fit_meta_steps_per_s``,
``learner_meta_steps_per_s`` and ``ratio`` (fit / learner, wall-clock medians). On a machine shared
with other processes the wall-clock timings are bimodal (the tf.data thread does or does not find a
free core); ``cpu_ratio_*`` (learner / fit CPU time per meta-step) is the steadier comparison.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

from metarl_tf.algorithms import MAMLConfig, MAMLLearner  # noqa: E402
from metarl_tf.keras import MetaModel  # noqa: E402
from metarl_tf.networks import mlp  # noqa: E402
from metarl_tf.tasks import SinusoidTasks  # noqa: E402
from metarl_tf.tasks.datasets import task_dataset  # noqa: E402

CONFIG = MAMLConfig(meta_batch_size=25, num_support=10, num_query=10, inner_steps=1, inner_lr=0.01,
                    meta_lr=1e-3, jit_compile=True, steps_per_execution=50)


def emit(key, value):
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.4f}" if abs(value) < 10 else (
            f"{value:.1f}")
    print(f"{key}={value}", flush=True)


def dataset(seed=0):
    cfg = CONFIG
    return task_dataset(SinusoidTasks(), cfg.meta_batch_size, cfg.num_support, cfg.num_query,
                        seed=seed)


def make_learner(seed=0):
    return MAMLLearner(mlp(1, 1), SinusoidTasks(), CONFIG, seed=seed)


def make_meta_model(seed=0):
    meta = MetaModel(mlp(1, 1), CONFIG, seed=seed)
    meta.compile(optimizer=keras.optimizers.Adam(CONFIG.meta_lr), jit_compile=True,
                 steps_per_execution=CONFIG.steps_per_execution)
    return meta


def timed(fn, steps):
    """Meta-steps per second of ``fn()``, and process CPU microseconds per meta-step."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return steps / wall, cpu / steps * 1e6


def throughput(steps, repeats):
    """Alternating timings of the learner, fit() on the live dataset, fit() on a cached one."""
    learner = make_learner()
    live = dataset()
    # The same meta-batches read back from memory: fit() without the cost of sampling them.
    cached = dataset().take(steps).cache().repeat()
    models = {"fit": make_meta_model(), "fit_cached": make_meta_model()}
    data = {"fit": live, "fit_cached": cached}
    runs = {"learner": lambda: learner.train(steps)}
    for name in models:
        runs[name] = (lambda m, d: lambda: m.fit(d, steps_per_epoch=steps, epochs=1, verbose=0))(
            models[name], data[name])
    spe = CONFIG.steps_per_execution
    t0 = time.perf_counter()
    learner.train(spe)
    emit("learner_compile_s", time.perf_counter() - t0)
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(data[name], steps_per_epoch=spe, epochs=1, verbose=0)
        emit(f"{name}_compile_s", time.perf_counter() - t0)
    learner.train(4 * spe)
    for name, model in models.items():
        model.fit(data[name], steps_per_epoch=steps, epochs=1, verbose=0)  # fills the cache
    rates = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(repeats):  # alternate, so that load from other processes hits all alike
        for name, fn in runs.items():
            rate, us = timed(fn, steps)
            rates[name].append(rate)
            cpu[name].append(us)
    medians = {}
    for name in runs:
        medians[name] = statistics.median(rates[name])
        emit(f"{name}_timings", ",".join(f"{r:.1f}" for r in rates[name]))
        emit(f"{name}_cpu_us_per_meta_step", statistics.median(cpu[name]))
        emit(f"{name}_meta_steps_per_s_median", medians[name])
    emit("ratio_fit_cached", medians["fit_cached"] / medians["learner"])
    # CPU per meta-step is steadier than wall time on a shared machine: learner / fit.
    for name in ("fit", "fit_cached"):
        emit(f"cpu_ratio_{name}", statistics.median(cpu["learner"]) / statistics.median(cpu[name]))
    return medians["fit"], medians["learner"]


def quality(steps, seeds, check_steps=1000):
    """Same budget, seed and initialisation: learner vs fit(), post-adaptation MSE on 600 tasks."""
    results = {"learner": [], "fit": []}
    for seed in range(seeds):
        learner = make_learner(seed=seed)
        meta = make_meta_model(seed=seed)
        t0 = time.perf_counter()
        learner.train(check_steps)
        learner_early = [v.numpy() for v in learner.fmodel.variables]
        learner.train(steps - check_steps)
        learner_s = time.perf_counter() - t0
        early = []
        record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: early.append(
            [v.numpy() for v in meta.network.trainable_variables]) if epoch == 0 else None)
        t0 = time.perf_counter()
        # One fit() call: the dataset is read on across epochs, element i at meta-step i.
        meta.fit(dataset(seed=seed), steps_per_epoch=check_steps, epochs=steps // check_steps,
                 verbose=0, callbacks=[record])
        fit_s = time.perf_counter() - t0
        assert int(meta.meta_step.numpy()) == learner.step == steps
        # Same tasks (the XLA stream on both sides), same initialisation: the runs agree to
        # rounding at first; the rounding differences then grow until the runs are as different
        # as two seeds (MAML's early training is chaotic).
        emit(f"quality_seed{seed}_max_weight_diff_after_{check_steps}_steps", max(
            float(abs(a - b).max()) for a, b in zip(learner_early, early[0])))
        curves = {"learner": learner.evaluate(num_tasks=600, num_steps=10, seed=0),
                  "fit": meta.adaptation_curve(SinusoidTasks(), num_tasks=600, num_steps=10,
                                               seed=0)}
        for name, seconds in (("learner", learner_s), ("fit", fit_s)):
            c = curves[name]
            results[name].append(c)
            print(f"quality seed={seed} {name:7s} meta_steps={steps} train_s={seconds:.1f} "
                  f"mse_0_steps={c['mse'][0]:.4f} mse_1_step={c['mse'][1]:.4f}+-{c['ci95'][1]:.4f} "
                  f"mse_10_steps={c['mse'][10]:.4f}+-{c['ci95'][10]:.4f}", flush=True)
    for k in (1, 10):
        for name in ("learner", "fit"):
            values = [c["mse"][k] for c in results[name]]
            emit(f"quality_{name}_mse_after_{k}_mean_over_seeds", statistics.mean(values))
            emit(f"quality_{name}_mse_after_{k}_range_over_seeds",
                 f"{min(values):.4f}..{max(values):.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timed-steps", type=int, default=2000, help="meta-steps per timing")
    p.add_argument("--repeats", type=int, default=7, help="timings per side (medians reported)")
    p.add_argument("--quality-steps", type=int, default=20000,
                   help="meta-training budget of each side for the quality comparison (0: skip)")
    p.add_argument("--quality-seeds", type=int, default=3,
                   help="seeds 0..N-1, each trained once by each side")
    a = p.parse_args()
    if a.timed_steps % CONFIG.steps_per_execution:
        p.error(f"--timed-steps must be a multiple of {CONFIG.steps_per_execution}")
    if a.quality_steps % 1000:
        p.error("--quality-steps must be a multiple of 1000")

    emit("tensorflow_version", tf.__version__)
    emit("keras_version", keras.__version__)
    emit("threads", 1)
    emit("cpu_count", os.cpu_count())
    emit("loadavg_1min_start", os.getloadavg()[0])
    if a.quality_steps:
        quality(a.quality_steps, a.quality_seeds)
    fit_rate, learner_rate = throughput(a.timed_steps, a.repeats)
    emit("loadavg_1min_end", os.getloadavg()[0])
    emit("fit_meta_steps_per_s", fit_rate)
    emit("learner_meta_steps_per_s", learner_rate)
    emit("ratio", fit_rate / learner_rate)


if __name__ == "__main__":
    main()
