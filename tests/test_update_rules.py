"""Learned update rules: the Meta-LSTM reproduces SGD when its gates are fixed, its weights get
meta-gradients, its state resets per task, exports match the library, bad input is refused."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation, update_rules
from metarl_tf.algorithms import MAMLConfig, MAMLLearner, MetaSGDConfig
from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner
from metarl_tf.networks import gaussian_mlp_policy, mlp
from metarl_tf.params import FunctionalModel, mse
from metarl_tf.tasks import PointNavTasks, SinusoidTasks, sample_task_batch

H = 3  # hidden units of the small rules below


def sgd_gated_rule(hidden=H, rate_logit=0.0):
    """A Meta-LSTM whose gates are constants: every weight 0, b_F = 30, b_I = ``rate_logit``.

    sigmoid(30) = 1 - 9.4e-14 rounds to exactly 1.0 in float32, and sigmoid(0) = 0.5 exactly, so
    ``theta_t = f * theta - i * g = theta - 0.5 g``: SGD with rate 0.5, bit for bit.
    """
    weights = [w * 0.0 for w in update_rules.init_meta_lstm(hidden)]
    weights[4] = tf.constant(30.0)
    weights[6] = tf.constant(rate_logit)
    return update_rules.MetaLSTM(weights)


def quadratic_loss(target):
    """Per task: sum_j (theta_j - target_j)^2 over one [T, 2] parameter tensor."""
    return lambda p: tf.reduce_sum(tf.square(p[0] - target), axis=1)


@pytest.mark.parametrize("compiled", [False, True])
def test_fixed_gates_give_exactly_the_sgd_update(compiled):
    # Worked example: theta = [1, 2], target = [0.9, 2.2]:
    #   g = 2 (theta - target) = [0.2, -0.4]
    #   f = sigmoid(30) = 1.0, i = sigmoid(0) = 0.5
    #   theta_1 = 1.0 * [1, 2] - 0.5 * [0.2, -0.4] = [0.9, 2.2]  (= SGD(0.5), and the optimum)
    theta = [tf.constant([[1.0, 2.0]])]
    target = tf.constant([[0.9, 2.2]])
    rule = sgd_gated_rule()

    def both(steps):
        learned = adaptation.adapt(quadratic_loss(target), theta, rule, steps).params[0]
        sgd = adaptation.adapt(quadratic_loss(target), theta, adaptation.SGD(0.5), steps).params[0]
        return learned, sgd

    fn = tf.function(both) if compiled else both
    learned, sgd = fn(1)
    np.testing.assert_allclose(learned.numpy(), [[0.9, 2.2]], rtol=1e-6)
    np.testing.assert_array_equal(learned.numpy(), sgd.numpy())
    # Three steps from a start away from the optimum: still SGD's iterates exactly.
    learned, sgd = fn(3)
    np.testing.assert_array_equal(learned.numpy(), sgd.numpy())


def test_preprocessing_worked_by_hand():
    # p = 10, threshold e^-10 = 4.54e-5:
    #   x = 1        -> (log 1 / 10, sign)            = (0, 1)
    #   x = -e^-5    -> (-5 / 10, -1)                 = (-0.5, -1)
    #   x = 1e-6     -> (-1, e^10 * 1e-6)             = (-1, 0.0220265)
    out = update_rules.preprocess(tf.constant([1.0, -math.exp(-5.0), 1e-6])).numpy()
    np.testing.assert_allclose(out, [[0.0, 1.0], [-0.5, -1.0], [-1.0, 0.0220265]], rtol=1e-5,
                               atol=1e-7)


def tiny_batch(num_tasks=3):
    return sample_task_batch(SinusoidTasks(), tf.constant([5, 6], tf.int64), num_tasks, 5, 5)


@pytest.mark.parametrize("first_order", [True, False])
def test_rule_weights_receive_meta_gradients(first_order):
    cfg = MAMLConfig(update_rule="meta_lstm", rule_hidden_size=H, inner_steps=2, inner_lr=0.05,
                     first_order=first_order, query_every_step=True, jit_compile=False)
    learner = MAMLLearner(mlp(1, 1, (8,), seed=2), SinusoidTasks(), cfg, seed=2)
    assert len(learner.extra_variables) == 7
    assert learner.meta_variables[-7:] == learner.extra_variables
    with tf.GradientTape() as tape:
        loss, _ = learner.meta_loss(tiny_batch())
    grads = tape.gradient(loss, learner.extra_variables)
    for var, g in zip(learner.extra_variables, grads):
        assert g is not None, var.name
        assert np.all(np.isfinite(g.numpy())), var.name
        assert np.any(g.numpy() != 0.0), var.name
    # A meta-step moves them (and the checkpoint holds them).
    before = [v.numpy().copy() for v in learner.extra_variables]
    learner.train(1)
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, learner.extra_variables))
    assert learner.checkpoint_items()["extra"] is learner.extra_variables


def test_rule_meta_lr_gives_the_rules_weights_their_own_adam_rate():
    cfg = MAMLConfig(update_rule="meta_lstm", rule_hidden_size=H, inner_steps=1, inner_lr=0.05,
                     meta_lr=1e-4, rule_meta_lr=0.05, jit_compile=False, steps_per_execution=1)
    learner = MAMLLearner(mlp(1, 1, (8,), seed=2), SinusoidTasks(), cfg, seed=2)
    net_before = [v.numpy().copy() for v in learner.fmodel.variables]
    rule_before = [v.numpy().copy() for v in learner.extra_variables]
    learner.train(1)
    # Adam's first step moves each weight by its rate times sign(grad) (|m / sqrt(v)| = 1).
    net_moves = np.concatenate([np.abs(v.numpy() - b).ravel()
                                for v, b in zip(learner.fmodel.variables, net_before)])
    rule_moves = np.concatenate([np.abs(v.numpy() - b).ravel()
                                 for v, b in zip(learner.extra_variables, rule_before)])
    assert net_moves.max() <= 1.01e-4 and rule_moves.max() > 0.049, (net_moves.max(),
                                                                     rule_moves.max())
    assert learner.checkpoint_items()["rule_optimizer"] is learner.rule_optimizer
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="`rule_meta_lr` must be a finite number"):
            MAMLConfig(update_rule="meta_lstm", rule_meta_lr=bad)
    from metarl_tf.keras import MetaModel
    with pytest.raises(ValueError, match="`rule_meta_lr` is not supported by MetaModel"):
        MetaModel(mlp(1, 1, (8,), seed=2), MetaSGDConfig(rule_meta_lr=0.01))


def test_state_resets_per_task_and_tasks_stay_independent():
    fmodel = FunctionalModel(mlp(1, 1, (8,), seed=4))
    rule = update_rules.MetaLSTM(update_rules.init_meta_lstm(H, inner_lr=0.1, seed=4))
    batch = tiny_batch(2)

    def adapt(rows):
        sx, sy = tf.gather(batch.support_x, rows), tf.gather(batch.support_y, rows)
        loss = lambda p: mse(fmodel.apply_batched(p, sx), sy)  # noqa: E731
        return adaptation.adapt(loss, fmodel.tile(fmodel.params(), len(rows)), rule, 3)

    state0 = rule.init_state(fmodel.tile(fmodel.params(), 2))
    assert int(state0.step) == 0 and not np.any(state0.h.numpy()) and not np.any(state0.c.numpy())
    first = adapt([0])
    assert int(first.state.step) == 3 and np.any(first.state.h.numpy())
    second = adapt([1])  # after adapting task 0: starts from a fresh state, not task 0's
    together = adapt([0, 1])  # and in one batch, each task only sees its own coordinates
    for a, b, both in zip(first.params, second.params, together.params):
        np.testing.assert_allclose(both[0].numpy(), a[0].numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(both[1].numpy(), b[0].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(adapt([1]).params[0].numpy(), second.params[0].numpy())


def test_unrolled_and_while_loop_agree():
    theta = [tf.constant([[1.0, -2.0], [0.5, 0.3]])]
    target = tf.constant([[0.0, 1.0], [2.0, -1.0]])
    rule = update_rules.MetaLSTM(update_rules.init_meta_lstm(H, inner_lr=0.1, seed=1))
    unrolled = adaptation.adapt(quadratic_loss(target), theta, rule, 4)
    looped = tf.function(lambda n: adaptation.adapt(quadratic_loss(target), theta, rule,
                                                    n).params)(tf.constant(4))
    np.testing.assert_allclose(looped[0].numpy(), unrolled.params[0].numpy(), rtol=1e-6)
    assert len(adaptation.adapt(quadratic_loss(target), theta, rule, 4,
                                keep_trajectory=True).trajectory) == 4


def test_supervised_export_round_trip_matches_the_library(tmp_path):
    from export.saved_model import export_learner
    cfg = MAMLConfig(update_rule="meta_lstm", rule_hidden_size=H, inner_steps=2, inner_lr=0.05,
                     first_order=True, jit_compile=False, steps_per_execution=2)
    learner = MAMLLearner(mlp(1, 1, (8,), seed=3), SinusoidTasks(), cfg, seed=3)
    learner.train(2)
    path = export_learner(learner, str(tmp_path), "lstm", max_num_steps=10)
    meta = json.load(open(f"{path}/assets.extra/metarl_tf.json"))
    assert meta["inner_rule"] == "meta_lstm" and meta["rule_hidden_size"] == H
    batch = tiny_batch(1)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    f = learner.fmodel
    loss = lambda p: mse(f.apply_batched(p, sx[None]), sy[None])  # noqa: E731
    expected = f.apply_batched(adaptation.adapt(loss, f.tile(f.params(), 1),
                                                learner.update_rule(), 3).params, qx[None])[0]
    script = ("import sys, json\n"
              "for m in ('keras', 'metarl_tf', 'training', 'export'): sys.modules[m] = None\n"
              "import numpy as np, tensorflow as tf\n"
              "d = json.loads(sys.argv[2]); m = tf.saved_model.load(sys.argv[1])\n"
              "y = m.signatures['adapt'](support_x=tf.constant(d['sx']), support_y=tf.constant("
              "d['sy']), query_x=tf.constant(d['qx']), num_steps=tf.constant(3))['y']\n"
              "print(json.dumps(y.numpy().tolist()))\n")
    data = json.dumps({"sx": sx.numpy().tolist(), "sy": sy.numpy().tolist(),
                       "qx": qx.numpy().tolist()})
    out = subprocess.run([sys.executable, "-c", script, path, data], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, f.apply(f.params(), qx).numpy())  # the steps did something


def test_meta_pg_rule_reads_episode_statistics_and_exports(tmp_path):
    from export.policy import AdaptablePolicy
    # episode_statistics worked by hand: two episodes of one task; episode 1 has 3 valid steps,
    # return 1 + 2 + 0 = 3; episode 2 has 2 (its third step is padding), return 2 + 3 = 5.
    # mean 4, std 1; mean |A| over the 5 valid steps (1 + 1 + 3 + 1 + 1) / 5 = 1.4.
    rewards = tf.constant([[[1.0, 2.0, 0.0], [2.0, 3.0, 9.0]]])
    mask = tf.constant([[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]])
    adv = tf.constant([[[1.0, -1.0, 3.0], [-1.0, 1.0, 7.0]]])
    stats = update_rules.episode_statistics(rewards, mask, adv).numpy()
    np.testing.assert_allclose(stats, [[4.0, 1.0, 1.4]], rtol=1e-6)

    cfg = MAMLRLConfig(update_rule="meta_lstm", rule_hidden_size=H, meta_batch_size=2,
                       episodes_per_task=3, horizon=8)
    policy = gaussian_mlp_policy(2, 2, hidden=(8,), seed=1)
    learner = MAMLRLLearner(policy, PointNavTasks(), cfg, seed=1)
    assert learner.update_rule().num_context == update_rules.NUM_EPISODE_FEATURES
    params = learner.fmodel.tile(learner.fmodel.params(), 2)
    goals = tf.constant([[0.3, -0.2], [-0.4, 0.1]])
    episodes = learner._rollout_ingraph(params, goals, tf.constant([1, 2], tf.int64), 3)
    batch, adapted = learner._prepare_and_adapt(params, episodes, learner.extra_variables)
    with pytest.raises(ValueError, match="bind them with `with_context`"):
        adaptation.adapt(lambda p: learner.inner_loss(p, batch), params, learner.update_rule(), 1)
    # The statistics matter: other returns, same gradients -> another update (with an input gate
    # that listens to the LSTM: w_I = 1 instead of the near-zero initial weights).
    rule = learner.update_rule()
    loud = rule._replace(weights=[*rule.weights[:5], tf.ones_like(rule.weights[5]),
                                  rule.weights[6]])
    ep = batch.episodes
    step = lambda r: adaptation.adapt(  # noqa: E731
        lambda p: learner.inner_loss(p, batch), batch.params, r, 1, first_order=True).params[0]
    same = step(update_rules.bind_episodes(loud, ep.rewards, ep.mask, batch.advantages))
    other = step(update_rules.bind_episodes(loud, ep.rewards - 50.0, ep.mask, batch.advantages))
    theta = batch.params[0].numpy()
    d_same, d_other = same.numpy() - theta, other.numpy() - theta
    assert np.max(np.abs(d_other - d_same)) > 1e-3 * np.max(np.abs(d_same))  # measured: 4e-3

    module = AdaptablePolicy(policy, learner.fmodel.params(), learner.update_rule(),
                             max_num_steps=3)
    module.save(str(tmp_path / "1"))
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    meta = json.load(open(tmp_path / "1" / "assets.extra" / "metarl_tf.json"))
    assert meta["inner_rule"] == "meta_lstm" and meta["rule_num_context"] == 3
    ep = batch.episodes
    flat = loaded.signatures["adapt"](observations=ep.observations[1], actions=ep.actions[1],
                                      rewards=ep.rewards[1], mask=ep.mask[1],
                                      num_steps=tf.constant(1))["params"]
    expected = np.concatenate([p[1].numpy().ravel() for p in adapted])
    np.testing.assert_allclose(flat.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_unknown_rules_and_bad_hidden_sizes_are_refused_by_name():
    with pytest.raises(ValueError, match=r"`update_rule` must be one of \['sgd', 'metasgd', "
                                         r"'meta_lstm'\], got 'adam'"):
        MAMLConfig(update_rule="adam")
    with pytest.raises(ValueError, match=r"`update_rule` must be one of .*got 'lstm'"):
        MAMLRLConfig(update_rule="lstm")
    for cls in (MAMLConfig, MAMLRLConfig):
        for bad in (0, -3, 2.5, True):
            with pytest.raises(ValueError, match="`rule_hidden_size` must be a positive integer"):
                cls(update_rule="meta_lstm", rule_hidden_size=bad)
    with pytest.raises(ValueError, match="`hidden_size` must be a positive integer"):
        update_rules.init_meta_lstm(0)
    with pytest.raises(ValueError, match="`inner_lr` must be < 1 with update_rule='meta_lstm'"):
        MAMLConfig(update_rule="meta_lstm", inner_lr=1.5)
    with pytest.raises(ValueError, match="must be 'metasgd'"):
        MetaSGDConfig(update_rule="meta_lstm")
    from training.config import ExperimentConfig
    with pytest.raises(ValueError, match=r"`update_rule` must be one of"):
        ExperimentConfig.from_dict({"algorithm": "maml",
                                    "algorithm_config": {"update_rule": "rmsprop"}})


@pytest.mark.parametrize("compiled", [False, True])
def test_non_finite_gradients_entering_the_rule_name_the_step(compiled):
    rule = update_rules.MetaLSTM(update_rules.init_meta_lstm(H, inner_lr=0.1))
    theta = [tf.constant([[1.0, 2.0]])]
    good = [tf.constant([[0.1, 0.2]])]
    bad = [tf.constant([[0.1, float("nan")]])]

    def two_steps():
        state = rule.init_state(theta)
        params, state = rule.update(theta, good, state, tf.constant([1.0]))
        return rule.update(params, bad, state, tf.constant([1.0]))[0]

    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"non-finite gradient or loss entered the rule at inner step 2 "
                             r"\(counting from 1\)"):
        (tf.function(two_steps) if compiled else two_steps)()
    # A loss blowing up is caught the same way at step 1.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at inner step 1 \(counting from 1\)"):
        rule.update(theta, good, rule.init_state(theta), tf.constant([float("inf")]))
