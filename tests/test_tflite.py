"""TFLite on-device adaptation: hand-derived inner gradients equal the tape, builtins only."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from export import tflite
from export.policy import AdaptablePolicy
from metarl_tf import adaptation
from metarl_tf.adaptable import AdaptableRegressor
from metarl_tf.algorithms import pg_losses
from metarl_tf.networks import categorical_mlp_policy, gaussian_mlp_policy
from metarl_tf.params import FunctionalModel

TOL = {"rtol": 1e-5, "atol": 1e-5}


def regressor(act, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, act),
                              keras.layers.Dense(16, act), keras.layers.Dense(3)])
    rng = np.random.default_rng(seed)
    rates = [tf.constant(rng.uniform(0.01, 0.1, v.shape).astype(np.float32))
             for v in model.trainable_variables]  # Meta-SGD: one rate per weight
    return model, adaptation.PerParameterSGD(rates)


def support(rng):
    return (rng.normal(size=(10, 2)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32),
            rng.normal(size=(7, 2)).astype(np.float32))


def episodes(rng, dist, obs_dim=3, e=4, h=6):
    obs = rng.normal(size=(e, h, obs_dim)).astype(np.float32)
    act = (rng.normal(size=(e, h, 2)).astype(np.float32) if dist == "gaussian"
           else rng.integers(0, 4, (e, h)).astype(np.int32))
    rew = rng.normal(size=(e, h)).astype(np.float32)
    mask = np.ones((e, h), np.float32)
    mask[1, 4:] = 0.0  # one shorter episode: padding must not count
    ep = pg_losses.Episodes(obs[None], act[None], rew[None], mask[None])
    adv = pg_losses.compute_advantages(ep, 0.99, 1.0, None, True)[0].numpy()
    return obs, act, rew, mask, adv


def make_policy(dist, act):
    return (gaussian_mlp_policy(3, 2, hidden=(16, 16), activation=act, seed=1) if dist == "gaussian"
            else categorical_mlp_policy(3, 4, hidden=(16,), activation=act, seed=1))


# -- the hand-derived gradients equal tf.GradientTape (no conversion) ------------------------------
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_regressor_hand_gradient_equals_the_tape(act, compiled):
    model, _ = regressor(act)
    weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    x, y, _ = support(np.random.default_rng(1))
    grads = tflite.regressor_grads
    if compiled:
        grads = tf.function(grads, autograph=False)
    got = grads(weights, [act, act, "linear"], tf.constant(x), tf.constant(y))
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = tf.reduce_mean(tf.square(FunctionalModel(model).apply(weights, x) - y))
    for g, w in zip(got, tape.gradient(loss, weights)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), **TOL)


@pytest.mark.parametrize("estimator", ["lvc", "dice"])
@pytest.mark.parametrize("dist,act", [("gaussian", "relu"), ("gaussian", "tanh"),
                                      ("categorical", "relu"), ("categorical", "tanh")])
def test_policy_hand_gradient_equals_the_tape(dist, act, estimator):
    policy = make_policy(dist, act)
    rng = np.random.default_rng(2)
    obs, actions, rew, mask, adv = episodes(rng, dist)
    module = tflite.policy_module(policy, estimator=estimator)
    # away from the sampling point (the importance weights are not 1): perturbed parameters
    weights = [w + 0.05 * rng.normal(size=w.shape).astype(np.float32) for w in module.weights]
    old = tf.reshape(tflite._log_prob_and_grads(  # behaviour log-probs at the meta-parameters
        module.weights, tflite.mlp_forward(module.weights[:2 * len(module.activations)],
                                           tf.reshape(obs, [-1, 3]), module.activations)[0],
        actions, dist, np.log(1e-6), 4, 6)[0], [4, 6])
    got = tflite.policy_grads(weights, module.activations, dist, obs, actions, adv, mask, old,
                              np.log(1e-6) if dist == "gaussian" else 0.0, estimator)
    ep = pg_losses.Episodes(obs[None], actions[None], rew[None], mask[None])
    w = [tf.convert_to_tensor(v)[None] for v in weights]
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = pg_losses.inner_pg_loss(policy, w, ep, estimator=estimator, advantages=adv[None],
                                       behaviour_log_probs=old[None])[0]
    for g, t in zip(got, tape.gradient(loss, w)):
        np.testing.assert_allclose(g.numpy(), t[0].numpy(), **TOL)


def q_tape_z(weights, act, z, obs, actions, rewards, next_obs, dones, discount, delta, rates, steps):
    """The tape reference for the Q-network: TD loss of z (max target, Huber), SGD on z."""
    def q(o, z):
        h = tf.concat([o, tf.tile(z[None], [tf.shape(o)[0], 1])], axis=1)
        for i in range(0, len(weights), 2):
            h = tf.matmul(h, weights[i]) + weights[i + 1]
            if i < len(weights) - 2:
                h = tf.nn.relu(h) if act == "relu" else tf.tanh(h)
        return h

    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = tf.stop_gradient(rewards + discount * (1 - dones) * tf.reduce_max(q(next_obs, z), -1))
            err = tf.gather(q(obs, z), actions, batch_dims=1) - y
            quad = tf.minimum(tf.abs(err), delta)
            loss = tf.reduce_mean(0.5 * quad * quad + delta * (tf.abs(err) - quad))
        z = z - rates * tape.gradient(loss, z)
    return z


def q_setup(act, seed=3):
    rng = np.random.default_rng(seed)
    shapes = [(3 + 4, 16), (16,), (16, 16), (16,), (16, 2), (2,)]
    weights = [tf.constant(rng.normal(size=s).astype(np.float32) * 0.4) for s in shapes]
    z0 = tf.constant(rng.normal(size=4).astype(np.float32) * 0.1)
    n = 12
    batch = (rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n).astype(np.int32),
             rng.normal(size=n).astype(np.float32) * 3.0,  # big rewards: Huber's linear part too
             rng.normal(size=(n, 3)).astype(np.float32), (rng.uniform(size=n) < 0.3).astype(np.float32))
    rates = tf.constant([0.5, 0.3, 0.2, 0.4])
    return weights, z0, batch, rates


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_q_network_z_gradient_equals_the_tape(act):
    weights, z0, batch, rates = q_setup(act)
    module = tflite.q_network_module(weights, z0, adaptation.PerParameterSGD([rates]),
                                     activation=act, discount=0.9, max_num_steps=10)
    got = module.adapt(*batch, tf.constant(3))["z"]
    want = q_tape_z(weights, act, z0, *(tf.constant(b) for b in batch), 0.9, 1.0, rates, 3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), **TOL)
    assert not np.allclose(got.numpy(), z0.numpy())  # three steps moved z


# -- converted with builtins only, equal to the SavedModels' tape path --------------------------
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_tflite_regressor_equals_the_saved_model(act, tmp_path):
    model, rule = regressor(act)
    fm = FunctionalModel(model)
    reference = AdaptableRegressor(fm, fm.params(), rule, max_num_steps=20)
    paths = tflite.convert(tflite.regressor_module(model, None, rule, 20), str(tmp_path / "r.tflite"))
    assert len(paths) == 1  # one file holds every signature
    m = tflite.TFLiteModel(paths[0], max_num_steps=20)
    assert sorted(m.signature_list) == ["adapt", "serving_default"]
    rng = np.random.default_rng(4)
    for trial in range(2):  # random inputs, different support sizes (dynamic shapes)
        x, y, q = support(rng)
        x, y = x[:10 - 3 * trial], y[:10 - 3 * trial]
        for steps in (0, 5):
            got = m("adapt", support_x=x, support_y=y, query_x=q, num_steps=steps)["y"]
            want = reference.adapt(x, y, q, tf.constant(steps))["y"].numpy()
            np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(m("serving_default", x=q)["y"], model(q).numpy(), **TOL)


@pytest.mark.parametrize("dist,act", [("gaussian", "relu"), ("gaussian", "tanh"),
                                      ("categorical", "relu"), ("categorical", "tanh")])
def test_tflite_policy_equals_the_saved_model(dist, act, tmp_path):
    policy = make_policy(dist, act)
    params = [tf.convert_to_tensor(v) for v in policy.trainable_variables]
    rule = adaptation.SGD(0.1)
    reference = AdaptablePolicy(policy, params, rule, max_num_steps=10)
    path = tflite.convert(tflite.policy_module(policy, params, rule, "lvc", 10),
                          str(tmp_path / "p.tflite"))[0]
    m = tflite.TFLiteModel(path, max_num_steps=10)
    assert sorted(m.signature_list) == ["action_with_params", "adapt", "serving_default"]
    obs, actions, rew, mask, adv = episodes(np.random.default_rng(5), dist)
    # the device passes the advantages the SavedModel computes inside its adapt
    got = m("adapt", observations=obs, actions=actions, advantages=adv, mask=mask, num_steps=3)
    want = reference.adapt(obs, actions, rew, mask, tf.constant(3))["params"].numpy()
    np.testing.assert_allclose(got["params"], want, **TOL)
    assert np.abs(want - tflite._flatten(params).numpy()).max() > 1e-3  # adaptation moved them
    o = obs[0]
    a = m("action_with_params", observation=o, params=got["params"])
    b = reference.action_with_params(o, tf.constant(want))
    for k in b:
        np.testing.assert_allclose(a[k], b[k].numpy(), **TOL)
    d = m("serving_default", observation=o)
    for k, v in reference.serving_default(o).items():
        np.testing.assert_allclose(d[k], v.numpy(), **TOL)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_tflite_q_network_equals_the_tape(act, tmp_path):
    weights, z0, batch, rates = q_setup(act)
    rule = adaptation.PerParameterSGD([rates])
    path = tflite.convert(tflite.q_network_module(weights, z0, rule, act, 0.9, 1.0, 10),
                          str(tmp_path / "q.tflite"))[0]
    m = tflite.TFLiteModel(path, max_num_steps=10)
    names = ("observations", "actions", "rewards", "next_observations", "dones")
    z = m("adapt", num_steps=4, **dict(zip(names, batch)))["z"]
    want = q_tape_z(weights, act, z0, *(tf.constant(b) for b in batch), 0.9, 1.0, rates, 4)
    np.testing.assert_allclose(z, want.numpy(), **TOL)
    try:  # and H4's SavedModel export (metarl_tf.algorithms.meta_dqn's inner loop), when present
        from export.qnetwork import AdaptableQNetwork
        from metarl_tf.networks.q_network import TaskConditionedQNetwork
    except ImportError:
        return
    net = TaskConditionedQNetwork(3, 2, z_dim=4, hidden=(16, 16), activation=act)
    exported = AdaptableQNetwork(net, weights, z0, rule, discount=0.9, max_num_steps=10)
    ref = exported.adapt(*batch, tf.constant(4))["z"].numpy()
    np.testing.assert_allclose(z, ref, **TOL)
    out = m("action_with_z", observation=batch[0], z=z)
    np.testing.assert_allclose(out["q_values"], exported.action_with_z(
        tf.constant(batch[0]), tf.constant(ref))["q_values"].numpy(), **TOL)


def test_the_tape_adapt_does_not_convert_with_builtins(tmp_path):
    """Why the gradients are written by hand: the SavedModel's tape adapt needs ReluGrad."""
    model, rule = regressor("relu")
    fm = FunctionalModel(model)
    path = str(tmp_path / "sm")
    AdaptableRegressor(fm, fm.params(), rule, max_num_steps=5).save(path)
    converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["adapt"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with pytest.raises(Exception, match="ReluGrad"):
        converter.convert()


def test_tflite_model_checks_inputs(tmp_path):
    model, rule = regressor("relu")
    path = tflite.convert(tflite.regressor_module(model, None, rule, 5), str(tmp_path / "r.tflite"))[0]
    m = tflite.TFLiteModel(path, max_num_steps=5)
    x, y, q = support(np.random.default_rng(6))
    with pytest.raises(ValueError, match=r"num_steps must be in \[0, 5\], got 6"):
        m("adapt", support_x=x, support_y=y, query_x=q, num_steps=6)
    with pytest.raises(TypeError, match="input `num_steps` of 'adapt' must be int32, got float64"):
        m("adapt", support_x=x, support_y=y, query_x=q, num_steps=1.0)
    with pytest.raises(ValueError, match=r"input `support_y` of 'adapt' must have shape \[-1, 3\]"):
        m("adapt", support_x=x, support_y=y[:, :2], query_x=q, num_steps=1)
    with pytest.raises(ValueError, match=r"missing \['query_x'\]"):
        m("adapt", support_x=x, support_y=y, num_steps=1)
    with pytest.raises(KeyError, match="has no signature 'act'"):
        m("act", x=q)
    with pytest.raises(TypeError, match="SGD and PerParameterSGD"):
        tflite.regressor_module(model, None, object())
    bad = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, "elu"), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="supports hidden activations .* got 'elu'"):
        tflite.regressor_module(bad)


def test_from_saved_model_every_family(tmp_path, tmp_path_factory):
    """An export converts as it is: weights, rates and settings read from it, verified equal."""
    from serving_standin import shared_exports

    base, built = shared_exports(tmp_path_factory)  # built once per process with the serving tests
    for name, ex in built.items():
        if ex.get("recurrent"):
            with pytest.raises(ValueError, match="supports AdaptableRegressor, AdaptablePolicy"):
                tflite.module_from_saved_model(ex["path"])
            continue
        module = tflite.module_from_saved_model(ex["path"])  # raises if it does not reproduce it
        if name != "sinusoid":
            continue  # the regressor: also through the converter and the interpreter
        m = tflite.TFLiteModel(tflite.convert(module, str(tmp_path / "s.tflite"))[0], 20)
        got = m("adapt", **ex["adapt"])["y"]
        want = tf.saved_model.load(ex["path"]).signatures["adapt"](
            **{k: tf.constant(v) for k, v in ex["adapt"].items()})["y"].numpy()
        np.testing.assert_allclose(got, want, **TOL)
    with pytest.raises(ValueError, match="does not reproduce the SavedModel"):
        tflite.module_from_saved_model(built["gaussian_policy"]["path"], min_std=2.0)

