"""Pieces the benchmarks share: ``Report`` (print and keep the output in a file, written
atomically) and ``train_on_budget`` (a time-budgeted training loop with checkpoints)."""
from __future__ import annotations

import os
import statistics
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


def median_ms(fn, repeats: int, warmup: int = 20) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(statistics.median(times))
