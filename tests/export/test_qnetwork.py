"""AdaptableQNetwork: adapt -> action_with_z equals the library; TensorFlow-only loading; bad input
refused inside the graph with a message naming the input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.qnetwork import export_qnetwork_learner
from metarl_tf.algorithms.dqn import collect_support
from metarl_tf.algorithms.meta_dqn import MetaDQNConfig, MetaDQNLearner
from metarl_tf.networks.q_network import TaskConditionedQNetwork
from metarl_tf.tasks import CartPoleDirTasks, GridWorldTasks


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    family = CartPoleDirTasks()
    cfg = MetaDQNConfig(z_dim=3, inner_steps=2, inner_lr=0.5, num_train_tasks=2,
                        meta_batch_size=2, support_size=16, random_buffer_size=16,
                        replay_capacity=64, steps_per_execution=3)
    learner = MetaDQNLearner(TaskConditionedQNetwork(4, 2, 3, (16,), seed=4), family, cfg)
    learner.train(3)  # z_0 and the learned rates move away from their initial values
    base = str(tmp_path_factory.mktemp("qnet"))
    path = export_qnetwork_learner(learner, base, "cartpole", max_num_steps=10)
    tr = collect_support(family.tf_env(), tf.constant(family.sample(1, 5, "test")), 40,
                         family.horizon, 2, tf.constant([5, 6], tf.int64))
    data = {"observations": tr.observation.numpy()[0], "actions": tr.action.numpy()[0],
            "rewards": tr.reward.numpy()[0], "next_observations": tr.next_observation.numpy()[0],
            "dones": tr.terminated.numpy()[0]}
    return learner, path, data


def call_adapt(model, data, steps, **override):
    d = {**data, **override}
    return model.signatures["adapt"](
        observations=tf.constant(d["observations"], tf.float32),
        actions=tf.constant(d["actions"], tf.int32), rewards=tf.constant(d["rewards"], tf.float32),
        next_observations=tf.constant(d["next_observations"], tf.float32),
        dones=tf.constant(d["dones"], tf.float32), num_steps=tf.constant(steps))["z"]


@pytest.mark.parametrize("steps", [0, 1, 4])
def test_adapt_then_action_with_z_equals_the_library(exported, steps):
    learner, path, data = exported
    model = tf.saved_model.load(path)
    z = call_adapt(model, data, steps)
    expected = learner.adapt(**data, num_steps=steps)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-5, atol=1e-6)
    if steps == 0:
        np.testing.assert_allclose(expected, learner.meta.z_init.numpy())
    else:
        assert not np.allclose(expected, learner.meta.z_init.numpy())
    obs = data["observations"][:7]
    out = model.signatures["action_with_z"](observation=tf.constant(obs), z=z)
    q = learner.q_values(obs, expected)
    np.testing.assert_allclose(out["q_values"].numpy(), q, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["action"].numpy(), q.argmax(-1))
    default = model.signatures["serving_default"](observation=tf.constant(obs))
    np.testing.assert_allclose(default["q_values"].numpy(), learner.q_values(obs), rtol=1e-5,
                               atol=1e-6)


def test_adapt_signature_refuses_bad_input_by_name(exported):
    _, path, data = exported
    model = tf.saved_model.load(path)
    n = len(data["rewards"])
    cases = [
        ({"actions": data["actions"][:-1]}, "actions must have as many entries as rewards"),
        ({"next_observations": data["next_observations"][:-2]},
         "next_observations must have as many rows as rewards"),
        ({"actions": np.full(n, 2)}, r"actions must be integers in \[0, 2\)"),
        ({"actions": np.full(n, -1)}, r"actions must be integers in \[0, 2\)"),
        ({"rewards": np.where(np.arange(n) == 3, np.nan, data["rewards"])},
         "rewards must be finite"),
        ({"observations": np.full_like(data["observations"], np.inf)},
         "observations must be finite"),
        ({"dones": np.full(n, 0.5)}, "dones must hold only 0 and 1"),
    ]
    for override, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call_adapt(model, data, 1, **override)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_steps must be <= max_num_steps"):
        call_adapt(model, data, 11)


ROUND_TRIP = r"""
import json, sys
for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
import numpy as np, tensorflow as tf
assert "keras" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
d = json.load(open(sys.argv[2]))
m = tf.saved_model.load(sys.argv[1])
z = m.signatures["adapt"](observations=tf.constant(d["observations"], tf.float32),
                          actions=tf.constant(d["actions"], tf.int32),
                          rewards=tf.constant(d["rewards"], tf.float32),
                          next_observations=tf.constant(d["next_observations"], tf.float32),
                          dones=tf.constant(d["dones"], tf.float32), num_steps=tf.constant(3))["z"]
a = m.signatures["action_with_z"](observation=tf.constant(d["observations"][:5], tf.float32), z=z)
print(json.dumps({"z": z.numpy().tolist(), "action": a["action"].numpy().tolist()}))
"""


def test_export_loads_and_adapts_with_tensorflow_alone(exported, tmp_path):
    learner, path, data = exported
    f = tmp_path / "data.json"
    f.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in data.items()}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", ROUND_TRIP, path, str(f)], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    expected = learner.adapt(**data, num_steps=3)
    np.testing.assert_allclose(got["z"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["action"],
                                  learner.q_values(data["observations"][:5], expected).argmax(-1))
    meta = json.load(open(os.path.join(path, "assets.extra", "metarl_tf.json")))
    assert meta["kind"] == "AdaptableQNetwork" and meta["z_dim"] == 3
    assert meta["inner_rule"] == "per_parameter_sgd"


def check_head_export(tmp_path, family, inner_loss, z_dim, **config):
    """Meta-trains a tiny learner whose z adapts on a head (normalised steps), exports it and
    checks that the exported adapt gives the library's z and that TFLite refuses it by name.
    Returns the support data, the learner and the export's metadata."""
    from export.tflite import module_from_saved_model

    cfg = MetaDQNConfig(z_dim=z_dim, inner_steps=2, inner_lr=0.5, inner_loss=inner_loss,
                        normalize_inner_grad=True, num_train_tasks=2,
                        meta_batch_size=2, support_size=16, random_buffer_size=16,
                        replay_capacity=64, steps_per_execution=3, **config)
    net = TaskConditionedQNetwork(family.obs_dim, family.num_actions, z_dim, (16,), seed=4)
    learner = MetaDQNLearner(net, family, cfg)
    learner.train(3)
    path = export_qnetwork_learner(learner, str(tmp_path), "m", max_num_steps=10)
    tr = collect_support(family.tf_env(), tf.constant(family.sample(1, 5, "test")), 200,
                         family.horizon, family.num_actions, tf.constant([5, 6], tf.int64))
    data = {"observations": tr.observation.numpy()[0], "actions": tr.action.numpy()[0],
            "rewards": tr.reward.numpy()[0], "next_observations": tr.next_observation.numpy()[0],
            "dones": tr.terminated.numpy()[0]}
    model = tf.saved_model.load(path)
    for steps in (0, 1, 3):
        np.testing.assert_allclose(call_adapt(model, data, steps).numpy(),
                                   learner.adapt(**data, num_steps=steps), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="TFLite adapt supports (only the plain TD inner loss|"
                                         "one rate or one rate per parameter)"):
        module_from_saved_model(path)
    meta = json.load(open(os.path.join(path, "assets.extra", "metarl_tf.json")))
    assert meta["inner_loss"] == inner_loss and meta["normalize_inner_grad"] is True
    return data, learner, meta


def test_reward_head_export_adapts_like_the_library(tmp_path):
    """z adapts on the reward head's error: the export carries the head, names its form, and
    adapts like the library."""
    data, _, meta = check_head_export(tmp_path, GridWorldTasks(), "reward", 3)
    assert data["rewards"].sum() > 0  # the support holds a rewarded transition
    assert meta["reward_head"] == "next_logistic"


def test_model_head_export_adapts_like_the_library(tmp_path):
    """inner_loss "model" (CartPoleDir): the export carries the one-step model head, names it,
    and adapts like the library."""
    data, learner, meta = check_head_export(tmp_path, CartPoleDirTasks(), "model", 2)
    assert np.linalg.norm(learner.adapt(**data, num_steps=1)) > 0.1  # z moved
    assert meta["reward_head"] == "model"


def test_per_step_rates_export_adapts_like_the_library(tmp_path):
    """Per-step learned rates (inner_lr_decay start) and the multi-step outer loss: the rates are
    [inner_steps, z_dim] and every row is meta-learned; the export carries them, names the rule,
    and adapts like the library, steps past the last row included (they reuse it)."""
    data, learner, meta = check_head_export(
        tmp_path, GridWorldTasks(), "reward", 3, per_step_inner_lr=True, inner_lr_decay=0.5,
        outer_loss_steps=2)
    rates = learner.meta.inner_rates.numpy()
    assert rates.shape == (2, 3)
    start = np.array([[0.5] * 3, [0.25] * 3])
    assert np.all(np.abs(rates - start) > 1e-6)  # both rows moved: the meta-gradient reaches them
    assert meta["inner_rule"] == "per_step_sgd" and meta["inner_rate_steps"] == 2


def test_next_logistic_head_refuses_rewards_outside_the_unit_interval(tmp_path):
    """The cross-entropy head needs 0/1-like rewards: the exported adapt and the learner's adapt
    refuse others by name (a plain-TD export takes them)."""
    data, learner, _ = check_head_export(tmp_path, GridWorldTasks(), "reward", 2)
    model = tf.saved_model.load(os.path.join(str(tmp_path), "m", "1"))
    bad = {"rewards": np.where(np.arange(len(data["rewards"])) == 0, 2.0, data["rewards"])}
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"rewards must lie in \[0, 1\] for the next_logistic reward head"):
        call_adapt(model, data, 1, **bad)
    with pytest.raises(ValueError, match=r"`rewards` must lie in \[0, 1\]"):
        learner.adapt(**{**data, **bad})
