"""AdaptableContextPolicy: adapt / action_with_z / serving_default equal the library, TensorFlow-
only loading, bad input refused by name, TFLite equal to the SavedModel, and the CLI end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.context_policy import export_context_policy_learner, tflite_module
from metarl_tf.algorithms.pearl import PEARLConfig, PEARLLearner, make_networks
from metarl_tf.algorithms.pearl.networks import actor_outputs, from_env_action, to_env_action
from metarl_tf.tasks import PointNavTasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tasks = PointNavTasks(horizon=10)
    cfg = PEARLConfig(latent_dim=3, encoder_hidden=(16,), num_train_tasks=4, meta_batch_size=2,
                      num_initial_steps=10, num_tasks_sample=2, num_steps_prior=10,
                      num_extra_rl_steps_posterior=10, num_train_steps_per_itr=5, batch_size=8,
                      embedding_batch_size=8, replay_capacity=100, num_envs=2)
    env = tasks.make_env()
    nets = make_networks(2, 2, env.action_space.low, env.action_space.high, 3, (16,), (16,),
                         seed=2)
    learner = PEARLLearner(nets, tasks, cfg, seed=2)
    learner.train(1)
    path = export_context_policy_learner(learner, str(tmp_path_factory.mktemp("pearl")), "pn")
    data = learner.rollout(tasks.sample(1, 9, "test"), np.zeros((1, 3), np.float32), False, 3)
    context = {"observations": data["observation"][0], "rewards": data["reward"][0],
               "actions": to_env_action(data["action"][0], learner.low, learner.high),
               "next_observations": data["next_observation"][0], "mask": data["mask"][0]}
    return learner, path, context


def call_adapt(model, context, **override):
    d = {**context, **override}
    return model.signatures["adapt"](**{k: tf.constant(np.asarray(v), tf.float32)
                                        for k, v in d.items()})


def library_posterior(learner, context):
    rows = np.concatenate([context["observations"],
                           from_env_action(context["actions"], learner.low, learner.high),
                           context["rewards"][:, None]], -1)
    return learner.posterior(rows[None], context["mask"][None])


def test_round_trip_equals_the_library(exported):
    learner, path, context = exported
    model = tf.saved_model.load(path)
    out = call_adapt(model, context)
    mean, var = library_posterior(learner, context)
    np.testing.assert_allclose(out["z_mean"].numpy(), mean[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["z_std"].numpy(), np.sqrt(var[0]), rtol=1e-5, atol=1e-6)
    assert np.all(out["z_std"].numpy() < 1.0)   # ten transitions of evidence: tighter than prior
    obs = context["observations"][:6]
    act = model.signatures["action_with_z"](observation=tf.constant(obs), z=out["z_mean"])
    mu, _ = actor_outputs(learner.actor, obs, mean[0][None])
    np.testing.assert_allclose(act["action"].numpy(),
                               to_env_action(np.tanh(mu.numpy()), learner.low, learner.high),
                               rtol=1e-5, atol=1e-6)
    sampled = act["sampled_action"].numpy()
    assert np.all(sampled >= learner.low) and np.all(sampled <= learner.high)
    assert not np.allclose(sampled, act["action"].numpy())
    prior = model.signatures["serving_default"](observation=tf.constant(obs))["action"]
    mu0, _ = actor_outputs(learner.actor, obs, np.zeros((1, 3), np.float32))
    np.testing.assert_allclose(prior.numpy(), 0.1 * np.tanh(mu0.numpy()), rtol=1e-5, atol=1e-6)


def test_adapt_padding_and_empty_context(exported):
    _, path, context = exported
    model = tf.saved_model.load(path)
    out = call_adapt(model, context)
    padded = {k: np.concatenate([v, 7.0 * np.ones_like(v[:4])]) for k, v in context.items()}
    padded["mask"][-4:] = 0.0
    pad = call_adapt(model, padded)
    np.testing.assert_allclose(pad["z_mean"].numpy(), out["z_mean"].numpy(), rtol=1e-5, atol=1e-6)
    empty = call_adapt(model, context, mask=np.zeros_like(context["mask"]))
    np.testing.assert_array_equal(empty["z_mean"].numpy(), np.zeros(3))   # the prior N(0, I)
    np.testing.assert_array_equal(empty["z_std"].numpy(), np.ones(3))


def test_bad_input_refused_by_name(exported):
    _, path, context = exported
    model = tf.saved_model.load(path)
    n = len(context["rewards"])
    cases = [
        ({"actions": context["actions"][:-1]}, "actions must have as many rows as mask"),
        ({"rewards": context["rewards"][:-2]}, "rewards must have as many entries as mask"),
        ({"rewards": np.where(np.arange(n) == 3, np.nan, context["rewards"])},
         "rewards must be finite"),
        ({"observations": np.full_like(context["observations"], np.inf)},
         "observations must be finite"),
        ({"mask": np.full(n, 0.5)}, "mask must hold only 0 and 1"),
        ({"rewards": np.full(n, 3e38)}, "output is not finite"),
    ]
    for override, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call_adapt(model, context, **override)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        model.signatures["action_with_z"](observation=tf.zeros([2, 2]), z=tf.zeros([4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="z must be finite"):
        model.signatures["action_with_z"](observation=tf.zeros([2, 2]),
                                          z=tf.constant([0.0, np.nan, 0.0]))


ROUND_TRIP = r"""
import json, sys
for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
import numpy as np, tensorflow as tf
d = json.load(open(sys.argv[2]))
m = tf.saved_model.load(sys.argv[1])
out = m.signatures["adapt"](**{k: tf.constant(v, tf.float32) for k, v in d.items()})
a = m.signatures["action_with_z"](observation=tf.constant(d["observations"][:4], tf.float32),
                                  z=out["z_mean"])
print(json.dumps({"z": out["z_mean"].numpy().tolist(), "action": a["action"].numpy().tolist()}))
"""


def test_export_loads_and_adapts_with_tensorflow_alone(exported, tmp_path):
    learner, path, context = exported
    f = tmp_path / "ctx.json"
    f.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in context.items()}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", ROUND_TRIP, path, str(f)], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    mean, _ = library_posterior(learner, context)
    np.testing.assert_allclose(got["z"], mean[0], rtol=1e-5, atol=1e-6)
    meta = json.load(open(os.path.join(path, "assets.extra", "metarl_tf.json")))
    assert meta["kind"] == "AdaptableContextPolicy" and meta["latent_dim"] == 3
    np.testing.assert_allclose(meta["action_low"], [-0.1, -0.1], rtol=1e-6)
    assert meta["information_bottleneck"] is True


def test_tflite_equals_the_saved_model(exported, tmp_path):
    from export import tflite

    _, path, context = exported
    model = tf.saved_model.load(path)
    module = tflite.module_from_saved_model(path)   # dispatches to context_policy.tflite_module
    files = tflite.convert(module, str(tmp_path / "pn.tflite"))
    lite = {}
    for f in files:
        m = tflite.TFLiteModel(f)
        for key in m.signature_list:
            lite[key] = m
    want = call_adapt(model, context)
    got = lite["adapt"]("adapt", **{k: np.asarray(v, np.float32) for k, v in context.items()})
    np.testing.assert_allclose(got["z_mean"], want["z_mean"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["z_std"], want["z_std"].numpy(), rtol=1e-5, atol=1e-6)
    obs = context["observations"][:5]
    act = lite["action_with_z"]("action_with_z", observation=obs, z=got["z_mean"],
                                noise=np.zeros((5, 2), np.float32))
    ref = model.signatures["action_with_z"](observation=tf.constant(obs), z=want["z_mean"])
    np.testing.assert_allclose(act["action"], ref["action"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act["sampled_action"], act["action"], rtol=1e-6)  # zero noise
    with pytest.raises(ValueError, match="must have shape"):
        lite["adapt"]("adapt", **{**context, "observations": np.zeros((3, 5), np.float32)})


def test_tflite_module_refuses_other_exports(tmp_path):
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "metarl_tf.json").write_text(json.dumps({"kind": "X"}))
    with pytest.raises(ValueError, match="is not an AdaptableContextPolicy export"):
        tflite_module(str(tmp_path))


def test_cli_train_then_export_with_tflite(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = str(tmp_path / "run")
    small = ["--set", "network.hidden=[8]", "--set", "algorithm_config.encoder_hidden=[8]",
             "--set", "algorithm_config.num_train_tasks=3", "--set",
             "algorithm_config.meta_batch_size=2", "--set", "algorithm_config.num_tasks_sample=2",
             "--set", "algorithm_config.num_train_steps_per_itr=4", "--set",
             "algorithm_config.batch_size=8", "--set", "algorithm_config.embedding_batch_size=8",
             "--set", "algorithm_config.replay_capacity=200", "--set", "eval_tasks=2",
             "--set", "log_every=1", "--set", "checkpoint_every=1"]
    cli = [sys.executable, "-m", "training.cli"]
    out = subprocess.run(cli + ["train", "pearl-pointnav", "--out", run, "--steps", "1",
                                "--threads", "1", "--quiet"] + small,
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "return_after_0_steps=" in out.stdout and "return_after_1_steps=" in out.stdout
    summary = json.load(open(os.path.join(run, "summary.json")))
    # 3 tasks x 10 initial episodes x 20 steps + 1 iteration x 2 tasks x (200 + 200) steps
    assert summary["steps"] == 1 and summary["final_metrics"]["env_steps"] == 600 + 800
    assert summary["final_metrics"]["grad_steps"] == 4
    assert len(summary["eval"]["returns"]) == 2     # eval_steps 1: prior, after one episode
    out = subprocess.run(cli + ["export", run, "--to", str(tmp_path / "exp"), "--tflite"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    version = os.path.join(str(tmp_path / "exp"), "pearl-pointnav", "1")
    assert out.stdout.splitlines()[0] == version
    assert any(line.endswith(".tflite") for line in out.stdout.splitlines())
    m = tf.saved_model.load(version)
    a = m.signatures["serving_default"](observation=tf.zeros([3, 2]))["action"].numpy()
    assert a.shape == (3, 2) and np.all(np.abs(a) <= 0.1)
