"""The training pipeline: run dir contents, exact resume, corrupted checkpoints, --set, determinism."""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from training.config import apply_overrides, list_presets, load_config
from training.run import train

TINY = dict(steps=200, log_every=50, checkpoint_every=100, eval_tasks=50, eval_query=20,
            eval_steps=2)


def tiny(preset="maml-sinusoid", **kw):
    return dataclasses.replace(load_config(preset), **{**TINY, **kw})


def scalars(run_dir):
    out = {}
    for path in glob.glob(os.path.join(run_dir, "tensorboard", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return out


def test_run_dir_holds_config_checkpoints_scalars_summary_and_plot(tmp_path):
    run = str(tmp_path / "run")
    summary = train(tiny(), run, quiet=True)
    assert json.load(open(os.path.join(run, "config.json")))["steps"] == 200
    assert tf.train.latest_checkpoint(os.path.join(run, "checkpoints")).endswith("ckpt-200")
    tags = scalars(run)
    assert [s for s, _ in tags["query_loss"]] == [50, 100, 150, 200]
    for tag in ("support_loss", "steps_per_s", "wall_time", "eval/mse_after_2_steps"):
        assert tag in tags, tag
    assert summary["steps"] == 200 and len(summary["eval"]["mse"]) == 3
    assert os.path.getsize(os.path.join(run, "adaptation_curve.png")) > 1000


@pytest.mark.parametrize("preset", ["maml-sinusoid", "metasgd-sinusoid"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, preset):
    straight = train(tiny(preset), str(tmp_path / "a"), quiet=True)
    half = str(tmp_path / "b")
    train(tiny(preset, steps=100), half, quiet=True)
    resumed = train(tiny(preset), half, quiet=True, resume=True)
    assert resumed["final_metrics"] == straight["final_metrics"]
    assert resumed["eval"]["mse"] == straight["eval"]["mse"]


def test_resume_refuses_a_different_run(tmp_path):
    run = str(tmp_path / "run")
    train(tiny(steps=50), run, quiet=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny(steps=50), run, quiet=True)
    with pytest.raises(ValueError, match="holds a different run"):
        train(tiny(steps=100, seed=3), run, quiet=True, resume=True)


def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    run = str(tmp_path / "run")
    train(tiny(), run, quiet=True)  # checkpoints at 100 and 200
    for path in glob.glob(os.path.join(run, "checkpoints", "ckpt-200.data-*")):
        with open(path, "r+b") as f:
            f.truncate(16)
    summary = train(tiny(steps=250), run, quiet=True, resume=True)
    assert "ckpt-200 could not be restored" in capsys.readouterr().err
    assert summary["steps"] == 250
    for path in glob.glob(os.path.join(run, "checkpoints", "ckpt-*.index")):
        os.remove(path)
    with pytest.raises(ValueError, match="none of the checkpoints"):
        train(tiny(steps=300), run, quiet=True, resume=True)


def test_overrides_and_their_errors():
    cfg = apply_overrides(load_config("maml-sinusoid"),
                          ["algorithm_config.inner_lr=0.02", "network.hidden=[8, 8]", "steps=10"])
    assert cfg.algorithm_config.inner_lr == 0.02 and cfg.network.hidden == (8, 8) and cfg.steps == 10
    with pytest.raises(ValueError, match="unknown key `inner_rate`; valid keys"):
        apply_overrides(cfg, ["algorithm_config.inner_rate=1"])
    with pytest.raises(ValueError, match="`inner_lr` must be a finite number"):
        apply_overrides(cfg, ["algorithm_config.inner_lr=-1"])
    with pytest.raises(ValueError, match="expects KEY=VALUE"):
        apply_overrides(cfg, ["steps"])
    assert apply_overrides(cfg, ["algorithm=reptile"]).algorithm_config.inner_steps == 5


def test_every_preset_loads_and_describes_itself():
    presets = list_presets()
    assert {"maml-sinusoid", "fomaml-sinusoid", "metasgd-sinusoid", "reptile-sinusoid"} <= set(presets)
    for name, description in presets.items():
        assert description, name
        assert load_config(name).name == name


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(str(bad))


DETERMINISM = r"""
import dataclasses, json, sys
from training.config import load_config
from training.run import train
cfg = dataclasses.replace(load_config("maml-sinusoid"), steps=60, log_every=30, checkpoint_every=60,
                          eval_tasks=20, eval_steps=1, deterministic=True, seed=4)
print(json.dumps(train(cfg, sys.argv[1], quiet=True)["final_metrics"]))
"""


def test_two_deterministic_runs_give_identical_metrics(tmp_path, repo_root):
    outs = []
    for name in ("a", "b"):
        out = subprocess.run([sys.executable, "-c", DETERMINISM, str(tmp_path / name)], cwd=repo_root,
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert out.returncode == 0, out.stderr[-2000:]
        outs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]


def test_algorithm_pages_document_every_config_field(repo_root):
    from metarl_tf.algorithms import MAMLConfig, MetaSGDConfig, ReptileConfig
    from metarl_tf.algorithms.maml_rl import MAMLRLConfig, ReptileRLConfig
    for page, classes in (("maml.md", [MAMLConfig]), ("metasgd.md", [MetaSGDConfig]),
                          ("reptile.md", [ReptileConfig]),
                          ("maml-rl.md", [MAMLRLConfig, ReptileRLConfig])):
        text = open(os.path.join(repo_root, "docs", "algorithms", page)).read()
        for cls in classes:
            for field in dataclasses.fields(cls):
                assert f"`{field.name}`" in text, (page, field.name)


def test_rl2_tabular_preset_builds_a_separate_value_cell():
    # The preset sets algorithm_config.separate_value: the pipeline's policy then carries the policy
    # cell's state and the value cell's, twice the cell width; the default keeps one shared cell.
    from training.config import build_learner
    config = load_config("rl2-tabular")
    assert config.algorithm_config.separate_value is True
    width = config.network.hidden[-1]
    assert build_learner(config).policy.state_size == 2 * width
    shared = dataclasses.replace(config, algorithm_config=dataclasses.replace(
        config.algorithm_config, separate_value=False))
    assert build_learner(shared).policy.state_size == width


def test_rl2_separate_value_must_be_a_bool():
    from metarl_tf.algorithms.rl2 import RL2Config
    with pytest.raises((TypeError, ValueError), match="separate_value"):
        RL2Config(separate_value="yes")
