"""Step bounds that tell the truth, and no export returning inf/NaN.

The supervised export validates its ``max_num_steps`` on validation tasks (``export.step_bounds``);
every model kind (regressor, gradient-adapted policy, Q-network, recurrent policy, TFLite) refuses
to hand out a non-finite output.
"""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from export import export_learner, tflite
from export.inspect import check_saved_model
from export.policy import AdaptablePolicy
from export.qnetwork import AdaptableQNetwork
from export.recurrent import AdaptiveRecurrentPolicy
from export.step_bounds import (StepBoundConfig, sound_bound, validate_regressor_steps,
                                validation_seed)
from metarl_tf import adaptation
from metarl_tf.algorithms import MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner
from metarl_tf.algorithms.rl2 import rl2_policy_for
from metarl_tf.evaluation import held_out_seed
from metarl_tf.networks import gaussian_mlp_policy, mlp
from metarl_tf.networks.q_network import TaskConditionedQNetwork
from metarl_tf.tasks import PointNavTasks, SinusoidTasks
from metarl_tf.tasks.regression import sample_task_batch

SMALL = StepBoundConfig(num_tasks=8, num_support=10, num_query=20)


def metadata(path):
    with open(os.path.join(path, "assets.extra", "metarl_tf.json")) as f:
        return json.load(f)


def sine_inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    return {"support_x": tf.constant(x), "support_y": tf.constant(2.0 * np.sin(x - 0.5)),
            "query_x": tf.constant(rng.uniform(-5, 5, (10, 1)).astype(np.float32))}


# -- the rule -----------------------------------------------------------------------------------
def test_sound_bound_stops_before_the_first_worse_or_non_finite_count():
    # 4 -> 3 -> 3.1 (3.1 <= 1.05 * 3 = 3.15: kept) -> 2 -> 2.2 (> 1.05 * 2 = 2.1: stops)
    assert sound_bound([4.0, 3.0, 3.1, 2.0, 2.2, 1.0], 5, 0.05) == (
        3, "at 4 steps the loss 2.2 is worse than 2 at fewer steps")
    # non-finite at 2 steps: the bound is 1, whatever comes later
    assert sound_bound([4.0, 3.0, math.nan, 1.0], 3, 0.05) == (1, "not finite at 2 steps")
    assert sound_bound([4.0, 3.0, math.inf], 2, math.inf) == (1, "not finite at 2 steps")
    # all good up to the requested maximum (the curve may be longer)
    assert sound_bound([4.0, 3.0, 2.0, 9.0], 2, 0.05) == (2, "the requested maximum 2")
    assert sound_bound([4.0], 0, 0.05) == (0, "the requested maximum 0")


def test_sound_bound_refuses_a_model_that_is_not_finite_before_adapting():
    with pytest.raises(ValueError, match="0-step.*not finite"):
        sound_bound([math.nan, 1.0], 1, 0.05)


def test_config_fields_are_checked_by_name():
    with pytest.raises(ValueError, match="`num_tasks` must be an integer >= 1"):
        StepBoundConfig(num_tasks=0)
    with pytest.raises(ValueError, match="`tolerance` must be a number >= 0"):
        StepBoundConfig(tolerance=-0.1)


def test_validation_tasks_are_neither_training_nor_test_tasks():
    tasks = SinusoidTasks()
    val = sample_task_batch(tasks, validation_seed(0), 4, 5, 5).task_params.numpy()
    test = sample_task_batch(tasks, held_out_seed(0), 4, 5, 5).task_params.numpy()
    train0 = sample_task_batch(tasks, tf.constant([0, 0], tf.int64), 4, 5, 5).task_params.numpy()
    assert validation_seed(0).numpy().tolist() == [0, -2]
    assert not np.allclose(val, test) and not np.allclose(val, train0)


# -- the regressor export --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exploding(tmp_path_factory):
    """A Meta-SGD learner whose per-parameter rates, 2 to 4 (the |alpha| the issue reports after
    meta-training on sinusoids), make adaptation diverge."""
    learner = MetaSGDLearner(mlp(1, 1, hidden=(16, 16)), SinusoidTasks(),
                             MetaSGDConfig(meta_batch_size=4, rate_init_range=(2.0, 4.0)), seed=3)
    base = str(tmp_path_factory.mktemp("exploding"))
    return learner, base


def test_meta_sgd_export_bounds_steps_before_its_rates_blow_up(exploding):
    learner, base = exploding
    cfg = StepBoundConfig(num_tasks=8, num_query=20, tolerance=math.inf)  # finiteness only
    bound = validate_regressor_steps(learner.fmodel, learner.fmodel.params(),
                                     learner.update_rule(), learner.tasks, 1000, seed=3, config=cfg)
    k = bound.max_num_steps
    # the curve stopped at the first non-finite count, k + 1, long before the 1000 asked for
    assert 1 <= k < 200 and len(bound.losses) == k + 2
    assert bound.stopped_by == f"not finite at {k + 1} steps"
    assert all(math.isfinite(v) for v in bound.losses[:k + 1]) and not math.isfinite(bound.losses[-1])

    path = export_learner(learner, base, "finite-only", max_num_steps=1000, step_bound_config=cfg)
    meta = metadata(path)
    assert meta["max_num_steps"] == k and meta["step_bound"]["validated"] is True
    assert meta["step_bound"]["requested"] == 1000 and meta["step_bound"]["tolerance"] == "inf"
    adapt = tf.saved_model.load(path).signatures["adapt"]
    # the validation tasks are not these inputs, so the bound is evidence, not a proof; on a
    # sinusoid of the same family the bound is finite
    y = adapt(**sine_inputs(), num_steps=tf.constant(k))["y"].numpy()
    assert np.all(np.isfinite(y))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"num_steps must be <= max_num_steps \({k}\): the largest step count "
                             rf".*8 validation tasks at export \(not finite at {k + 1} steps\)"):
        adapt(**sine_inputs(), num_steps=tf.constant(k + 1))

    # without validation the declared 1000 is a promise the model breaks (the output check is the
    # last line of defence: an error, never inf/NaN)
    unchecked = export_learner(learner, base, "unvalidated", max_num_steps=1000,
                               validate_steps=False)
    assert metadata(unchecked)["step_bound"] == {"requested": 1000, "validated": False}
    with pytest.raises(tf.errors.InvalidArgumentError, match="y is not finite"):
        tf.saved_model.load(unchecked).signatures["adapt"](**sine_inputs(),
                                                           num_steps=tf.constant(1000))


def test_meta_sgd_export_with_the_default_rule_stops_where_the_loss_gets_worse(exploding):
    learner, base = exploding
    path = export_learner(learner, base, "default", max_num_steps=50, step_bound_config=SMALL)
    meta = metadata(path)
    sb = meta["step_bound"]
    # rates of 2-4 make the first step already much worse than none: only 0 steps are sound
    assert meta["max_num_steps"] == 0
    assert sb["stopped_by"].startswith("at 1 steps the loss") and sb["tolerance"] == 0.05
    assert sb["query_mse"]["1"] > 1.05 * sb["query_mse"]["0"]


def test_maml_export_records_a_validated_bound_up_to_the_requested_maximum(tmp_path):
    learner = MAMLLearner(mlp(1, 1, hidden=(16, 16)), SinusoidTasks(),
                          MAMLConfig(meta_batch_size=4, num_support=5, inner_lr=0.01))
    path = export_learner(learner, str(tmp_path), "maml", max_num_steps=20)
    sb = metadata(path)["step_bound"]
    # lr 0.01 on the untrained small-init net: the query loss barely moves, 20 steps all sound
    assert metadata(path)["max_num_steps"] == 20 and sb["stopped_by"] == "the requested maximum 20"
    assert sb["num_support"] == 5  # the learner's K
    # sound means within 5% of the best at fewer steps, itself <= the 0-step loss
    assert sb["query_mse"]["20"] <= 1.05 * sb["query_mse"]["0"]


def test_jit_compiled_adapt_equals_the_plain_one_and_inspect_names_the_requirement(tmp_path):
    learner = MAMLLearner(mlp(1, 1, hidden=(16, 16)), SinusoidTasks(),
                          MAMLConfig(meta_batch_size=4, inner_lr=0.05))
    plain = export_learner(learner, str(tmp_path), "plain", max_num_steps=10,
                           validate_steps=False)
    xla = export_learner(learner, str(tmp_path), "xla", max_num_steps=10, validate_steps=False,
                         jit_compile=True)
    inputs = sine_inputs(1)
    for steps in (0, 1, 5):
        a = tf.saved_model.load(plain).signatures["adapt"](**inputs, num_steps=tf.constant(steps))
        b = tf.saved_model.load(xla).signatures["adapt"](**inputs, num_steps=tf.constant(steps))
        np.testing.assert_allclose(b["y"].numpy(), a["y"].numpy(), atol=1e-5)
    # the checks stay outside the compiled part: bad input is still refused by name
    with pytest.raises(tf.errors.InvalidArgumentError, match="support_x must be finite"):
        tf.saved_model.load(xla).signatures["adapt"](
            **{**inputs, "support_x": tf.constant([[np.nan]] * 10)}, num_steps=tf.constant(1))
    assert metadata(xla)["jit_compile"] is True and metadata(plain)["jit_compile"] is False
    report, plain_report = check_saved_model(xla), check_saved_model(plain)
    assert report.ok and plain_report.ok
    assert plain_report.requirements == ()
    assert len(report.requirements) == 1
    assert "--xla_cpu_compilation_enabled=true" in report.requirements[0]


# -- every other model kind refuses non-finite outputs -------------------------------------------
def test_gradient_adapted_policy_refuses_parameters_that_overflow(tmp_path):
    policy = gaussian_mlp_policy(2, 2, hidden=(8,), seed=0)
    module = AdaptablePolicy(policy, [tf.convert_to_tensor(v) for v in policy.trainable_variables],
                             adaptation.SGD(0.1), normalize_advantages=False, max_num_steps=3)
    module.save(str(tmp_path / "p"))
    m = tf.saved_model.load(str(tmp_path / "p"))
    obs = tf.random.stateless_normal([2, 5, 2], [1, 2])
    kw = dict(observations=obs, actions=tf.zeros([2, 5, 2]), mask=tf.ones([2, 5]),
              num_steps=tf.constant(1))
    ok = m.signatures["adapt"](rewards=tf.ones([2, 5]), **kw)["params"]
    assert np.all(np.isfinite(ok.numpy()))
    # rewards of 3e38 are finite, but their 5-step returns (1.5e39) are not
    with pytest.raises(tf.errors.InvalidArgumentError, match="params is not finite"):
        m.signatures["adapt"](rewards=tf.fill([2, 5], 3e38), **kw)


def test_q_network_refuses_a_non_finite_embedding_and_q_values(tmp_path):
    net = TaskConditionedQNetwork(4, 2, 3, (8,), seed=1)
    # every weight 1: with z = 3e38 in each of its 3 dimensions a hidden unit is about 9e38 (inf
    # in float32), so every Q-value is inf and the TD error inf - inf is NaN
    params = [tf.ones_like(v) for v in net.trainable_variables]
    module = AdaptableQNetwork(net, params, tf.fill([3], 3e38), adaptation.SGD(0.1), 0.9,
                               max_num_steps=5)
    module.save(str(tmp_path / "q"))
    m = tf.saved_model.load(str(tmp_path / "q"))
    obs = tf.random.stateless_normal([6, 4], [3, 4])
    data = dict(observations=obs, actions=tf.zeros([6], tf.int32), rewards=tf.ones([6]),
                next_observations=obs, dones=tf.zeros([6]))
    # z_init 3e38 is finite, and 0 steps return it
    z0 = m.signatures["adapt"](**data, num_steps=tf.constant(0))["z"].numpy()
    np.testing.assert_allclose(z0, np.full(3, 3e38, np.float32))
    # one step: the TD gradient is NaN, z would be NaN
    with pytest.raises(tf.errors.InvalidArgumentError, match="z is not finite"):
        m.signatures["adapt"](**data, num_steps=tf.constant(1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="q_values is not finite"):
        m.signatures["serving_default"](observation=obs)
    q = m.signatures["action_with_z"](observation=obs, z=tf.zeros([3]))["q_values"]
    assert np.all(np.isfinite(q.numpy()))


def test_recurrent_policy_refuses_non_finite_outputs(tmp_path):
    policy = rl2_policy_for(PointNavTasks(), units=4, cell="gru", seed=1)
    values = [tf.convert_to_tensor(v) for v in policy.trainable_variables]
    # a learned log-std of 100 is finite, its std exp(100) is not (float32 ends at 3.4e38 = e^88.7):
    # the sampled action mean + std * noise would be +-inf
    where = [v.path for v in policy.trainable_variables].index("log_std/log_std")
    values[where] = tf.fill(values[where].shape, 100.0)
    module = AdaptiveRecurrentPolicy(policy, obs_dim=2, params=values)
    module.save(str(tmp_path / "r"))
    m = tf.saved_model.load(str(tmp_path / "r"))
    kw = dict(observation=tf.constant([[0.5, -0.5]]), prev_action=tf.zeros([1, 2]),
              prev_reward=tf.constant([1.0]), done=tf.zeros([1]), state=tf.zeros([1, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="sampled_action is not finite"):
        m.signatures["action"](**kw)
    # the policy as trained answers the same call
    out = AdaptiveRecurrentPolicy(policy, obs_dim=2).action(**kw)
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())


def test_tflite_model_refuses_non_finite_outputs(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, "relu"),
                              keras.layers.Dense(1)])
    path = tflite.convert(tflite.regressor_module(model, None, adaptation.SGD(0.01), 5),
                          str(tmp_path / "r.tflite"))[0]
    lite = tflite.TFLiteModel(path, max_num_steps=5)
    x = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    out = lite("adapt", support_x=x, support_y=x, query_x=x, num_steps=np.int32(2))
    assert np.all(np.isfinite(out["y"]))
    with pytest.raises(FloatingPointError, match="output `y` of 'adapt' is not finite"):
        lite("adapt", support_x=x, support_y=np.full_like(x, 3e38), query_x=x,
             num_steps=np.int32(2))
