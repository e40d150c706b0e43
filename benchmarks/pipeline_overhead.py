"""Cost of the training pipeline (TensorBoard scalars, checkpoints, progress) on a MAML-sinusoid run.

    python benchmarks/pipeline_overhead.py [--steps 20000] [--repeats 2]

Runs the same config (the `maml-sinusoid` preset, one TF thread) two ways, alternately:
`bare` = build the learner and call `learner.train(steps)`; `pipeline` = `training.run.train`, which
adds per-1000-step scalars, a checkpoint every 5000 steps and the progress bar. Both times include
compiling, not building; the pipeline's final evaluation is excluded (its `train_seconds`). Prints
key=value lines; `pipeline_overhead=` is 1 - pipeline/bare throughput (target < 5%).
"""
import argparse
import dataclasses
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from training.config import build_learner, load_config  # noqa: E402
from training.run import train  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    config = dataclasses.replace(load_config("maml-sinusoid"), steps=a.steps, log_every=1000,
                                 checkpoint_every=5000, eval_tasks=10, eval_steps=1)
    bare, piped = [], []
    for _ in range(a.repeats):
        learner = build_learner(config)
        t0 = time.perf_counter()
        learner.train(a.steps)
        bare.append(a.steps / (time.perf_counter() - t0))
        run_dir = tempfile.mkdtemp()
        try:
            summary = train(config, os.path.join(run_dir, "run"), quiet=False)
        finally:
            shutil.rmtree(run_dir)
        piped.append(a.steps / summary["train_seconds"])
    print(f"steps={a.steps} repeats={a.repeats} log_every=1000 checkpoint_every=5000")
    print(f"bare_steps_per_s={max(bare):.1f}")
    print(f"pipeline_steps_per_s={max(piped):.1f}")
    print(f"pipeline_overhead={1 - max(piped) / max(bare):.4f}")


if __name__ == "__main__":
    main()
