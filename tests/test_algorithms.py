"""MAML / FOMAML / Meta-SGD / Reptile learners: configs, Reptile's formula, learning, compiled variants."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation, evaluation
from metarl_tf.algorithms import (MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner,
                                  ReptileConfig, ReptileLearner, reptile_direction)
from metarl_tf.networks import mlp
from metarl_tf.params import FunctionalModel
from metarl_tf.tasks import SinusoidTasks, sample_task_batch


@pytest.mark.parametrize("cls,field,value", [
    (MAMLConfig, "meta_batch_size", 0),
    (MAMLConfig, "num_support", -3),
    (MAMLConfig, "inner_lr", 0.0),
    (MAMLConfig, "inner_lr", float("nan")),
    (MAMLConfig, "meta_lr", -1e-3),
    (MAMLConfig, "inner_steps", -1),
    (MAMLConfig, "first_order", "yes"),
    (MAMLConfig, "steps_per_execution", 2.5),
    (MetaSGDConfig, "rate_init_range", (0.2, 0.1)),
    (ReptileConfig, "outer_step_size", 1.5),
    (ReptileConfig, "anneal_steps", -1),
])
def test_out_of_range_config_values_name_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MAMLConfig().inner_lr = 0.5


def test_reptile_direction_formula():
    # theta = 1, adapted W = {2, 4}: theta - mean(W) = 1 - 3 = -2 (the update theta - eps * (-2)
    # moves theta towards the mean of the adapted weights)
    out = reptile_direction([tf.constant([1.0])], [tf.constant([[2.0], [4.0]])])
    np.testing.assert_allclose(out[0].numpy(), [-2.0])


def test_reptile_learner_step_equals_its_formula():
    """One meta-step of the learner vs. the formula computed here with NumPy SGD on the same tasks."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])  # f(x) = w x + b
    model.set_weights([np.array([[0.3]], np.float32), np.array([0.1], np.float32)])
    cfg = ReptileConfig(meta_batch_size=3, num_support=4, num_query=2, inner_steps=2, inner_lr=0.05,
                        outer_step_size=0.5, jit_compile=False)
    learner = ReptileLearner(model, SinusoidTasks(), cfg, seed=11)
    batch = sample_task_batch(SinusoidTasks(), tf.constant([11, 0], tf.int64), 3, 4, 2)
    xs, ys = batch.support_x.numpy()[..., 0], batch.support_y.numpy()[..., 0]
    finals = []
    for t in range(3):
        w, b = 0.3, 0.1
        for _ in range(2):  # L = mean((w x + b - y)^2): dL/dw = mean(2 r x), dL/db = mean(2 r)
            r = w * xs[t] + b - ys[t]
            w, b = w - 0.05 * np.mean(2 * r * xs[t]), b - 0.05 * np.mean(2 * r)
        finals.append((w, b))
    w_mean, b_mean = np.mean(finals, axis=0)
    learner.train(1)
    w_new, b_new = [v.numpy().ravel()[0] for v in model.trainable_variables]
    assert w_new == pytest.approx(0.3 + 0.5 * (w_mean - 0.3), rel=1e-5)
    assert b_new == pytest.approx(0.1 + 0.5 * (b_mean - 0.1), rel=1e-5)


def test_reptile_step_size_anneals_linearly():
    learner = ReptileLearner(mlp(1, 1, (4,)), SinusoidTasks(),
                             ReptileConfig(outer_step_size=0.2, anneal_steps=10, jit_compile=False))
    assert float(learner.step_size()) == pytest.approx(0.2)
    learner.step_counter.assign(5)
    assert float(learner.step_size()) == pytest.approx(0.1)
    learner.step_counter.assign(20)
    assert float(learner.step_size()) == 0.0


LEARNERS = [(MAMLLearner, MAMLConfig), (MetaSGDLearner, MetaSGDConfig), (ReptileLearner, ReptileConfig)]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("cls,cfg_cls", LEARNERS)
def test_steps_per_execution_does_not_change_the_run(cls, cfg_cls, jit):
    """10 meta-steps as 10 calls of 1 or 2 calls of 5: the same parameters."""
    results = []
    for spe in (1, 5):
        learner = cls(mlp(1, 1, (16, 16), init="glorot_uniform", seed=3), SinusoidTasks(),
                      cfg_cls(jit_compile=jit, steps_per_execution=spe, meta_batch_size=4), seed=5)
        learner.train(10)
        assert learner.step == 10
        results.append([v.numpy() for v in learner.meta_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls,cfg_cls", LEARNERS[:2])
def test_xla_and_plain_tf_compute_the_same_meta_gradient(cls, cfg_cls):
    """On a fixed batch. (Sampled task streams differ: XLA's Philox is not TF's bit for bit.)"""
    learner = cls(mlp(1, 1, (16, 16), init="glorot_uniform", seed=3), SinusoidTasks(), cfg_cls())
    batch = sample_task_batch(SinusoidTasks(), tf.constant([1, 2], tf.int64), 6, 10, 10)

    def grads(b):
        with tf.GradientTape() as tape:
            loss, _ = learner.meta_loss(b)
        return tape.gradient(loss, learner.meta_variables)

    plain = tf.function(grads)(batch)
    xla = tf.function(grads, jit_compile=True)(batch)
    for a, b in zip(plain, xla):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        learner = MAMLLearner(mlp(1, 1, (16,), seed=2), SinusoidTasks(), MAMLConfig(), seed=9)
        runs.append(learner.train(30))
    assert runs[0] == runs[1]


def test_checkpoint_restores_the_learner_exactly(tmp_path):
    def make():
        return MetaSGDLearner(mlp(1, 1, (16,), seed=4), SinusoidTasks(), MetaSGDConfig(), seed=4)

    a = make()
    a.train(20)
    ckpt = tf.train.Checkpoint(**a.checkpoint_items())
    path = ckpt.save(str(tmp_path / "ckpt"))
    expected = a.train(20)
    b = make()
    tf.train.Checkpoint(**b.checkpoint_items()).restore(path).assert_existing_objects_matched()
    assert b.step == 20
    assert b.train(20) == expected


def test_maml_beats_the_pretrained_baseline_after_one_step():
    """A few thousand meta-steps: MAML's one-step MSE is far below joint pretraining + one step."""
    tasks = SinusoidTasks()
    learner = MAMLLearner(mlp(1, 1), tasks, MAMLConfig(), seed=0)
    learner.train(3000)
    maml = learner.evaluate(num_tasks=300, num_steps=1)["mse"]

    pre_model = mlp(1, 1)
    params = evaluation.pretrain_jointly(pre_model, tasks, steps=3000)
    baseline = evaluation.adaptation_curve(FunctionalModel(pre_model), params, tasks,
                                           adaptation.SGD(0.01), num_tasks=300, num_steps=1)["mse"]
    # Adaptation helps MAML a lot and the baseline little (its fit is the mean function, ~0).
    assert maml[1] < 0.6 * maml[0]
    assert maml[1] < 0.5 * baseline[1], (maml, baseline)


def test_per_task_curve_is_what_the_adaptation_curve_averages():
    tasks = SinusoidTasks()
    fmodel = FunctionalModel(mlp(1, 1, (8,), seed=3))
    rule = adaptation.SGD(0.05)
    rows = evaluation.per_task_curve(fmodel, fmodel.params(), tasks, rule, num_tasks=7,
                                     num_query=5, num_steps=2, seed=4)
    curve = evaluation.adaptation_curve(fmodel, fmodel.params(), tasks, rule, num_tasks=7,
                                        num_query=5, num_steps=2, seed=4)
    assert rows.shape == (3, 7)
    np.testing.assert_allclose(rows.mean(axis=1), curve["mse"], rtol=1e-6)
    np.testing.assert_allclose(1.96 * rows.std(axis=1) / np.sqrt(7), curve["ci95"], rtol=1e-5)
    # The tasks differ from one another, and a step changes each task's loss.
    assert len(set(np.round(rows[0], 6))) == 7 and np.all(rows[1] != rows[0])
