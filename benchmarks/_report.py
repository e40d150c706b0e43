"""Pieces the benchmarks share: ``Report`` (print and keep the output in a file, written
atomically) and ``train_on_budget`` (a time-budgeted training loop with checkpoints)."""
from __future__ import annotations

import os
import time


def fmt(x) -> str:
    """``key=value`` formatting: floats to 5 significant digits."""
    return f"{x:.5g}" if isinstance(x, float) else str(x)


class Report:
    """Prints lines and keeps them, rewriting ``path`` atomically (temp file + rename) after every
    line, so an interrupted run leaves what it had measured.

    Args:
      path: the output file, or None to print only.
      header: first lines (the command, the date, the machine).
      keep_existing: start from ``path``'s current lines (a run that adds to an earlier output).
    """

    def __init__(self, path: str | None, header: list[str], keep_existing: bool = False):
        self.path, self.lines = path, []
        if keep_existing and path and os.path.exists(path):
            with open(path) as f:
                self.lines = f.read().splitlines()
        for h in header:
            self(h)

    def __call__(self, text: str = "", **kv):
        text = text or " ".join(f"{k}={fmt(v)}" for k, v in kv.items())
        print(text, flush=True)
        self.lines.append(text)
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join(self.lines) + "\n")
            os.replace(tmp, self.path)


def train_on_budget(learner, manager, minutes: float, max_iterations: int, progress) -> float:
    """Runs ``learner.train(1)`` until ``minutes`` have passed or ``learner.step`` reaches
    ``max_iterations`` (0: no cap), saving ``manager`` every 10 iterations and at the end.

    ``progress(iteration, metrics, elapsed_s)`` is called after every iteration (it decides what to
    print). Returns the seconds spent.
    """
    t0 = time.perf_counter()
    while not (max_iterations and learner.step >= max_iterations):
        if time.perf_counter() - t0 > 60.0 * minutes:
            break
        metrics = learner.train(1)
        it = learner.step
        progress(it, metrics, time.perf_counter() - t0)
        if it % 10 == 0:
            manager.save(checkpoint_number=it)
    manager.save(checkpoint_number=learner.step)
    return time.perf_counter() - t0


def add_lr_drop_arg(parser) -> None:
    parser.add_argument("--lr-drop", type=float, nargs=2, default=None,
                        metavar=("ITERATION", "LR"),
                        help="from this iteration on (also when resuming past it), Adam's rate "
                             "is LR")


def train_with_evals(learner, test, args, digits: int = 3):
    """The RL² benchmarks' loop: resume from ``args.ckpt`` when it holds a checkpoint, then train
    in chunks of ``args.eval_every`` iterations up to ``args.iterations``, evaluating on ``test``
    and checkpointing after each, until ``args.max_minutes`` (0: no limit) have passed.
    ``args.lr_drop`` (iteration, rate) sets Adam's rate from that iteration on.

    Returns ``(first_iteration, seconds, stopped_on_time_budget)``.
    """
    import tensorflow as tf

    manager = None
    if args.ckpt:
        ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
        manager = tf.train.CheckpointManager(ckpt, args.ckpt, max_to_keep=2)
        if manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint)
            print(f"resumed at iteration {learner.step}", flush=True)
    drop_at = int(args.lr_drop[0]) if args.lr_drop else None
    t0 = time.perf_counter()
    start = learner.step
    while learner.step < args.iterations:
        if drop_at is not None and learner.step >= drop_at:
            learner.optimizer.learning_rate.assign(args.lr_drop[1])
        todo = min(args.eval_every - learner.step % args.eval_every,
                   args.iterations - learner.step)
        if drop_at is not None and learner.step < drop_at:
            todo = min(todo, drop_at - learner.step)
        m = learner.train(todo)
        ev = learner.evaluate(tasks=test, seed=3)
        print(f"iteration={learner.step} train_trial_return={m['trial_return']:.{digits}f} "
              f"entropy={m['entropy']:.3f} eval_total={ev['trial_return']:.{digits}f} "
              f"elapsed_s={time.perf_counter() - t0:.0f}", flush=True)
        if manager:
            manager.save(checkpoint_number=learner.step)
        if args.max_minutes and time.perf_counter() - t0 > 60 * args.max_minutes:
            return start, time.perf_counter() - t0, True
    return start, time.perf_counter() - t0, False


def lr_text(args) -> str:
    """``lr=...`` plus the drop, for the runs' summary line."""
    drop = f" lr_from_{int(args.lr_drop[0])}={args.lr_drop[1]}" if args.lr_drop else ""
    return f"lr={args.lr}{drop}"
