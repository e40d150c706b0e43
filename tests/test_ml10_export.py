"""An ML10 policy exported as an AdaptablePolicy, scored by examples/ml10_client.py (TensorFlow and
Meta-World only) under Meta-World's evaluator: the same figure as the library's protocol."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("metaworld")

from export.policy import export_policy_learner  # noqa: E402
from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner  # noqa: E402
from metarl_tf.integrations.metaworld import ProtocolConfig, evaluate_protocol  # noqa: E402
from metarl_tf.networks import gaussian_mlp_policy  # noqa: E402
from metarl_tf.tasks.metaworld import ML10Tasks, MAMLMetaWorldAgent  # noqa: E402

TINY = ["--num-evals", "1", "--meta-batch-size", "5", "--total-tasks-per-cls", "2",
        "--max-episode-steps", "10", "--adaptation-episodes", "2", "--evaluation-episodes", "1"]


def test_client_scores_the_export_like_the_library(tmp_path, repo_root):
    learner = MAMLRLLearner(gaussian_mlp_policy(39, 4, (16,), "tanh", seed=1), ML10Tasks(),
                            MAMLRLConfig(meta_batch_size=2, episodes_per_task=1, horizon=10))
    path = export_policy_learner(learner, str(tmp_path), "ml10", version=1)
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    out = subprocess.run([sys.executable, os.path.join(repo_root, "examples", "ml10_client.py"),
                          path, "--unadapted", *TINY], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    found = dict(re.findall(r"^(adapted|unadapted): meta-test success [0-9.]+, mean return "
                            r"(-?[0-9.]+)$", out.stdout, re.M))
    assert set(found) == {"adapted", "unadapted"}, out.stdout
    # The library's protocol on the same goals (seed 0, 5 sub-envs, 10-step episodes).
    protocol = ProtocolConfig("ML10", meta_batch_size=5, total_tasks_per_cls=2, num_evals=1,
                              adaptation_episodes=2, evaluation_episodes=1, max_episode_steps=10)
    ours = evaluate_protocol(lambda n: MAMLMetaWorldAgent(learner, n), protocol)["test"]
    # Unadapted, both act with the meta-learned mean on the same goals: the same episodes, the
    # same mean return (to float32 rounding of the two forward passes).
    assert float(found["unadapted"]) == pytest.approx(ours["unadapted_mean_return"], abs=1e-3)
    # Adapted, the exploration noise differs (the client draws its own): same scale only.
    assert abs(float(found["adapted"]) - ours["mean_return"]) < 0.5 * abs(ours["mean_return"])
