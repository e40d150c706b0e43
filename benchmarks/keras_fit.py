"""Keras fit() vs. the library learner on the MAML sinusoid workload: speed and learning quality.

usage:
    python benchmarks/keras_fit.py [--timed-steps 2000] [--repeats 5] [--quality-steps 20000]
        [--quality-seeds 3] [--seed S] [--eval-tasks 600] [--quick] [--json PATH]

Workload (MAML paper, section 5.1): MLP 1-40-40-1 ReLU, K=10 support + 10 query points per task,
meta-batch 25, one inner SGD step at 0.01, Adam 1e-3, second order, XLA, 50 meta-steps per compiled
call, one intra-op and one inter-op TensorFlow thread. The two sides:

* learner: ``MAMLLearner(mlp(1, 1), SinusoidTasks(), cfg).train(n)`` -- task sampling inside the
  compiled step, the whole 50-step loop one XLA call;
* fit: ``MetaModel(mlp(1, 1), cfg)`` compiled with ``jit_compile=True, steps_per_execution=50`` and
  ``fit()`` on ``task_dataset(SinusoidTasks(), 25, 10, 10)`` (infinite): meta-batch tensors sampled
  in a tf.data pipeline (XLA, in blocks), read 50 at a time (``fit`` batches an infinite dataset by
  ``steps_per_execution``), then one XLA call runs the learner's ``grads`` / ``apply`` 50 times;
* fit_seeds: ``MetaModel(..., tasks=SinusoidTasks())`` and ``fit()`` on ``seed_dataset()``: the
  dataset yields only each meta-step's stateless seed and the XLA step samples the meta-batch, as
  the learner does.

Throughput: after a warm-up call each (trace + XLA compile), the three runs are timed in turn, in
the same process, ``--repeats`` rounds, ``--timed-steps`` meta-steps per timing (a whole ``train(n)``
call or a whole ``fit(steps_per_epoch=n)`` call, so fit's per-call set-up is included). Every timing
is printed, each round's ratio (fit / the learner timed just before it) too, and the medians.
``*_cpu_us_per_meta_step`` is process CPU time (all threads: tf.data's are extra to the one TF op
thread) per meta-step.

Quality: for each of ``--quality-seeds`` seeds, a fresh learner and a fresh MetaModel with that seed
(same initialisation; ``fit()`` on ``seed_dataset(seed)``, so the same tasks sampled by the same XLA
code at each meta-step) are each meta-trained for ``--quality-steps`` meta-steps, then scored by
``metarl_tf.evaluation.adaptation_curve`` on the same 600 tasks of the test split (``learner.evaluate()`` and
``MetaModel.adaptation_curve``): query MSE after 0, 1 and 10 inner steps with 95% intervals. Printed
too: the largest weight difference between the two after 1000 steps and at the end. ``--json``
writes these figures as one flat dict (``results/keras-fit-parity.yaml`` runs one seed per call).

Output is ``key=value`` lines; the last three are ``fit_meta_steps_per_s`` (the ``task_dataset`` path),
``learner_meta_steps_per_s`` and ``ratio`` (fit / learner, wall-clock medians).
"""
from __future__ import annotations

import argparse
import json
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
from metarl_tf.tasks.datasets import seed_dataset, task_dataset  # noqa: E402

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
    meta = MetaModel(mlp(1, 1), CONFIG, seed=seed, tasks=SinusoidTasks())
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
    """Timings in turn, in one process: the learner, fit() on meta-batches, fit() on task seeds."""
    learner = make_learner()
    models = {"fit": make_meta_model(), "fit_seeds": make_meta_model()}
    data = {"fit": dataset(), "fit_seeds": seed_dataset()}
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
    for fn in runs.values():  # warm-up
        fn()
    rates = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(repeats):  # in turn, so that load from other processes hits all alike
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
    for name in ("fit", "fit_seeds"):
        per_round = [f / lr for f, lr in zip(rates[name], rates["learner"])]
        emit(f"ratio_{name}_per_round", ",".join(f"{r:.3f}" for r in per_round))
        emit(f"ratio_{name}_per_round_median", statistics.median(per_round))
        # CPU per meta-step is steadier than wall time on a shared machine: learner / fit.
        emit(f"cpu_ratio_{name}", statistics.median(cpu["learner"]) / statistics.median(cpu[name]))
    emit("ratio_fit_seeds", medians["fit_seeds"] / medians["learner"])
    return medians["fit"], medians["learner"]


def quality(steps, seeds, check_steps=1000, first_seed=0, eval_tasks=600, figures=None):
    """Same budget, seed and initialisation: learner vs fit(), post-adaptation MSE on
    ``eval_tasks`` tasks; per-seed figures go into ``figures`` (with one seed: unprefixed)."""
    results = {"learner": [], "fit": []}
    figures = {} if figures is None else figures
    for seed in range(first_seed, first_seed + seeds):
        learner = make_learner(seed=seed)
        meta = make_meta_model(seed=seed)
        t0 = time.perf_counter()
        learner.train(check_steps)
        learner_early = [v.numpy() for v in learner.fmodel.variables]
        learner.train(steps - check_steps)
        learner_s = time.perf_counter() - t0
        learner_final = [v.numpy() for v in learner.fmodel.variables]
        early = []
        record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: early.append(
            [v.numpy() for v in meta.network.trainable_variables]) if epoch == 0 else None)
        t0 = time.perf_counter()
        # One fit() call: the dataset is read on across epochs, element i at meta-step i.
        meta.fit(seed_dataset(seed=seed), steps_per_epoch=check_steps,
                 epochs=steps // check_steps, verbose=0, callbacks=[record])
        fit_s = time.perf_counter() - t0
        assert int(meta.meta_step.numpy()) == learner.step == steps
        # Same tasks sampled by the same XLA code, same initialisation.
        diff_early = max(float(abs(a - b).max()) for a, b in zip(learner_early, early[0]))
        diff_final = max(float(abs(a - b.numpy()).max())
                         for a, b in zip(learner_final, meta.network.trainable_variables))
        emit(f"quality_seed{seed}_max_weight_diff_after_{check_steps}_steps", diff_early)
        emit(f"quality_seed{seed}_max_weight_diff_after_{steps}_steps", diff_final)
        # Both scored on the same test tasks (the test stream of seed 0, as `metarl results`).
        curves = {"learner": learner.evaluate(num_tasks=eval_tasks, num_steps=10, seed=0,
                                              split="test"),
                  "fit": meta.adaptation_curve(SinusoidTasks(), num_tasks=eval_tasks,
                                               num_steps=10, seed=0)}  # its split: "test"
        tag = "" if seeds == 1 else f"seed{seed}_"
        figures.update({f"{tag}max_weight_diff_early": diff_early,
                        f"{tag}max_weight_diff_final": diff_final,
                        f"{tag}learner_train_s": learner_s, f"{tag}fit_train_s": fit_s})
        for name in ("learner", "fit"):
            for k in (0, 1, 10):
                figures[f"{tag}{name}_mse_after_{k}"] = float(curves[name]["mse"][k])
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
    p.add_argument("--timed-steps", type=int, default=2000,
                   help="meta-steps per timing (0: skip the throughput part)")
    p.add_argument("--repeats", type=int, default=7, help="timings per side (medians reported)")
    p.add_argument("--quality-steps", type=int, default=20000,
                   help="meta-training budget of each side for the quality comparison (0: skip)")
    p.add_argument("--quality-seeds", type=int, default=3,
                   help="seeds S..S+N-1 (S = --seed), each trained once by each side")
    p.add_argument("--seed", type=int, default=0, help="first quality seed")
    p.add_argument("--eval-tasks", type=int, default=600, help="test tasks of the quality scores")
    p.add_argument("--check-steps", type=int, default=1000,
                   help="meta-steps at which the weights are compared first")
    p.add_argument("--quick", action="store_true",
                   help="quality only, one seed, 100 meta-steps per side (weights compared "
                   "after 50), 20 test tasks: checks that the comparison runs, not its figures")
    p.add_argument("--json", metavar="PATH",
                   help="write the quality figures as one flat JSON dict (the `metarl results` "
                   "script protocol): learner_/fit_mse_after_{0,1,10}, max_weight_diff_early / "
                   "_final, *_train_s (prefixed seed<S>_ when more than one seed)")
    a = p.parse_args()
    if a.quick:
        a.quality_steps, a.check_steps, a.eval_tasks, a.timed_steps = 100, 50, 20, 0
        a.quality_seeds = 1
    if a.timed_steps % CONFIG.steps_per_execution:
        p.error(f"--timed-steps must be a multiple of {CONFIG.steps_per_execution}")
    spe = CONFIG.steps_per_execution  # fit() runs whole executions of this many steps
    if a.check_steps < 1 or a.check_steps % spe or a.quality_steps % a.check_steps:
        p.error(f"--check-steps must be a multiple of {spe} and --quality-steps a multiple of "
                f"--check-steps, got {a.check_steps} and {a.quality_steps}")
    if a.json and not a.quality_steps:
        p.error("--json writes the quality figures: --quality-steps must be > 0")

    emit("tensorflow_version", tf.__version__)
    emit("keras_version", keras.__version__)
    emit("threads", 1)
    emit("cpu_count", os.cpu_count())
    emit("loadavg_1min_start", os.getloadavg()[0])
    figures = {}
    if a.quality_steps:
        quality(a.quality_steps, a.quality_seeds, a.check_steps, a.seed, a.eval_tasks, figures)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=1, sort_keys=True)
    if not a.timed_steps:
        return
    fit_rate, learner_rate = throughput(a.timed_steps, a.repeats)
    emit("loadavg_1min_end", os.getloadavg()[0])
    emit("fit_meta_steps_per_s", fit_rate)
    emit("learner_meta_steps_per_s", learner_rate)
    emit("ratio", fit_rate / learner_rate)


if __name__ == "__main__":
    main()
