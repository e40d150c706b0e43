"""Reliability (issue #7) points 2 and 3: non-finite values stop (or skip) cleanly, environment
faults are restarted and counted or stop with a clear error. Machinery: ``training/nonfinite.py``
and ``metarl_tf/rollouts/sampler.py``."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import tasks as task_families
from training import reliability
from training.nonfinite import NonFiniteError
from training.run import checkpoint_manager, train


def _config():
    # 20 meta-steps, checkpoints every 10, compiled executions of 5 steps: step 13 lies inside the
    # execution 10..14, so the guard must roll back a multi-step call and replay it step by step.
    return reliability.tiny_maml_config(20)


@pytest.fixture
def poisoned(monkeypatch):
    def poison(*bad_steps):
        monkeypatch.setattr(task_families, "SinusoidTasks",
                            reliability.poisoned_sinusoids(bad_steps, _config().seed))
    poison(13)
    return poison


def test_nan_loss_stops_naming_step_and_tensor_keeps_checkpoint_saves_batch(poisoned, tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(NonFiniteError, match=r"query_loss is nan at meta-step 13; the update was "
                                             r"not applied and the last good checkpoint is kept"):
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
    poisoned(3, 7)
    with pytest.raises(NonFiniteError, match=r"query_loss is nan at meta-step 7; .*1 bad "
                                             r"batches were already skipped"):
        train(_config(), str(tmp_path / "run2"), quiet=True, skip_nonfinite=1)


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


# -- point 3: environment faults in the gymnasium sampler --------------------------------------
from metarl_tf.rollouts.sampler import EnvFaults, collect_episodes, make_vector_env  # noqa: E402
from metarl_tf.tasks import PointNavTasks  # noqa: E402


def FaultyEnv(env, how, marker=None):
    return reliability.faulty_env(env, how, at=3, marker=marker)


def _random_policy(obs, task_ids):
    return np.random.default_rng(0).uniform(-0.1, 0.1, (len(obs), 2)).astype(np.float32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")     # gymnasium: closing a dead worker's env
@pytest.mark.parametrize("how,asynchronous", [("raise", False), ("nan", False), ("exit", True)])
def test_env_fault_restarts_recollects_and_counts(how, asynchronous, tmp_path):
    family = PointNavTasks()
    marker = str(tmp_path / "faulted")
    envs = make_vector_env(lambda: FaultyEnv(family.make_env(), how, marker=marker), num_envs=2,
                           asynchronous=asynchronous, context="fork" if asynchronous else None)
    faults = EnvFaults()
    try:
        # 2 tasks x 2 episodes, 2 sub-envs: 2 waves; the fault hits wave 0 at step 3.
        with pytest.warns(RuntimeWarning, match=r"environment fault 1/3, restarting"):
            ep = collect_episodes(envs, _random_policy, family.sample(2, seed=0),
                                  episodes_per_task=2, horizon=5, seed=0, faults=faults)
        assert os.path.exists(marker)                   # the fault was injected...
        assert faults.count == 1, faults.messages       # ...recorded once...
        assert "wave 0, step 3" in faults.messages[0] or "after step 3" in faults.messages[0]
        # ...and the wave re-collected: well-formed [T=2, N=2, H=5], all steps valid and finite.
        assert ep.observations.shape == (2, 2, 5, 2) and ep.mask.shape == (2, 2, 5)
        assert ep.mask.sum() == 2 * 2 * 5 and np.isfinite(ep.observations).all()
        # The restarted vector env keeps working.
        ep = collect_episodes(envs, _random_policy, family.sample(2, seed=1),
                              episodes_per_task=1, horizon=5, faults=faults)
        assert faults.count == 1 and ep.mask.sum() == 10
    finally:
        envs.close(terminate=True) if asynchronous else envs.close()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_persistent_env_fault_stops_after_max_env_faults():
    family = PointNavTasks()
    envs = make_vector_env(lambda: FaultyEnv(family.make_env(), "raise"), num_envs=2)
    faults = EnvFaults()
    with pytest.raises(RuntimeError, match=r"wave 0, step 3, tasks \[0, 1\].*simulator exploded "
                                           r"\[environment fault 3 in this rollout, more than "
                                           r"max_env_faults=2\]"):
        collect_episodes(envs, _random_policy, family.sample(2, seed=0), episodes_per_task=1,
                         horizon=5, max_env_faults=2, faults=faults)
    assert faults.count == 2   # faults 1 and 2 were recovered (restart), the 3rd raised
    with pytest.raises(ValueError, match=r"`max_env_faults` must be an integer >= 0, got -1"):
        collect_episodes(envs, _random_policy, family.sample(2, seed=0), episodes_per_task=1,
                         horizon=5, max_env_faults=-1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_maml_rl_learner_reports_env_faults_as_a_metric(tmp_path):
    """The gymnasium path of MAML-RL counts recovered faults in its `env_faults` metric, which the
    run loop writes to TensorBoard with the other metrics."""
    from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner
    from metarl_tf.networks.policies import gaussian_mlp_policy
    family = PointNavTasks()
    marker = str(tmp_path / "faulted")
    envs = make_vector_env(lambda: FaultyEnv(family.make_env(), "raise", marker=marker),
                           num_envs=2)
    cfg = MAMLRLConfig(outer="promp", meta_batch_size=2, episodes_per_task=1, horizon=5,
                       promp_steps=1)
    learner = MAMLRLLearner(gaussian_mlp_policy(2, 2, hidden=(8,), activation="tanh", seed=0),
                            family, cfg, vector_env=envs)
    metrics = learner.train(1)
    assert metrics["env_faults"] == 1.0 and np.isfinite(metrics["post_return"])
    with pytest.raises(ValueError, match=r"`max_env_faults` must be an integer >= 0, got -1"):
        MAMLRLConfig(max_env_faults=-1)


def test_cli_skip_nonfinite_flag(poisoned, tmp_path, capsys):
    from training.cli import main
    run_dir = str(tmp_path / "run")
    overrides = [a for o in ("checkpoint_every=10", "log_every=10", "eval_tasks=5", "eval_steps=1",
                             "eval_query=5", "algorithm_config.jit_compile=false",
                             "algorithm_config.steps_per_execution=5",
                             "algorithm_config.meta_batch_size=4") for a in ("--set", o)]
    assert main(["train", "maml-sinusoid", "--out", run_dir, "--steps", "20", "--quiet",
                 "--skip-nonfinite", "1", *overrides]) == 0
    out = capsys.readouterr().out
    assert "query_loss is nan at meta-step 13; batch skipped (1/1)" in out and "steps=20" in out
    assert main(["train", "maml-sinusoid", "--out", str(tmp_path / "r2"), "--skip-nonfinite",
                 "-1"]) == 2
    assert "--skip-nonfinite must be >= 0, got -1" in capsys.readouterr().err
    # Without the flag the CLI stops with a one-line error (exit status 2), no traceback.
    assert main(["train", "maml-sinusoid", "--out", str(tmp_path / "r3"), "--steps", "20",
                 "--quiet", *overrides]) == 2
    assert ("metarl train: error: query_loss is nan at meta-step 13; the update was not applied"
            in capsys.readouterr().err)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_reliability_table_rows_for_faults(tmp_path):
    """The functions behind docs/RELIABILITY.md's non-finite and env-fault rows."""
    for trial in reliability.ENV_FAULT_TRIALS:
        result = reliability.env_fault_trial(str(tmp_path), *trial)
        assert result["handled"], result
    result = reliability.nonfinite_trial(str(tmp_path), (3, 7), float("inf"), 2)
    assert result["handled"] and result["saved"] == ["step_3.npz", "step_7.npz"], result
