"""The training loop: meta-train, log, checkpoint, evaluate. Reads top to bottom.

Run directory::

    RUN_DIR/config.json        the resolved ExperimentConfig
    RUN_DIR/checkpoints/       tf.train.CheckpointManager (network, optimiser slots, rates, step)
    RUN_DIR/tensorboard/       scalars: the learner's metrics (query/support loss, or pre/post-
                               adaptation return, KL, ...), steps_per_s, wall_time, eval curve
    RUN_DIR/summary.json       final metrics and the adaptation curve on held-out tasks
    RUN_DIR/adaptation_curve.png   (when matplotlib is installed)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import tensorflow as tf

from training.config import ExperimentConfig, build_learner, kind_of, make_strategy
from training.nonfinite import NonFiniteGuard


def checkpoint_manager(learner, run_dir: str, keep: int = 3) -> tf.train.CheckpointManager:
    ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
    return tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "checkpoints"), max_to_keep=keep)


def read_run_config(run_dir: str) -> ExperimentConfig:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.json")
    try:
        with open(path) as f:
            return ExperimentConfig.from_dict(json.load(f))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def restore_latest(manager: tf.train.CheckpointManager) -> str | None:
    """Restores the newest checkpoint that reads back; warns about and skips corrupted ones.

    Returns the path restored, or None when the directory holds no checkpoint.
    Raises ValueError when checkpoints exist but none can be restored.
    """
    candidates = list(reversed(manager.checkpoints))
    for path in candidates:
        try:
            manager.checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"warning: checkpoint {path} could not be restored ({msg}); trying an older one",
                  file=sys.stderr)
    if candidates:
        raise ValueError(f"none of the checkpoints in {manager.directory} can be restored: "
                         f"{[os.path.basename(c) for c in candidates]}")
    return None


def restore_learner(run_dir: str):
    """Rebuilds a run's learner from ``config.json`` and its latest usable checkpoint."""
    config = read_run_config(run_dir)
    learner = build_learner(config)
    manager = checkpoint_manager(learner, run_dir, config.keep_checkpoints)
    if restore_latest(manager) is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    return config, learner


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, allow_nan=True)
    os.replace(tmp, path)


class _Progress:
    """A one-line progress bar with ETA on a terminal; silent when stderr is not a TTY or quiet."""

    def __init__(self, total: int, quiet: bool):
        self.total = total
        self.quiet = quiet or not sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, first_step: int, metrics: dict) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        rate = (step - first_step) / max(elapsed, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        done = int(30 * step / self.total)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in list(metrics.items())[:2])
        line = (f"[{'#' * done}{'.' * (30 - done)}] {step}/{self.total}  {shown}  "
                f"{rate:.1f} steps/s  ETA {eta:.0f}s ")
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self):
        if not self.quiet:
            sys.stderr.write("\n")


def train(config: ExperimentConfig, run_dir: str, quiet: bool = False, resume: bool = False,
          skip_nonfinite: int = 0, final_eval: bool = True) -> dict:
    """Meta-trains ``config`` into ``run_dir``; returns the summary (also in ``summary.json``).

    With ``resume``, continues from the run directory's latest checkpoint. A NaN/inf loss, gradient
    or parameter raises ``NonFiniteError`` naming the meta-step and tensor, with the bad update
    rolled back, the last good checkpoint kept and the batch saved under ``nonfinite/``; up to
    ``skip_nonfinite`` such batches are skipped instead (``training/nonfinite.py``). Without
    ``final_eval`` the held-out adaptation curve is left to the caller (``metarl results`` scores
    the test split itself) and the summary has no ``eval``.
    """
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path) and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} to continue "
                              "it or choose a new --out")
    if resume:
        saved = read_run_config(run_dir)
        same = dataclasses.replace(saved, steps=config.steps)
        if saved.sampler.episodes_keyed and config.sampler.episodes_keyed:
            same = dataclasses.replace(same, sampler=config.sampler)  # same episodes either way
        if same != config:
            raise ValueError(f"{run_dir} holds a different run; only `steps` (and, between keyed "
                             "samplers, `sampler`) may change on resume")
    _write_json(config_path, config.to_dict())
    if not quiet:
        print(f"config: {json.dumps(config.to_dict())}", file=sys.stderr)

    strategy = make_strategy(config.distribute)  # first: multi-worker needs a fresh runtime
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    learner = build_learner(config, strategy)
    manager = checkpoint_manager(learner, run_dir, config.keep_checkpoints)
    if resume:
        restore_latest(manager)
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))
    progress = _Progress(config.steps, quiet)
    guard = NonFiniteGuard(learner, run_dir, skip_nonfinite)

    first_step = learner.step
    start = time.perf_counter()
    metrics = {}
    while learner.step < config.steps:
        # Stop at the next log or checkpoint boundary, whichever comes first.
        step = learner.step
        boundary = min(config.steps, (step // config.log_every + 1) * config.log_every,
                       (step // config.checkpoint_every + 1) * config.checkpoint_every)
        t0 = time.perf_counter()
        metrics = guard.train(boundary - step)
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
    summary = {"name": config.name, "algorithm": config.algorithm, "steps": learner.step,
               "train_seconds": train_seconds, "final_metrics": metrics}
    if not final_eval:
        writer.flush()
        _write_json(os.path.join(run_dir, "summary.json"), summary)
        return summary

    curve = evaluate_learner(config, learner, config.eval_tasks, config.eval_steps,
                             num_query=config.eval_query)
    key = curve_key(curve)
    with writer.as_default(step=learner.step):
        for k, value in enumerate(curve[key]):
            tf.summary.scalar(f"eval/{CURVE_NAMES[key]}_after_{k}_steps", value)
    writer.flush()
    summary["eval"] = curve
    _write_json(os.path.join(run_dir, "summary.json"), summary)
    _plot_curve(curve, os.path.join(run_dir, "adaptation_curve.png"), config.name)
    return summary


def evaluate_run(run_dir: str, num_tasks: int = 600, num_steps: int = 10,
                 num_support: int | None = None, num_query: int = 100,
                 seed: int | None = None) -> dict:
    """Adaptation curve of a run's latest checkpoint; writes ``evaluation.json`` and ``.png``."""
    for name, value, low in (("--tasks", num_tasks, 1), ("--inner-steps", num_steps, 0),
                             ("--query", num_query, 1), ("--shots", num_support or 1, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    config, learner = restore_learner(run_dir)
    curve = evaluate_learner(config, learner, num_tasks, num_steps, num_query=num_query,
                             num_support=num_support, seed=seed)
    curve["meta_steps"] = learner.step
    _write_json(os.path.join(run_dir, "evaluation.json"), curve)
    _plot_curve(curve, os.path.join(run_dir, "evaluation.png"), f"{config.name} @ {learner.step}")
    return curve


CURVE_NAMES = {"mse": "mse", "returns": "return"}


def curve_key(curve: dict) -> str:
    """``"mse"`` (supervised: lower is better) or ``"returns"`` (RL: higher is better)."""
    return "mse" if "mse" in curve else "returns"


def evaluate_learner(config: ExperimentConfig, learner, num_tasks: int, num_steps: int,
                     num_query: int = 100, num_support: int | None = None,
                     seed: int | None = None) -> dict:
    """The adaptation curve of either kind of learner on held-out tasks."""
    if kind_of(config) != "supervised":
        return learner.evaluate(num_tasks=num_tasks, num_steps=num_steps, seed=seed)
    return learner.evaluate(num_tasks=num_tasks, num_query=num_query, num_steps=num_steps,
                            num_support=num_support, seed=seed)


def _plot_curve(curve: dict, path: str, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra `plot`)
        return
    key = curve_key(curve)
    steps = list(range(len(curve[key])))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(steps, curve[key], yerr=curve["ci95"], marker="o", capsize=3, label="meta-learned")
    ax.set_xlabel("inner steps")
    if key == "mse":
        ax.set_ylabel(f"query MSE ({curve['num_tasks']} held-out tasks)")
        ax.set_yscale("log")
    else:
        ax.set_ylabel(f"average return ({curve['num_tasks']} held-out tasks)")
        if curve.get("oracle_return") is not None:
            ax.axhline(curve["oracle_return"], color="k", linestyle="--", label="oracle")
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
