"""PEARL: exported adapt latency, training speed on HalfCheetahVel, and buffer / checkpoint sizes.

    .venv/bin/python benchmarks/pearl_speed.py [--part latency|training|sizes|all]
        [--repeats 300] [--grad-steps 100] [--out docs/notes/benchmarks/pearl_speed.txt]

* ``latency``: the ``pearl-halfcheetah-vel`` networks (fresh weights: the cost does not depend on
  the values) exported as an AdaptableContextPolicy; median per-call time of ``adapt`` on a
  context of 200 transitions and of ``action_with_z`` on one observation, through the loaded
  SavedModel's signatures and through TFLite (``TFLiteModel`` with its input checks, and the raw
  signature runner), one thread.
* ``training``: the preset's learner with ``num_train_tasks`` 16 (the gradient step's cost does
  not depend on the pool size; it keeps the fill short): environment steps per second while
  collecting (policy in TF, 5 MuJoCo sub-environments stepped together), and gradient steps per
  second (meta-batch 16 x 256 transitions, context 16 x 100, networks 300x3 / encoder 200x3),
  one thread; from these, the preset's time per iteration and per 500 iterations.
* ``sizes``: bytes of every checkpointed variable of each preset's learner (the buffers dominate).

Median of ``--repeats`` calls after 20 warm-up calls. Prints key=value lines and writes them with
the command and date to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from benchmarks._report import Report, median_ms  # noqa: E402
from export import tflite  # noqa: E402
from export.context_policy import export_context_policy_learner  # noqa: E402
from training.config import apply_overrides, build_learner, load_config  # noqa: E402


def checkpoint_bytes(learner) -> int:
    ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
    seen, total = set(), 0
    for obj in tf.train.TrackableView(ckpt).descendants():
        if isinstance(obj, tf.Variable) and id(obj) not in seen:
            seen.add(id(obj))
            total += int(np.prod(obj.shape)) * obj.dtype.size
    return total


def latency(report, repeats):
    config = load_config("pearl-halfcheetah-vel")
    config = apply_overrides(config, ["algorithm_config.num_train_tasks=16",
                                      "algorithm_config.replay_capacity=10"])
    learner = build_learner(config)
    base = tempfile.mkdtemp(prefix="pearl-bench-")
    path = export_context_policy_learner(learner, base, "cheetah")
    rng = np.random.default_rng(0)
    n, d, a = 200, learner.networks.obs_dim, learner.networks.act_dim
    ctx = {"observations": rng.normal(size=(n, d)).astype(np.float32),
           "actions": rng.uniform(-1, 1, size=(n, a)).astype(np.float32),
           "rewards": rng.normal(size=n).astype(np.float32),
           "next_observations": rng.normal(size=(n, d)).astype(np.float32),
           "mask": np.ones(n, np.float32)}
    tf_ctx = {k: tf.constant(v) for k, v in ctx.items()}
    model = tf.saved_model.load(path)
    adapt = model.signatures["adapt"]
    act = model.signatures["action_with_z"]
    z = adapt(**tf_ctx)["z_mean"]
    obs = tf.constant(ctx["observations"][:1])
    sm_adapt = median_ms(lambda: adapt(**tf_ctx)["z_mean"].numpy(), repeats)
    sm_act = median_ms(lambda: act(observation=obs, z=z)["action"].numpy(), repeats)
    module = tflite.module_from_saved_model(path)
    files = tflite.convert(module, os.path.join(base, "cheetah.tflite"))
    lite = {}
    for f in files:
        m = tflite.TFLiteModel(f)
        for key in m.signature_list:
            lite[key] = m
    lite_adapt = median_ms(lambda: lite["adapt"]("adapt", **ctx), repeats)
    raw = lite["adapt"].interpreter.get_signature_runner("adapt")
    raw_adapt = median_ms(lambda: raw(**ctx), repeats)
    noise = np.zeros((1, a), np.float32)
    zn, on = z.numpy(), ctx["observations"][:1]
    lite_act = median_ms(lambda: lite["action_with_z"]("action_with_z", observation=on, z=zn,
                                                       noise=noise), repeats)
    err = float(np.abs(lite["adapt"]("adapt", **ctx)["z_mean"] - z.numpy()).max())
    report("# AdaptableContextPolicy of pearl-halfcheetah-vel: encoder 24-200-200-200-10, actor "
           "22-300-300-300-12; adapt on 200 transitions, action_with_z on 1 observation")
    report(adapt_savedmodel_ms=round(sm_adapt, 4), target_ms=0.3)
    report(adapt_tflite_ms=round(lite_adapt, 4), note="with TFLiteModel's input checks")
    report(adapt_tflite_raw_runner_ms=round(raw_adapt, 4))
    report(action_with_z_savedmodel_ms=round(sm_act, 4))
    report(action_with_z_tflite_ms=round(lite_act, 4))
    report(tflite_over_savedmodel_adapt=round(lite_adapt / sm_adapt, 3))
    report(tflite_max_abs_diff_z_mean=f"{err:.3g}")


def training(report, grad_steps, jit: bool):
    config = load_config("pearl-halfcheetah-vel")
    config = apply_overrides(config, ["algorithm_config.num_train_tasks=16",
                                      f"algorithm_config.jit_compile={str(jit).lower()}"])
    learner = build_learner(config)
    cfg = learner.config
    t = time.perf_counter()
    learner.collect(np.arange(16), 200, False, True, np.random.default_rng(0), 1)
    fill_s = time.perf_counter() - t
    fill_steps = int(learner.env_steps.numpy())
    learner.initialized.assign(True)
    t = time.perf_counter()
    learner.collect(np.arange(5), 400, True, False, np.random.default_rng(1), 2)
    post_s = time.perf_counter() - t
    post_steps = int(learner.env_steps.numpy()) - fill_steps
    learner.gradient_steps(5)   # trace
    t, cpu = time.perf_counter(), time.process_time()
    learner.gradient_steps(grad_steps)
    grad_s, grad_cpu = time.perf_counter() - t, time.process_time() - cpu
    env_rate = (fill_steps + post_steps) / (fill_s + post_s)
    grad_rate = grad_steps / grad_s
    per_iter_env = cfg.num_tasks_sample * (cfg.num_steps_prior + cfg.num_steps_posterior
                                           + cfg.num_extra_rl_steps_posterior)
    iteration_s = per_iter_env / env_rate + cfg.num_train_steps_per_itr / grad_rate
    initial_s = 100 * cfg.num_initial_steps / env_rate
    report(f"# pearl-halfcheetah-vel settings (num_train_tasks 16 for the measurement), 1 thread, "
           f"jit_compile={jit}")
    report(env_steps_per_s_prior=round(fill_steps / fill_s, 1),
           env_steps_per_s_posterior=round(post_steps / post_s, 1), env_steps=fill_steps + post_steps)
    report(grad_steps_per_s=round(grad_rate, 2), grad_steps=grad_steps,
           grad_steps_per_cpu_s=round(grad_steps / grad_cpu, 2))
    report(preset_iteration_s=round(iteration_s, 1), env_s=round(per_iter_env / env_rate, 1),
           grad_s=round(cfg.num_train_steps_per_itr / grad_rate, 1))
    iterations = config.steps
    report(preset_initial_collection_s=round(initial_s, 1), preset_iterations=iterations,
           preset_env_steps=100 * cfg.num_initial_steps + iterations * per_iter_env,
           preset_run_h=round((initial_s + iterations * iteration_s) / 3600, 1),
           preset_run_h_at_cpu_rate=round(
               (initial_s + iterations * (per_iter_env / env_rate + cfg.num_train_steps_per_itr
                                          / (grad_steps / grad_cpu))) / 3600, 1))
    learner.close()


def sizes(report):
    report("# checkpointed bytes per preset (one checkpoint; the CheckpointManager keeps "
           "keep_checkpoints of them)")
    for name in ("pearl-pointnav", "pearl-halfcheetah-vel", "pearl-ant-dir"):
        learner = build_learner(load_config(name))
        report(preset=name, buffer_mb=round(learner.buffer_bytes() / 2 ** 20, 1),
               checkpoint_mb=round(checkpoint_bytes(learner) / 2 ** 20, 1))
        learner.close()
        del learner


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("latency", "training", "sizes", "all"), default="all")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--grad-steps", type=int, default=100)
    p.add_argument("--jit", action="store_true", help="XLA-compile the gradient steps")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "notes", "benchmarks",
                                                 "pearl_speed.txt"))
    args = p.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    header = [f"# date={now} command=benchmarks/pearl_speed.py {' '.join(sys.argv[1:])}",
              (f"# tensorflow={tf.__version__} threads=1 cpus={os.cpu_count()} (machine shared "
               "with other jobs)")]
    report = Report(args.out, header, keep_existing=False)
    if args.part in ("latency", "all"):
        latency(report, args.repeats)
    if args.part in ("training", "all"):
        training(report, args.grad_steps, args.jit)
    if args.part in ("sizes", "all"):
        sizes(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
