"""AdaptablePolicy: TensorFlow-only round trip, adapt -> action_with_params equals the library."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.policy import AdaptablePolicy, adapt_policy
from metarl_tf import adaptation
from metarl_tf.algorithms import pg_losses
from metarl_tf.networks import categorical_mlp_policy, gaussian_mlp_policy
from metarl_tf.networks.policies import policy_apply_fn, split_gaussian
from metarl_tf.rollouts.tf_rollout import rollout_pointnav

SETTINGS = {"discount": 0.99, "gae_lambda": 1.0, "normalize_advantages": True, "estimator": "lvc"}


def pointnav_episodes(policy, n=8, horizon=20, goal=(0.3, -0.2)):
    params = [v[None] for v in policy.trainable_variables]
    ep = rollout_pointnav(policy_apply_fn(policy), params, tf.constant([goal]), tf.constant([1, 2]),
                          episodes_per_task=n, horizon=horizon)
    return [np.asarray(x)[0] for x in ep]  # [N, H, ...] for one task


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    policy = gaussian_mlp_policy(2, 2, hidden=(16, 16), seed=3)
    rule = adaptation.SGD(0.1)
    module = AdaptablePolicy(policy, [tf.convert_to_tensor(v) for v in policy.trainable_variables],
                             rule, max_num_steps=20)
    path = str(tmp_path_factory.mktemp("policy") / "1")
    module.save(path)
    return policy, rule, path


def library_adapted(policy, rule, episodes, steps):
    apply_fn = policy_apply_fn(policy)
    ep = pg_losses.Episodes(*(tf.convert_to_tensor(x)[None] for x in episodes))
    theta = [tf.convert_to_tensor(v)[None] for v in policy.trainable_variables]
    return [p[0] for p in adapt_policy(apply_fn, "gaussian", theta, ep, rule, steps, SETTINGS)]


def call_adapt(model, episodes, steps):
    obs, act, rew, mask = episodes
    return model.signatures["adapt"](
        observations=tf.constant(obs, tf.float32), actions=tf.constant(act, tf.float32),
        rewards=tf.constant(rew, tf.float32), mask=tf.constant(mask, tf.float32),
        num_steps=tf.constant(steps, tf.int32))["params"]


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_adapt_then_act_equals_the_library(exported, steps):
    policy, rule, path = exported
    model = tf.saved_model.load(path)
    episodes = pointnav_episodes(policy)
    flat = call_adapt(model, episodes, steps)
    expected = library_adapted(policy, rule, episodes, steps)
    np.testing.assert_allclose(flat.numpy(), np.concatenate([p.numpy().ravel() for p in expected]),
                               rtol=1e-5, atol=1e-6)
    obs = tf.constant([[0.1, 0.2], [-0.3, 0.0]])
    out = model.signatures["action_with_params"](observation=obs, params=flat)
    mean, log_std = split_gaussian(policy_apply_fn(policy)([p[None] for p in expected], obs[None])[0])
    np.testing.assert_allclose(out["action"].numpy(), mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["log_std"].numpy(), log_std.numpy(), rtol=1e-5, atol=1e-6)
    if steps:
        assert not np.allclose(out["action"].numpy(),
                               model.signatures["serving_default"](observation=obs)["action"])


def test_one_step_equals_the_plain_inner_update(exported):
    """At the sampling policy, step 1 is theta + alpha * grad J (the learner's inner update)."""
    policy, rule, _ = exported
    episodes = pointnav_episodes(policy)
    ep = pg_losses.Episodes(*(tf.convert_to_tensor(x)[None] for x in episodes))
    theta = [tf.convert_to_tensor(v)[None] for v in policy.trainable_variables]
    loss = lambda p: pg_losses.inner_pg_loss(policy, p, ep)
    plain = adaptation.adapt(loss, theta, rule, 1).params
    for a, b in zip(plain, library_adapted(policy, rule, episodes, 1)):
        np.testing.assert_allclose(a[0].numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


ROUND_TRIP = r"""
import json, sys
for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
import numpy as np, tensorflow as tf
d = json.load(open(sys.argv[2]))
m = tf.saved_model.load(sys.argv[1])
p = m.signatures["adapt"](observations=tf.constant(d["obs"], tf.float32),
                          actions=tf.constant(d["act"], tf.float32), rewards=tf.constant(d["rew"], tf.float32),
                          mask=tf.constant(d["mask"], tf.float32), num_steps=tf.constant(1))["params"]
a = m.signatures["action_with_params"](observation=tf.constant([[0.1, 0.2]]), params=p)["action"]
print(json.dumps({"params": p.numpy().tolist(), "action": a.numpy().tolist()}))
"""


def test_round_trip_with_tensorflow_alone(exported, tmp_path):
    policy, rule, path = exported
    obs, act, rew, mask = pointnav_episodes(policy)
    data = tmp_path / "episodes.json"
    data.write_text(json.dumps({"obs": obs.tolist(), "act": act.tolist(), "rew": rew.tolist(),
                                "mask": mask.tolist()}))
    out = subprocess.run([sys.executable, "-c", ROUND_TRIP, path, str(data)], capture_output=True,
                         text=True, cwd=str(tmp_path), timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    expected = library_adapted(policy, rule, (obs, act, rew, mask), 1)
    np.testing.assert_allclose(got["params"], np.concatenate([p.numpy().ravel() for p in expected]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,bad,match", [
    ("rew", lambda r: np.where(np.arange(r.size).reshape(r.shape) == 3, np.nan, r), "rewards must be finite"),
    ("mask", np.zeros_like, "mask must contain at least one valid step"),
    ("mask", lambda m: m * 0.5, "mask must hold only 0 and 1"),
    ("act", lambda a: a[:, :-1], "actions must have the same episodes and steps as rewards"),
    ("obs", lambda o: np.concatenate([o, o[..., :1]], -1), "observations"),
])
def test_bad_episodes_are_rejected_by_name(exported, field, bad, match):
    policy, _, path = exported
    model = tf.saved_model.load(path)
    episodes = dict(zip(("obs", "act", "rew", "mask"), pointnav_episodes(policy)))
    good = tuple(episodes.values())
    episodes[field] = bad(episodes[field])
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        call_adapt(model, tuple(episodes.values()), 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_steps must be <= max_num_steps"):
        call_adapt(model, good, 21)
    assert np.all(np.isfinite(call_adapt(model, good, 1).numpy()))  # still serving


def test_categorical_policy_exports_greedy_actions(tmp_path):
    policy = categorical_mlp_policy(3, 4, hidden=(8,), seed=1)
    module = AdaptablePolicy(policy, [tf.convert_to_tensor(v) for v in policy.trainable_variables],
                             adaptation.SGD(0.5))
    path = str(tmp_path / "1")
    module.save(path)
    model = tf.saved_model.load(path)
    obs = tf.random.stateless_normal([5, 3], [0, 1])
    out = model.signatures["serving_default"](observation=obs)
    np.testing.assert_allclose(out["logits"].numpy(), policy(obs).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["action"].numpy(), np.argmax(policy(obs).numpy(), -1))
    rng = np.random.default_rng(0)
    params = model.signatures["adapt"](
        observations=tf.constant(rng.normal(size=(4, 6, 3)), tf.float32),
        actions=tf.constant(rng.integers(0, 4, (4, 6)), tf.int32),
        rewards=tf.constant(rng.normal(size=(4, 6)), tf.float32),
        mask=tf.ones([4, 6]), num_steps=tf.constant(2))["params"]
    assert params.shape == (module.num_params,)
    meta = json.load(open(os.path.join(path, "assets.extra", "metarl_tf.json")))
    assert meta["kind"] == "AdaptablePolicy" and meta["distribution"] == "categorical"
