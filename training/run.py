"""The training loop: meta-train, log, checkpoint, evaluate. Reads top to bottom.

Run directory::

    RUN_DIR/config.json        the resolved ExperimentConfig
    RUN_DIR/checkpoints/       tf.train.CheckpointManager (network, optimiser slots, rates, step)
    RUN_DIR/tensorboard/       scalars: query_loss, support_loss, steps_per_s, wall_time, eval curve
    RUN_DIR/summary.json       final metrics and the adaptation curve on held-out tasks
    RUN_DIR/adaptation_curve.png   (when matplotlib is installed)
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import tensorflow as tf

from training.config import ExperimentConfig, build_learner


def checkpoint_manager(learner, run_dir: str, keep: int = 3) -> tf.train.CheckpointManager:
    ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
    return tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "checkpoints"), max_to_keep=keep)


def restore_learner(run_dir: str):
    """Rebuilds a run's learner from ``config.json`` and its latest checkpoint."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.json")
    with open(path) as f:
        config = ExperimentConfig.from_dict(json.load(f))
    learner = build_learner(config)
    manager = checkpoint_manager(learner, run_dir, config.keep_checkpoints)
    if manager.latest_checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    return config, learner


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, allow_nan=True)
    os.replace(tmp, path)


class _Progress:
    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, first_step: int, metrics: dict) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        rate = (step - first_step) / max(elapsed, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        line = (f"step {step}/{self.total}  query_loss {metrics['query_loss']:.4f}  "
                f"support_loss {metrics['support_loss']:.4f}  {rate:.0f} steps/s  "
                f"ETA {eta:.0f}s")
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def close(self):
        if not self.quiet and self.tty:
            sys.stderr.write("\n")


def train(config: ExperimentConfig, run_dir: str, quiet: bool = False, resume: bool = False) -> dict:
    """Meta-trains ``config`` into ``run_dir``; returns the summary (also in ``summary.json``).

    With ``resume``, continues from the run directory's latest checkpoint.
    """
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path) and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or "
                              "choose a new --out")
    _write_json(config_path, config.to_dict())
    if not quiet:
        print(f"config: {json.dumps(config.to_dict())}", file=sys.stderr)

    learner = build_learner(config)
    manager = checkpoint_manager(learner, run_dir, config.keep_checkpoints)
    if resume and manager.latest_checkpoint:
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))
    progress = _Progress(config.steps, quiet)

    first_step = learner.step
    start = time.perf_counter()
    metrics = {}
    while learner.step < config.steps:
        # Stop at the next log or checkpoint boundary, whichever comes first.
        step = learner.step
        boundary = min(config.steps, (step // config.log_every + 1) * config.log_every,
                       (step // config.checkpoint_every + 1) * config.checkpoint_every)
        t0 = time.perf_counter()
        metrics = learner.train(boundary - step)
        dt = time.perf_counter() - t0
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"{key} is {value} at meta-step {learner.step}; "
                                         "the last good checkpoint is kept")
        with writer.as_default(step=learner.step):
            for key, value in metrics.items():
                tf.summary.scalar(key, value)
            tf.summary.scalar("steps_per_s", (boundary - step) / dt)
            tf.summary.scalar("wall_time", time.perf_counter() - start)
        progress.update(learner.step, first_step, metrics)
        if learner.step % config.checkpoint_every == 0 or learner.step == config.steps:
            manager.save(checkpoint_number=learner.step)
    progress.close()
    train_seconds = time.perf_counter() - start

    curve = learner.evaluate(num_tasks=config.eval_tasks, num_query=config.eval_query,
                             num_steps=config.eval_steps)
    with writer.as_default(step=learner.step):
        for k, value in enumerate(curve["mse"]):
            tf.summary.scalar(f"eval/mse_after_{k}_steps", value)
    writer.flush()
    summary = {"name": config.name, "algorithm": config.algorithm, "steps": learner.step,
               "train_seconds": train_seconds, "final_metrics": metrics, "eval": curve}
    _write_json(os.path.join(run_dir, "summary.json"), summary)
    _plot_curve(curve, os.path.join(run_dir, "adaptation_curve.png"), config.name)
    return summary


def _plot_curve(curve: dict, path: str, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra `plot`)
        return
    steps = list(range(len(curve["mse"])))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(steps, curve["mse"], yerr=curve["ci95"], marker="o", capsize=3)
    ax.set_xlabel("inner steps")
    ax.set_ylabel(f"query MSE ({curve['num_tasks']} held-out tasks)")
    ax.set_title(title)
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
