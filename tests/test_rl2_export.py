"""AdaptiveRecurrentPolicy: the exported RL² policy, stepped with the state the client carries."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.recurrent import AdaptiveRecurrentPolicy, export_rl2_learner
from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for
from metarl_tf.tasks import PointNavTasks
from metarl_tf.tasks.tabular_mdp import TabularMDPTasks

TRIAL = r"""
import json, sys
for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
import numpy as np, tensorflow as tf
d = json.load(open(sys.argv[2]))
m = tf.saved_model.load(sys.argv[1])
obs, act, rew, done = (np.asarray(d[k]) for k in ("obs", "act", "rew", "done"))
b, t_len = act.shape
state = m.signatures["get_initial_state"](batch_size=tf.constant(b))["state"]
prev_a, prev_r, prev_d = -np.ones(b, np.int32), np.zeros(b, np.float32), np.zeros(b, np.float32)
out = {"action": [], "logits": [], "state": []}
for t in range(t_len):
    r = m.signatures["action"](observation=tf.constant(obs[:, t], tf.float32),
                               prev_action=tf.constant(prev_a, tf.int32),
                               prev_reward=tf.constant(prev_r, tf.float32),
                               done=tf.constant(prev_d, tf.float32), state=state)
    state = r["state"]
    out["action"].append(r["action"].numpy().tolist())
    out["logits"].append(r["logits"].numpy().tolist())
    out["state"].append(state.numpy().tolist())
    # the trial goes on with the recorded transition (the export's greedy action is compared)
    prev_a, prev_r, prev_d = act[:, t].astype(np.int32), rew[:, t], done[:, t]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mdp_learner():
    tasks = TabularMDPTasks(num_states=4, num_actions=3, horizon=3, num_episodes=3)
    cfg = RL2Config(episodes_per_trial=3, meta_batch_size=8, num_epochs=1, num_minibatches=2)
    learner = RL2Learner(rl2_policy_for(tasks, units=16, seed=2), tasks, cfg, seed=0)
    learner.train(2)  # trained weights, not the initialisation
    return learner


def test_round_trip_over_a_whole_trial_with_tensorflow_alone(mdp_learner, tmp_path):
    learner = mdp_learner
    path = export_rl2_learner(learner, str(tmp_path / "exports"), "mdp")
    assert path.endswith(os.path.join("mdp", "1"))
    meta = json.load(open(os.path.join(path, "assets.extra", "metarl_tf.json")))
    assert meta["kind"] == "AdaptiveRecurrentPolicy" and meta["state_size"] == 16
    assert meta["episodes_per_trial"] == 3 and meta["cell"] == "gru"
    # A greedy trial of 3 episodes x 3 steps on 2 held-out MDPs, run by the library in graph.
    tasks = learner.tasks.stack(learner.tasks.sample(2, seed=9, split="test"))
    batch = learner._rollout_tf(learner._params(), tasks, tf.constant([4, 5], tf.int64), 2,
                                greedy=True)
    heads, _, states, final = learner.apply.unroll(learner._params(), batch.inputs,
                                                   learner.apply.initial_state(2))
    obs = batch.inputs[:, :, :learner.obs_dim].numpy()
    data = tmp_path / "trial.json"
    data.write_text(json.dumps({"obs": obs.tolist(), "act": batch.actions.numpy().tolist(),
                                "rew": batch.rewards.numpy().tolist(),
                                "done": batch.dones.numpy().tolist()}))
    run = subprocess.run([sys.executable, "-c", TRIAL, path, str(data)], capture_output=True,
                         text=True, cwd=str(tmp_path), timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    # [T, B, ...] from the export vs [B, T, ...] from the library, at every step of the trial
    np.testing.assert_array_equal(np.swapaxes(got["action"], 0, 1), batch.actions.numpy())
    np.testing.assert_allclose(np.swapaxes(got["logits"], 0, 1), heads.numpy(), atol=1e-5)
    next_states = np.concatenate([states.numpy()[:, 1:], final.numpy()[:, None]], axis=1)
    np.testing.assert_allclose(np.swapaxes(got["state"], 0, 1), next_states, atol=1e-5)
    assert batch.dones.numpy()[:, [2, 5, 8]].all()  # the state was kept across 2 episode ends


def test_lstm_gaussian_policy_exports_mean_log_std_and_state(tmp_path):
    tasks = PointNavTasks()
    policy = rl2_policy_for(tasks, units=6, cell="lstm", seed=1)
    module = AdaptiveRecurrentPolicy(policy, obs_dim=2)
    module.save(str(tmp_path / "m"))
    m = tf.saved_model.load(str(tmp_path / "m"))
    state = m.signatures["get_initial_state"](batch_size=tf.constant(3))["state"]
    assert state.shape == (3, 12)  # LSTM: concat(h, c)
    obs = tf.constant([[0.1, 0.2], [0.0, -0.3], [0.4, 0.4]])
    kw = dict(observation=obs, prev_action=tf.zeros([3, 2]), prev_reward=tf.constant([0.0, -1, 2]),
              done=tf.zeros([3]))
    out = m.signatures["action"](state=state, **kw)
    x = tf.concat([obs, tf.zeros([3, 2]), tf.constant([[0.0], [-1.0], [2.0]]), tf.zeros([3, 1])], 1)
    head, value, nxt = policy([x, tf.zeros([3, 12])])
    np.testing.assert_allclose(out["mean"].numpy(), head[:, :2].numpy(), atol=1e-6)
    np.testing.assert_allclose(out["log_std"].numpy(), head[:, 2:].numpy(), atol=1e-6)
    np.testing.assert_allclose(out["value"].numpy(), value[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(out["state"].numpy(), nxt.numpy(), atol=1e-6)
    again = m.signatures["action"](state=out["state"], **kw)
    assert not np.allclose(again["mean"].numpy(), out["mean"].numpy())  # the state matters


def test_bad_state_and_batch_mismatch_name_the_input(mdp_learner, tmp_path):
    module = AdaptiveRecurrentPolicy(mdp_learner.policy, obs_dim=4)
    kw = dict(observation=tf.zeros([2, 4]), prev_action=tf.constant([-1, -1]),
              prev_reward=tf.zeros([2]), done=tf.zeros([2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"state must be \[batch, 16\]"):
        module.action(state=tf.zeros([2, 15]), **kw)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="state must have the same batch size as observation"):
        module.action(state=tf.zeros([3, 16]), **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"prev_action must be in \[-1, 3\)"):
        module.action(state=tf.zeros([2, 16]), **{**kw, "prev_action": tf.constant([0, 3])})
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="done must have the same batch size as observation"):
        module.action(state=tf.zeros([2, 16]), **{**kw, "done": tf.zeros([1])})


def test_separate_value_policy_exports_its_double_state(tmp_path):
    tasks = TabularMDPTasks(num_states=4, num_actions=3, horizon=3, num_episodes=3)
    policy = rl2_policy_for(tasks, units=5, seed=4, separate_value=True)
    module = AdaptiveRecurrentPolicy(policy, obs_dim=4)
    module.save(str(tmp_path / "m"))
    m = tf.saved_model.load(str(tmp_path / "m"))
    state = m.signatures["get_initial_state"](batch_size=tf.constant(2))["state"]
    assert state.shape == (2, 10)  # concat(policy GRU state, value GRU state)
    x = tf.constant([[1.0, 0, 0, 0, 0, 1, 0, 0.5, 0], [0, 1.0, 0, 0, 1, 0, 0, -1.0, 1]])
    kw = dict(observation=x[:, :4], prev_action=tf.constant([1, 0]), prev_reward=x[:, 7],
              done=x[:, 8])
    ref_state = tf.zeros([2, 10])
    for _ in range(3):  # three steps, carrying the state the export returns
        out = m.signatures["action"](state=state, **kw)
        head, value, ref_state = policy([x, ref_state])
        np.testing.assert_allclose(out["logits"].numpy(), head.numpy(), atol=1e-5)
        np.testing.assert_allclose(out["value"].numpy(), value[:, 0].numpy(), atol=1e-5)
        np.testing.assert_allclose(out["state"].numpy(), ref_state.numpy(), atol=1e-5)
        state = out["state"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"state must be \[batch, 10\]"):
        module.action(state=tf.zeros([2, 5]), **kw)
