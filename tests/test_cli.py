"""The `metarl` command line, run as a user would, on a tiny budget."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.tflite import TFLiteModel
from training.config import ExperimentConfig, load_config


def metarl(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_train_then_export_end_to_end(tmp_path, repo_root):
    run_dir, base = str(tmp_path / "run"), str(tmp_path / "exports")
    out = metarl("train", "maml-sinusoid", "--out", run_dir, "--steps", "120", "--algo", "metasgd",
                 "--shots", "5", "--quiet", "--threads", "1", cwd=repo_root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mse_after_1_steps=" in out.stdout
    for name in ("config.json", "summary.json", "checkpoints", "tensorboard", "adaptation_curve.png"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["algorithm"] == "metasgd" and config["algorithm_config"]["num_support"] == 5
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["steps"] == 120 and len(summary["eval"]["mse"]) == 11

    first = metarl("export", run_dir, "--to", base, "--name", "sin", cwd=repo_root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.strip() == os.path.join(base, "sin", "1")
    assert os.path.exists(os.path.join(base, "sin", "1", "saved_model.pb"))
    again = metarl("export", run_dir, "--to", base, "--name", "sin", "--version", "1", cwd=repo_root)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert metarl("export", run_dir, "--to", base, "--name", "sin",
                  cwd=repo_root).stdout.strip().endswith(os.path.join("sin", "2"))

    # --tflite converts the new export beside its version directory (TF Serving ignores files).
    lite = metarl("export", run_dir, "--to", base, "--name", "sin", "--tflite", cwd=repo_root)
    assert lite.returncode == 0, lite.stderr[-3000:]
    saved, lite_path = lite.stdout.split()
    assert saved == os.path.join(base, "sin", "3") and lite_path == saved + ".tflite"
    xs = np.linspace(-4, 4, 5, dtype=np.float32)[:, None]
    inputs = dict(support_x=xs, support_y=np.sin(xs), query_x=xs[:3])
    # 3 steps, or the export's bound when it validated fewer (export/step_bounds.py)
    steps = min(3, json.load(open(os.path.join(saved, "assets.extra", "metarl_tf.json")))[
        "max_num_steps"])
    want = tf.saved_model.load(saved).signatures["adapt"](
        **inputs, num_steps=tf.constant(steps))["y"].numpy()
    got = TFLiteModel(lite_path)("adapt", **inputs, num_steps=steps)["y"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_resume_continues_a_run(tmp_path, repo_root):
    run_dir = str(tmp_path / "run")
    assert metarl("train", "maml-sinusoid", "--out", run_dir, "--steps", "60", "--quiet",
                  cwd=repo_root).returncode == 0
    refused = metarl("train", "maml-sinusoid", "--out", run_dir, "--steps", "60", cwd=repo_root)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    more = metarl("train", "--resume", run_dir, "--steps", "100", "--quiet", cwd=repo_root)
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.load(open(os.path.join(run_dir, "summary.json")))["steps"] == 100


def test_bad_arguments_are_refused_clearly(tmp_path, repo_root):
    out = metarl("train", "no-such-preset", "--out", str(tmp_path / "r"), cwd=repo_root)
    assert out.returncode == 2 and "unknown preset 'no-such-preset'" in out.stderr
    out = metarl("train", "maml-sinusoid", "--out", str(tmp_path / "r"), "--shots", "0",
                 cwd=repo_root)
    assert out.returncode == 2 and "num_support" in out.stderr
    out = metarl("export", str(tmp_path / "nothing"), "--to", str(tmp_path), cwd=repo_root)
    assert out.returncode == 2 and "not a run directory" in out.stderr
    listed = metarl("presets", cwd=repo_root).stdout.splitlines()
    assert any(line.startswith("maml-sinusoid ") and "MAML on sinusoids" in line for line in listed)
    assert any(line.startswith("maml-trpo-pointnav ") for line in listed)


def test_config_refuses_unknown_keys_and_values_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['inner_rate'\] in `algorithm_config`"):
        ExperimentConfig.from_dict({"algorithm_config": {"inner_rate": 0.1}})
    with pytest.raises(ValueError, match="`algorithm` must be one of"):
        ExperimentConfig.from_dict({"algorithm": "mamal"})
    with pytest.raises(ValueError, match="`hidden`"):
        ExperimentConfig.from_dict({"network": {"hidden": [0]}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: -5\n")
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        load_config(str(bad))


def test_cli_algorithm_names_match_the_config():
    from training.cli import ALGORITHM_NAMES
    from training.config import ALGORITHMS
    assert sorted(ALGORITHM_NAMES) == sorted(ALGORITHMS)


def test_switching_algorithm_keeps_the_shared_fields():
    cfg = load_config("maml-sinusoid").with_shots(5)
    reptile = cfg.with_algorithm("reptile")
    assert reptile.algorithm_config.num_support == 5 and reptile.algorithm_config.inner_lr == 0.01
    fomaml = cfg.with_algorithm("fomaml")
    assert fomaml.algorithm_config.first_order and fomaml.algorithm_config.inner_lr == 0.01
    assert not fomaml.with_algorithm("maml").algorithm_config.first_order


EVERY_PRESET = r"""
import json, os, sys
from training.cli import main
from training.config import kind_of, list_presets, load_config
# Tiny-budget overrides by kind of run; a new kind of learner adds its own line here.
TINY = {
    "supervised": ["--steps", "3", "--set", "algorithm_config.steps_per_execution=3",
                   "--set", "eval_query=5"],
    "rl": ["--steps", "1", "--set", "algorithm_config.meta_batch_size=2",
           "--set", "algorithm_config.episodes_per_task=2", "--set", "algorithm_config.horizon=5"],
    "dqn": ["--steps", "2"] + [x for kv in (
        "num_train_tasks=2", "meta_batch_size=2", "support_size=8", "random_buffer_size=8",
        "replay_capacity=16", "steps_per_execution=2", "jit_compile=false")
        for x in ("--set", f"algorithm_config.{kv}")],
    "rl2": ["--steps", "1"] + [x for kv in ("meta_batch_size=2", "episodes_per_trial=2",
                                            "num_epochs=1", "num_minibatches=1")
                               for x in ("--set", f"algorithm_config.{kv}")],
    "pearl": ["--steps", "1"] + [x for kv in (
        "num_train_tasks=2", "meta_batch_size=2", "num_tasks_sample=1", "num_initial_steps=5",
        "num_steps_prior=5", "num_extra_rl_steps_posterior=5", "horizon=5",
        "num_train_steps_per_itr=2", "batch_size=4", "embedding_batch_size=4",
        "replay_capacity=20", "encoder_hidden=[8]", "num_envs=1")
        for x in ("--set", f"algorithm_config.{kv}")],
}
out = {}
for name in list_presets():
    run_dir = os.path.join(sys.argv[1], name)
    tiny = ["--set", "log_every=1", "--set", "checkpoint_every=1", "--set", "eval_tasks=2",
            "--set", "eval_steps=1", "--set", "network.hidden=[8]"]
    tiny += TINY[kind_of(load_config(name))]
    code = main(["train", name, "--out", run_dir, "--quiet", "--threads", "1", *tiny])
    export = main(["export", run_dir, "--to", os.path.join(sys.argv[1], "exports")]) if code == 0 else -1
    out[name] = {"train": code, "export": export, "files": sorted(os.listdir(run_dir))}
print(json.dumps(out))
"""


def test_every_preset_trains_and_exports_through_the_cli(tmp_path, repo_root):
    """Each preset on a tiny budget: the run directory's files, a readable event file, an export."""
    import glob

    import tensorflow as tf

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", EVERY_PRESET, str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=repo_root, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) >= 12
    for name, r in result.items():
        assert r["train"] == 0 and r["export"] == 0, (name, r)
        for f in ("adaptation_curve.png", "checkpoints", "config.json", "summary.json",
                  "tensorboard"):
            assert f in r["files"], (name, f)
        events = glob.glob(str(tmp_path / name / "tensorboard" / "events.*"))
        tags = {v.tag for e in events for ev in tf.compat.v1.train.summary_iterator(e)
                for v in ev.summary.value}
        assert "steps_per_s" in tags and any(t.startswith("eval/") for t in tags), (name, tags)
        assert os.path.exists(tmp_path / "exports" / name / "1" / "saved_model.pb"), name


def test_command_line_is_quiet_and_presets_skip_tensorflow(tmp_path, repo_root):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # `presets` reads the YAML files only: TensorFlow is never imported
    code = ("import sys; from training.cli import main; main(['presets']); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=repo_root, timeout=120)
    assert out.stdout.strip().endswith("False"), out.stdout[-500:]
    # a command that imports TensorFlow prints no start-up log unless --verbose
    run = [sys.executable, "-m", "training.cli"]
    quiet = subprocess.run([*run, "evaluate", str(tmp_path / "none")], capture_output=True,
                           text=True, env=env, cwd=repo_root, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"metarl evaluate: error: {tmp_path / 'none'} is not a run directory: no config.json"]
    loud = subprocess.run([*run, "--verbose", "evaluate", str(tmp_path / "none")],
                          capture_output=True, text=True, env=env, cwd=repo_root, timeout=300)
    assert loud.returncode == 2 and len(loud.stderr.strip().splitlines()) > 1


def test_gymnasium_ids_after_import_metarl_tf(repo_root):
    code = ("import gymnasium as gym, metarl_tf; gym.register_envs(metarl_tf); "
            "env = gym.make('metarl_tf/PointNav-v0'); print(env.reset(seed=0)[0].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=repo_root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[0.0, 0.0]"
