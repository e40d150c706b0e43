"""The ML10 presets end to end at a tiny episode length (--set overrides), resumed exactly, and
moved onto the Ray sampler at the resume."""
import json
import os

import pytest

pytest.importorskip("metaworld")
ray = pytest.importorskip("ray")

from training.config import apply_overrides, load_config  # noqa: E402
from training.run import train  # noqa: E402

TINY = ["algorithm_config.horizon=10", "algorithm_config.episodes_per_task=2",
        "algorithm_config.meta_batch_size=4", "eval_tasks=2", "network.hidden=[16]",
        "log_every=1", "checkpoint_every=1"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ml10_presets_load_with_the_papers_settings():
    cfg = load_config("maml-trpo-ml10")
    algo = cfg.algorithm_config
    # PAPERS.md 4-5: meta-batch 20, 10 episodes per task, 500 steps, inner lr 0.1, 300 iterations.
    assert (algo.meta_batch_size, algo.episodes_per_task, algo.horizon, algo.inner_lr) == \
        (20, 10, 500, 0.1)
    assert (cfg.steps, cfg.task, cfg.network.hidden, cfg.sampler.keyed) == \
        (300, "ml10", (100, 100), True)
    assert load_config("maml-trpo-ml45").sampler.backend == "ray"
    assert load_config("maml-promp-ml10").algorithm_config.outer == "promp"
    rl2 = load_config("rl2-ml10").algorithm_config
    assert (rl2.episodes_per_trial, rl2.horizon, rl2.meta_batch_size) == (10, 500, 10)
    with pytest.raises(ValueError, match="`sampler` applies to the gymnasium RL learners"):
        apply_overrides(load_config("rl2-ml10"), ["sampler.backend=ray"])
    with pytest.raises(ValueError, match="`sampler.backend` must be one of"):
        apply_overrides(cfg, ["sampler.backend=dask"])


def test_two_iterations_resume_exactly_and_move_to_ray(tmp_path, cluster):
    base = apply_overrides(load_config("maml-trpo-ml10"), TINY + ["steps=2"])
    whole = train(base, str(tmp_path / "whole"), quiet=True)
    assert whole["steps"] == 2 and whole["final_metrics"]["env_faults"] == 0
    assert len(whole["eval"]["returns"]) == 2                       # before / after one step

    half = apply_overrides(base, ["steps=1"])
    train(half, str(tmp_path / "split"), quiet=True)
    on_ray = apply_overrides(base, ["sampler.backend=ray", "sampler.num_workers=2"])
    resumed = train(on_ray, str(tmp_path / "split"), quiet=True, resume=True)
    # keyed local and Ray episodes are the same, and the resume restores every variable: the
    # second iteration's metrics and the final evaluation equal the uninterrupted run's.
    assert resumed["steps"] == 2
    assert resumed["final_metrics"] == whole["final_metrics"]
    assert resumed["eval"]["returns"] == whole["eval"]["returns"]
    with open(os.path.join(tmp_path / "split", "config.json")) as f:
        assert json.load(f)["sampler"]["backend"] == "ray"
    # An unkeyed sampler would give other episodes: that change is refused on resume.
    with pytest.raises(ValueError, match="holds a different run"):
        train(apply_overrides(base, ["sampler.keyed=false", "steps=3"]),
              str(tmp_path / "split"), quiet=True, resume=True)
