"""Reliability (issue #7) points 2 and 3: non-finite values stop (or skip) cleanly, environment
faults are restarted and counted or stop with a clear error. Machinery: ``training/nonfinite.py``
and ``metarl_tf/rollouts/sampler.py``."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import tasks as task_families
from training.config import apply_overrides, load_config
from training.nonfinite import NonFiniteError
from training.run import checkpoint_manager, train

BAD_STEPS = (13,)


class PoisonedSinusoids(task_families.SinusoidTasks):
    """Sinusoids with NaN amplitudes at the meta-steps in BAD_STEPS.

    The learner samples meta-step n with the stateless seed (config seed, n), and
    ``sample_task_batch`` draws the task parameters with the first half of its split.
    """

    def sample_task_params(self, seed, num_tasks):
        params = super().sample_task_params(seed, num_tasks)
        base = _config().seed
        bad_seeds = tf.stack([tf.random.experimental.stateless_split(
            tf.constant([base, n], tf.int64), 2)[0] for n in BAD_STEPS])
        bad = tf.reduce_any(tf.reduce_all(tf.equal(tf.cast(seed, tf.int64)[None], bad_seeds), -1))
        return tf.where(bad, params * float("nan"), params)


def _config(steps=20):
    # 20 meta-steps, checkpoints every 10, compiled executions of 5 steps: step 13 lies inside the
    # execution 10..14, so the guard must roll back a multi-step call and replay it step by step.
    return apply_overrides(load_config("maml-sinusoid"), [
        f"steps={steps}", "checkpoint_every=10", "log_every=10", "eval_tasks=5", "eval_steps=1",
        "eval_query=5", "algorithm_config.jit_compile=false",
        "algorithm_config.steps_per_execution=5", "algorithm_config.meta_batch_size=4"])


@pytest.fixture
def poisoned(monkeypatch):
    monkeypatch.setattr(task_families, "SinusoidTasks", PoisonedSinusoids)


def test_nan_loss_stops_naming_step_and_tensor_keeps_checkpoint_saves_batch(poisoned, tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(NonFiniteError, match=r"query_loss is nan at meta-step 13; the update "
                                             r"was not applied and the last good checkpoint is kept"):
        train(_config(), run_dir, quiet=True)
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    # Checkpoints at step 10 only: the bad state (and nothing after step 10) was never saved.
    assert "checkpoint" in ckpts and any(c.startswith("ckpt-10.") for c in ckpts), ckpts
    assert not any(c.startswith("ckpt-20.") for c in ckpts), ckpts
    batch = np.load(os.path.join(run_dir, "nonfinite", "step_13.npz"))
    assert int(batch["meta_step"]) == 13 and bool(batch["batch_saved"])
    # meta_batch_size 4, sinusoid preset K = 10 support points: [4, 10, 1]; amplitudes are NaN.
    assert batch["support_x"].shape == (4, 10, 1)
    assert np.isnan(batch["task_params"]).all() and np.isnan(batch["support_y"]).all()


def test_skip_nonfinite_skips_the_bad_batch_without_applying_it(poisoned, tmp_path):
    run_dir = str(tmp_path / "run")
    summary = train(_config(), run_dir, quiet=True, skip_nonfinite=1)
    assert summary["steps"] == 20
    assert os.path.exists(os.path.join(run_dir, "nonfinite", "step_13.npz"))
    # The weights in the final checkpoint are finite: the NaN update was rolled back.
    from training.config import build_learner
    from training.run import restore_latest
    learner = build_learner(_config())
    restore_latest(checkpoint_manager(learner, run_dir))
    assert learner.step == 20
    assert all(np.isfinite(v.numpy()).all() for v in learner.model.variables)
    # Skipping is bounded: two bad steps with --skip-nonfinite 1 stop at the second.
    global BAD_STEPS
    BAD_STEPS = (3, 7)
    try:
        with pytest.raises(NonFiniteError, match=r"query_loss is nan at meta-step 7; .*1 bad "
                                                 r"batches were already skipped"):
            train(_config(), str(tmp_path / "run2"), quiet=True, skip_nonfinite=1)
    finally:
        BAD_STEPS = (13,)


def test_nonfinite_gradient_is_named(tmp_path):
    """Finite loss, non-finite gradient: sqrt(w - stop_gradient(w)) is 0, its derivative
    0.5 / sqrt(0) = inf, at meta-step 2 only."""
    from training.config import build_learner
    from training.nonfinite import NonFiniteGuard
    learner = build_learner(_config())
    kernel = learner.meta_variables[0]
    original = learner.meta_loss

    def meta_loss(batch):
        loss, pre = original(batch)
        poison = tf.where(tf.equal(learner.step_counter, 2),
                          tf.reduce_sum(tf.sqrt(kernel - tf.stop_gradient(kernel))), 0.0)
        return loss + poison, pre
    learner.meta_loss = meta_loss
    guard = NonFiniteGuard(learner, str(tmp_path))
    with pytest.raises(NonFiniteError, match=r"gradient of \S*kernel is not finite at meta-step 2"):
        guard.train(5)
    assert learner.step == 2  # rolled back to the state before the bad meta-step
    assert all(np.isfinite(v.numpy()).all() for v in learner.meta_variables)
