"""Non-finite guard for the run loop: a NaN/inf loss, gradient or parameter is never checkpointed.

``NonFiniteGuard.train(n)`` wraps ``learner.train(n)``. Before each call it snapshots every variable
the learner checkpoints (network, optimiser slots, rates, step counter: a few KB to MB for the
models meta-learned here, copied host-side once per log/checkpoint boundary). After the call it
checks the returned metrics and every floating-point variable. On a non-finite value it rolls the
learner back to the snapshot -- so a compiled multi-step execution (``steps_per_execution``) never
leaves a bad update applied -- and replays the execution one meta-step at a time to find the first
bad meta-step (the learners sample with stateless seeds keyed on the step counter, so the replay
draws the same batches). For that step it names the tensor: the first non-finite metric (e.g.
``query_loss``), else the first non-finite gradient (learners with ``grads`` and ``_sample``: the
MAML family), else the first non-finite parameter after the update. It saves the offending batch
to ``RUN_DIR/nonfinite/step_<n>.npz`` (the sampled support/query tensors for supervised learners,
regenerated from the step-keyed seed; for other learners the seed and step only, with
``batch_saved=False``), rolls back to the state before that step, and then either raises
``NonFiniteError`` or, while fewer than ``skip_nonfinite`` batches were skipped, advances the step
counter past the bad batch without applying it and carries on.
"""
from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf


class NonFiniteError(FloatingPointError):
    """A loss, gradient or parameter became NaN/inf; the message names the meta-step and tensor."""


def _collect(obj, out: list, seen: set) -> None:
    if isinstance(obj, (list, tuple)):
        for o in obj:
            _collect(o, out, seen)
        return
    if isinstance(obj, dict):
        for o in obj.values():
            _collect(o, out, seen)
        return
    if hasattr(obj, "assign") and hasattr(obj, "numpy"):   # tf.Variable or keras.Variable
        if id(obj) not in seen:
            seen.add(id(obj))
            out.append(obj)
        return
    variables = getattr(obj, "variables", None)               # keras Model / Optimizer, tf.Module
    if variables is not None and not callable(variables):
        _collect(list(variables), out, seen)
    elif isinstance(obj, tf.train.Checkpoint):                 # e.g. Meta-DQN's target network
        _collect([d for d in tf.train.TrackableView(obj).descendants()
                  if isinstance(d, tf.Variable)], out, seen)


def _name(var) -> str:
    name = getattr(var, "path", None) or getattr(var, "name", "?")
    return name[:-2] if name.endswith(":0") else name


def _is_float(var) -> bool:
    return tf.as_dtype(var.dtype).is_floating


class NonFiniteGuard:
    """Runs ``learner.train`` so that no non-finite update survives (see the module docstring).

    Args:
      learner: anything with ``.step``, ``.train(n)`` and ``.checkpoint_items()`` (with the step
        counter under ``"step"`` for skipping).
      run_dir: where ``nonfinite/step_<n>.npz`` files go (None: nowhere).
      skip_nonfinite: how many bad batches to skip before raising (0: raise on the first).
    """

    def __init__(self, learner, run_dir: str | None, skip_nonfinite: int = 0):
        if isinstance(skip_nonfinite, bool) or not isinstance(skip_nonfinite, int) or \
                skip_nonfinite < 0:
            raise ValueError(f"`skip_nonfinite` must be an integer >= 0, got {skip_nonfinite!r}")
        self.learner = learner
        self.run_dir = run_dir
        self.skip_nonfinite = skip_nonfinite
        self.skipped = 0
        items = learner.checkpoint_items()
        self.variables: list = []
        _collect(items, self.variables, set())
        self.step_variable = items.get("step")

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self) -> list[np.ndarray]:
        return [np.array(v.numpy(), copy=True) for v in self.variables]

    def restore(self, snapshot) -> None:
        for var, value in zip(self.variables, snapshot):
            var.assign(value)

    def _bad_variable(self) -> str | None:
        for var in self.variables:
            if _is_float(var) and not np.isfinite(var.numpy()).all():
                return _name(var)
        return None

    @staticmethod
    def _bad_metric(metrics: dict) -> str | None:
        for key, value in metrics.items():
            if not math.isfinite(value):
                return f"{key} is {value}"
        return None

    # -- the guarded call -----------------------------------------------------------------------
    def train(self, steps: int) -> dict:
        """``learner.train(steps)`` with the guarantee above; returns the last metrics."""
        before = self.snapshot()
        first = self.learner.step
        metrics = self.learner.train(steps)
        if self._bad_metric(metrics) is None and self._bad_variable() is None:
            return metrics
        # Roll the whole execution back, then replay it step by step to find the bad meta-step.
        self.restore(before)
        target = first + steps
        while self.learner.step < target:
            good = self.snapshot()
            step = self.learner.step
            metrics = self.learner.train(1)
            bad = self._bad_metric(metrics)
            if bad is None:
                bad_var = self._bad_variable()
                if bad_var is not None:
                    self.restore(good)
                    bad = self._bad_gradient(step) or f"parameter {bad_var} is not finite"
                    self._capture(good, step)
                    metrics = self._handle(bad, step)
                    continue
                continue
            self.restore(good)
            self._capture(good, step)
            metrics = self._handle(bad, step)
        return metrics

    def _capture(self, good, step: int) -> None:
        self.restore(good)
        self._save_batch(step)

    def _handle(self, what: str, step: int) -> dict:
        """Raises, or skips the batch of meta-step ``step`` (the learner is at its state before)."""
        where = (f" (batch saved to {self._batch_path(step)})" if self.run_dir else "")
        if self.skipped >= self.skip_nonfinite:
            raise NonFiniteError(
                f"{what} at meta-step {step}; the update was not applied and the last good "
                f"checkpoint is kept{where}"
                + (f"; {self.skipped} bad batches were already skipped (--skip-nonfinite "
                   f"{self.skip_nonfinite})" if self.skip_nonfinite else
                   "; pass --skip-nonfinite N to skip up to N bad batches"))
        if self.step_variable is None:
            raise NonFiniteError(f"{what} at meta-step {step}; cannot skip the batch: the learner "
                                 "checkpoints no step counter under 'step'")
        self.skipped += 1
        print(f"warning: {what} at meta-step {step}; batch skipped ({self.skipped}/"
              f"{self.skip_nonfinite}){where}", flush=True)
        self.step_variable.assign_add(1)     # the next meta-step samples a fresh batch
        return {"nonfinite_skipped": float(self.skipped)}

    # -- naming the gradient and saving the batch ----------------------------------------------
    def _batch(self, step: int):
        """The batch of meta-step ``step`` regenerated from its seed, or None when not possible."""
        learner = self.learner
        if not (callable(getattr(learner, "_sample", None)) and hasattr(learner, "seed")):
            return None
        try:
            seed = tf.constant([learner.seed, step], tf.int64)
            return learner._sample(seed)
        except TypeError:       # a learner whose _sample takes other arguments (RL², ...)
            return None

    def _bad_gradient(self, step: int) -> str | None:
        learner, batch = self.learner, self._batch(step)
        if batch is None or not callable(getattr(learner, "grads", None)):
            return None
        _, _, grads = learner.grads(batch)
        for var, grad in zip(learner.meta_variables, grads):
            if grad is not None and not np.isfinite(tf.convert_to_tensor(grad).numpy()).all():
                return f"gradient of {_name(var)} is not finite"
        return None

    def _batch_path(self, step: int) -> str:
        return os.path.join(self.run_dir, "nonfinite", f"step_{step}.npz")

    def _save_batch(self, step: int) -> None:
        if not self.run_dir:
            return
        batch = self._batch(step)
        arrays = {"meta_step": np.int64(step), "seed": np.int64(getattr(self.learner, "seed", -1)),
                  "batch_saved": np.bool_(batch is not None)}
        if batch is not None:
            fields = batch._asdict() if hasattr(batch, "_asdict") else vars(batch)
            for key, value in fields.items():
                arrays[key] = np.asarray(tf.convert_to_tensor(value))
        path = self._batch_path(step)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
