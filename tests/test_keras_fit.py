"""Keras-native meta-training: task datasets, MetaModel's step = the learner's, callbacks, export,
distribution, and the errors a bad dataset gets at fit() start."""
import glob
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.algorithms import (MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner,
                                  ReptileConfig, ReptileLearner)
from metarl_tf.core import TaskBatch
from metarl_tf.keras import MetaModel
from metarl_tf.networks import mlp
from metarl_tf.params import mse
from metarl_tf.tasks import SinusoidTasks, sample_task_batch
from metarl_tf.tasks.datasets import (KEYS, check_task_dataset, from_task_batches, seed_dataset,
                                      task_dataset)

TASKS = SinusoidTasks()
# Small and uncompiled (XLA compiles take seconds each on this machine); XLA runs in the benchmark.
FAST = dict(jit_compile=False, steps_per_execution=1)


def net(seed=1):
    return mlp(1, 1, (8,), init="glorot_uniform", seed=seed)


def as_batch(element):
    return TaskBatch(*(element[k] for k in KEYS), task_params=None)


def max_diff(a_weights, b_weights):
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(a_weights, b_weights))


# -- task datasets --------------------------------------------------------------------------------
def data(meta_batch_size, num_support, num_query, seed=0, num_batches=None):
    """A task dataset sampled by TensorFlow's kernels (no XLA compile to wait for in tests)."""
    return task_dataset(TASKS, meta_batch_size, num_support, num_query, seed=seed,
                        num_batches=num_batches, jit_compile=False)


def test_task_dataset_element_i_is_the_learners_meta_batch_i():
    dataset = data(5, 4, 6, seed=3, num_batches=3)
    assert int(dataset.cardinality()) == 3
    elements = list(dataset)
    for i, element in enumerate(elements):
        ref = sample_task_batch(TASKS, tf.constant([3, i], tf.int64), 5, 4, 6)
        for key in KEYS:
            np.testing.assert_array_equal(element[key].numpy(), getattr(ref, key).numpy())
    assert element["support_x"].shape == (5, 4, 1) and element["query_y"].shape == (5, 6, 1)
    # A second pass (a second epoch) yields the same tasks.
    np.testing.assert_array_equal(next(iter(dataset))["query_y"], elements[0]["query_y"])
    infinite = data(5, 4, 6, seed=3)
    assert int(infinite.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
    np.testing.assert_array_equal(next(iter(infinite))["support_y"], elements[0]["support_y"])


def test_xla_task_dataset_is_the_jit_compiled_learners_stream():
    # Sampled 2 at a time under XLA: 5 elements span three blocks, the last one cut short.
    dataset = task_dataset(TASKS, 5, 4, 6, seed=3, num_batches=5, block_size=2)
    assert int(dataset.cardinality()) == 5
    elements = list(dataset)
    learner = MAMLLearner(net(), TASKS, MAMLConfig(meta_batch_size=5, num_support=4, num_query=6))
    learner_sample = tf.function(learner._sample, jit_compile=True)  # what its XLA step samples
    for i, element in enumerate(elements):
        ref = learner_sample(tf.constant([3, i], tf.int64))
        for key in KEYS:
            np.testing.assert_array_equal(element[key].numpy(), getattr(ref, key).numpy())
    with pytest.raises(ValueError, match="`block_size` must be an integer >= 1"):
        task_dataset(TASKS, 5, 4, 6, block_size=0)


def test_from_task_batches_wraps_arrays_and_datasets_of_episodes():
    rng = np.random.default_rng(0)
    episodes = {"support_x": rng.normal(size=(10, 5, 2)), "support_y": rng.normal(size=(10, 5, 1)),
                "query_x": rng.normal(size=(10, 3, 2)), "query_y": rng.normal(size=(10, 3, 1)),
                "task_id": np.arange(10)}
    data = from_task_batches(episodes, meta_batch_size=4)  # 10 tasks -> 2 meta-batches of 4
    batches = list(data)
    assert len(batches) == 2 and set(batches[0]) == set(KEYS)
    assert batches[1]["query_x"].shape == (4, 3, 2) and batches[1]["query_x"].dtype == tf.float32
    np.testing.assert_allclose(batches[1]["support_y"], episodes["support_y"][4:8], rtol=1e-6)
    # One task per element, as tuples; or TaskBatch meta-batches as they are.
    tuples = tf.data.Dataset.from_tensor_slices(tuple(
        episodes[k].astype(np.float32) for k in KEYS))
    assert list(from_task_batches(tuples, 5))[1]["support_x"].shape == (5, 5, 2)
    meta = tf.data.Dataset.range(2).map(
        lambda i: sample_task_batch(TASKS, tf.stack([tf.constant(0, tf.int64), i]), 3, 2, 2))
    assert list(from_task_batches(meta))[0]["query_y"].shape == (3, 2, 1)
    with pytest.raises(ValueError, match="`meta_batch_size` is required"):
        from_task_batches(episodes)
    with pytest.raises(ValueError, match="lack 'query_y'"):
        from_task_batches({k: v for k, v in episodes.items() if k != "query_y"}, 2)


# -- the meta-step is the learner's --------------------------------------------------------------
@pytest.mark.parametrize("learner_cls,cfg", [
    (MAMLLearner, MAMLConfig(inner_lr=0.05, **FAST)),
    (MetaSGDLearner, MetaSGDConfig(**FAST)),
    (ReptileLearner, ReptileConfig(inner_steps=2, anneal_steps=4, **FAST)),
])
def test_fit_metrics_and_update_equal_the_learners(learner_cls, cfg):
    """One fit() step on one meta-batch vs. the learner's meta_loss / grads / apply on it."""
    dataset = data(4, 5, 6, seed=7, num_batches=1)
    batch = as_batch(next(iter(dataset)))
    meta = MetaModel(net(), cfg, seed=3)
    meta.compile()
    reference = learner_cls(net(), None, cfg, seed=3)  # same init, same default optimiser
    query_before, support_before = (float(v) for v in reference.meta_loss(batch))
    _, _, grads = reference.grads(batch)
    reference.apply(grads)
    reference.step_counter.assign_add(1)
    query_after, support_after = (float(v) for v in reference.meta_loss(batch))

    history = meta.fit(dataset, epochs=1, verbose=0, validation_data=dataset).history
    # One step: the epoch mean is that step's value, computed before the update.
    assert history["query_loss"][0] == pytest.approx(query_before, rel=1e-5)
    assert history["loss"][0] == history["query_loss"][0]
    assert history["support_loss"][0] == pytest.approx(support_before, rel=1e-5)
    # Validation runs after the update: the learner's meta_loss with the updated meta-parameters.
    assert history["val_query_loss"][0] == pytest.approx(query_after, rel=1e-5)
    assert history["val_support_loss"][0] == pytest.approx(support_after, rel=1e-5)
    assert max_diff(meta.network.weights, net().weights) > 1e-4  # the step did something
    assert max_diff(meta.learner.meta_variables, reference.meta_variables) < 1e-6
    assert int(meta.meta_step.numpy()) == 1


def test_meta_sgd_rates_are_trainable_weights_of_the_model():
    meta = MetaModel(net(), MetaSGDConfig(**FAST), seed=3)
    rates = [w for w in meta.trainable_weights if "inner_rate" in w.path]
    assert len(rates) == 4 and all(r is s for r, s in zip(rates, meta.learner.rates))
    # Initialised exactly as MetaSGDLearner(seed=3) does, so both start from the same point.
    reference = MetaSGDLearner(net(), None, MetaSGDConfig(**FAST), seed=3)
    assert max_diff(rates, reference.rates) == 0.0


def test_multi_step_executions_equal_one_step_per_call():
    """steps_per_execution=2 (MetaModel's fused loop, under XLA) on 5 meta-batches -- executions of
    2, 2 and 1 steps -- gives the run of one uncompiled step per call."""
    dataset = data(4, 5, 5, seed=5, num_batches=5)
    runs = []
    for compile_args in (dict(jit_compile=False, steps_per_execution=1),
                         dict(jit_compile=True, steps_per_execution=2)):
        meta = MetaModel(net(), MAMLConfig())
        meta.compile(**compile_args)
        runs.append((meta, meta.fit(dataset, epochs=2, verbose=0).history))
    (one, h1), (fused, h2) = runs
    assert int(fused.meta_step.numpy()) == int(one.meta_step.numpy()) == 10
    assert max_diff(fused.weights, one.weights) < 1e-5  # XLA vs. TensorFlow kernels
    np.testing.assert_allclose(h2["query_loss"], h1["query_loss"], rtol=1e-5)


# -- task seeds: sampling inside the compiled step ------------------------------------------------
def test_seed_dataset_yields_the_stateless_seed_of_each_meta_step():
    finite = seed_dataset(seed=3, num_batches=3)
    assert int(finite.cardinality()) == 3
    assert [e["task_seed"].numpy().tolist() for e in finite] == [[3, 0], [3, 1], [3, 2]]
    assert next(iter(seed_dataset(seed=5)))["task_seed"].dtype == tf.int64
    with pytest.raises(ValueError, match="`num_batches` must be an integer >= 1 or None"):
        seed_dataset(num_batches=0)


@pytest.mark.parametrize("compile_args", [dict(jit_compile=False, steps_per_execution=1),
                                          dict(jit_compile=True, steps_per_execution=3)])
def test_fit_on_task_seeds_is_the_learners_train(compile_args):
    """fit() on seed_dataset(seed) runs MAMLLearner(tasks, seed).train: meta-step i samples
    (seed, i) in the step, so 7 meta-steps (executions of 3, 3, 1 under XLA) give the learner's
    weights exactly -- the same sampling and math, traced into the same kind of program."""
    cfg = MAMLConfig(meta_batch_size=4, num_support=5, num_query=5, inner_lr=0.05, **compile_args)
    learner = MAMLLearner(net(), TASKS, cfg, seed=3)
    meta = MetaModel(net(), cfg, seed=3, tasks=TASKS)
    meta.compile()
    last = learner.train(7)
    history = meta.fit(seed_dataset(seed=3, num_batches=7), epochs=1, verbose=0,
                       validation_data=seed_dataset(seed=9, num_batches=2)).history
    assert int(meta.meta_step.numpy()) == learner.step == 7
    assert max_diff(meta.network.weights, learner.fmodel.variables) < 1e-6
    assert max_diff(meta.network.weights, net().weights) > 1e-3  # it trained
    # Validation samples (9, 0) and (9, 1) in the step: the learner's meta_loss on the batches its
    # sampler draws there (under XLA when compiled: XLA's Philox stream is not TensorFlow's).
    sample = tf.function(learner._sample, jit_compile=cfg.jit_compile)
    val = [learner.meta_loss(sample(tf.constant([9, i], tf.int64))) for i in range(2)]
    assert history["val_query_loss"][0] == pytest.approx(np.mean([float(v[0]) for v in val]),
                                                         rel=1e-5)
    assert np.isfinite(last["query_loss"]) and history["query_loss"][0] > 0


def test_task_seeds_need_tasks_and_one_replica():
    meta = MetaModel(net(), MAMLConfig(**FAST))
    meta.compile()
    with pytest.raises(ValueError, match=r"`x` yields task seeds \('task_seed'\) but this MetaModel "
                                         r"has no task distribution.*tasks=\.\.\."):
        meta.fit(seed_dataset(num_batches=1), verbose=0)
    seeded = MetaModel(net(), MAMLConfig(**FAST), tasks=TASKS)
    seeded.compile()
    bad = tf.data.Dataset.from_tensors({"task_seed": tf.constant([1, 2, 3], tf.int64)})
    with pytest.raises(ValueError, match=r"element 'task_seed' must be an int64 tensor of shape"):
        seeded.fit(bad, verbose=0)
    with pytest.raises(ValueError, match="`validation_data` yields task seeds"):
        meta.fit(data(4, 5, 5, num_batches=1), validation_data=seed_dataset(num_batches=1),
                 verbose=0)
    with pytest.raises(TypeError, match="`tasks` must implement RegressionTaskDistribution"):
        MetaModel(net(), MAMLConfig(**FAST), tasks="sinusoid")
    wide = MetaModel(mlp(2, 1, (4,)), MAMLConfig(**FAST), tasks=TASKS)  # sinusoids have x in R^1
    wide.compile()
    with pytest.raises(ValueError, match=r"\(as sampled from `tasks`\)` element 'support_x' has "
                                         r"feature shape \(1,\).*input shape is \(2,\)"):
        wide.fit(seed_dataset(num_batches=1), verbose=0)


def test_a_model_with_tasks_saves_and_reloads_them(tmp_path):
    meta = MetaModel(net(), MAMLConfig(**FAST), tasks=SinusoidTasks(amplitude_range=(1.0, 2.0)))
    meta.compile()
    meta.fit(seed_dataset(num_batches=2), verbose=0)
    meta.save(str(tmp_path / "m.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert loaded.tasks == meta.tasks and loaded.tasks.amplitude_range == (1.0, 2.0)
    assert max_diff(loaded.network.weights, meta.network.weights) == 0.0


# -- callbacks ------------------------------------------------------------------------------------
class Interrupt(keras.callbacks.Callback):
    """Simulates a preemption at the start of an epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"preempted at epoch {epoch}")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A Meta-SGD MetaModel fit with TensorBoard, ModelCheckpoint and EarlyStopping together."""
    tmp = tmp_path_factory.mktemp("fit")
    meta = MetaModel(net(), MetaSGDConfig(**FAST), seed=3)
    initial = [w.numpy() for w in meta.weights]
    meta.compile(optimizer=keras.optimizers.Adam(0.01))
    # min_delta=1e6: no epoch after the first counts as an improvement, so it stops after epoch 1.
    early = keras.callbacks.EarlyStopping(monitor="val_query_loss", min_delta=1e6, patience=1)
    callbacks = [keras.callbacks.TensorBoard(str(tmp / "tb")),
                 keras.callbacks.ModelCheckpoint(str(tmp / "ckpt-{epoch:02d}.weights.h5"),
                                                 save_weights_only=True),
                 keras.callbacks.ModelCheckpoint(str(tmp / "best.keras"),
                                                 monitor="val_query_loss", save_best_only=True),
                 early]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = meta.fit(data(4, 5, 5, seed=0, num_batches=3), epochs=6, verbose=0,
                           callbacks=callbacks, validation_data=data(4, 5, 5, seed=1, num_batches=2))
    return {"meta": meta, "history": history.history, "tmp": tmp, "early": early,
            "initial": initial, "warnings": [str(w.message) for w in caught]}


def read_scalars(event_dir):
    out = {}
    for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return out


def test_early_stopping_on_post_adaptation_validation_loss(fitted):
    # Stopped after epochs 0 and 1 of 6 (it would not stop without reading val_query_loss).
    assert fitted["early"].stopped_epoch == 1 and fitted["early"].mode == "min"
    assert len(fitted["history"]["val_query_loss"]) == 2
    assert not [w for w in fitted["warnings"] if "val_query_loss" in w]  # the metric existed


def test_tensorboard_writes_the_meta_losses(fitted):
    train = read_scalars(str(fitted["tmp"] / "tb" / "train"))
    val = read_scalars(str(fitted["tmp"] / "tb" / "validation"))
    for tag in ("epoch_loss", "epoch_query_loss", "epoch_support_loss"):
        assert tag in train and tag in val, (sorted(train), sorted(val))
    np.testing.assert_allclose(train["epoch_query_loss"], fitted["history"]["query_loss"], rtol=1e-6)
    np.testing.assert_allclose(val["epoch_query_loss"], fitted["history"]["val_query_loss"],
                               rtol=1e-6)


def test_model_checkpoint_saves_network_and_learned_rates(fitted):
    meta, tmp = fitted["meta"], fitted["tmp"]
    assert sorted(f for f in os.listdir(tmp) if f.startswith("ckpt")) == [
        "ckpt-01.weights.h5", "ckpt-02.weights.h5"]
    restored = MetaModel(net(seed=9), MetaSGDConfig(**FAST), seed=9)  # different init
    restored.load_weights(str(tmp / "ckpt-02.weights.h5"))
    assert max_diff(restored.weights, meta.weights) == 0.0
    rates = [i for i, w in enumerate(meta.weights) if "inner_rate" in w.path]
    # The rates were meta-learned (they moved from their initial values) and came back.
    assert max(float(np.max(np.abs(meta.weights[i].numpy() - fitted["initial"][i])))
               for i in rates) > 1e-4


def test_model_checkpoint_best_whole_model_reloads(fitted):
    tmp, history = fitted["tmp"], fitted["history"]
    best_epoch = int(np.argmin(history["val_query_loss"])) + 1  # lower is better (mode "min")
    loaded = keras.models.load_model(str(tmp / "best.keras"))
    assert isinstance(loaded, MetaModel) and loaded.config == fitted["meta"].config
    at_best = MetaModel(net(), MetaSGDConfig(**FAST))
    at_best.load_weights(str(tmp / f"ckpt-{best_epoch:02d}.weights.h5"))
    assert max_diff(loaded.weights, at_best.weights) == 0.0
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)  # compiled as saved


def test_backup_and_restore_resumes_from_the_saved_epoch(tmp_path):
    dataset = data(4, 5, 5, seed=0, num_batches=2)
    cfg = MAMLConfig(**FAST)
    uninterrupted = MetaModel(net(), cfg)
    uninterrupted.compile()
    uninterrupted.fit(dataset, epochs=4, verbose=0)

    backup = str(tmp_path / "backup")
    first = MetaModel(net(), cfg)
    first.compile()
    with pytest.raises(RuntimeError, match="preempted at epoch 2"):
        first.fit(dataset, epochs=4, verbose=0,
                  callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt(2)])
    with open(os.path.join(backup, "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 2

    restarted = MetaModel(net(), cfg)  # a fresh process would build the same model
    restarted.compile()
    history = restarted.fit(dataset, epochs=4, verbose=0,
                            callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert history.epoch == [2, 3]  # epochs 0 and 1 were not run again
    assert int(restarted.meta_step.numpy()) == 8  # 4 epochs x 2 meta-batches
    # Weights, Adam's moments and step count came back: the run equals the uninterrupted one.
    assert max_diff(restarted.weights, uninterrupted.weights) < 1e-6
    assert not os.path.exists(backup)  # removed once training finished


# -- export ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory):
    from export.saved_model import export_learner  # the exporter `metarl export` calls

    base = tmp_path_factory.mktemp("exports")
    path = export_learner(fitted["meta"], str(base), "sine")
    return {"path": path, "base": str(base), "loaded": tf.saved_model.load(path)}


def test_export_writes_metarl_exports_layout_and_metadata(fitted, exported):
    path, meta = exported["path"], fitted["meta"]
    assert path == os.path.join(exported["base"], "sine", "1")
    assert set(exported["loaded"].signatures) == {"serving_default", "adapt"}
    with open(os.path.join(path, "assets.extra", "metarl_tf.json")) as fh:
        info = json.load(fh)
    assert info["kind"] == "AdaptableRegressor" and info["inner_rule"] == "per_parameter_sgd"
    assert info["algorithm"] == "MetaSGDConfig" and info["trained_with"] == "keras_fit"
    assert info["meta_steps"] == int(meta.meta_step.numpy()) == 6  # 2 epochs x 3 meta-batches


@pytest.mark.parametrize("steps", [0, 1, 5])
def test_export_round_trip_adapts_like_the_library(fitted, exported, steps):
    meta, loaded = fitted["meta"], exported["loaded"]
    rng = np.random.default_rng(steps)
    xs = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    ys = (2.0 * np.sin(xs - 0.5)).astype(np.float32)
    xq = rng.uniform(-5, 5, (30, 1)).astype(np.float32)
    y = loaded.signatures["adapt"](support_x=tf.constant(xs), support_y=tf.constant(ys),
                                   query_x=tf.constant(xq), num_steps=tf.constant(steps))["y"]
    # In-library adaptation with the learned rates, written out here.
    f = meta.fmodel
    loss = lambda p: mse(f.apply_batched(p, xs[None]), ys[None])
    adapted = adaptation.adapt(loss, f.tile(f.params(), 1),
                               adaptation.PerParameterSGD(meta.learner.rates), steps)
    ref = f.apply_batched(adapted.params, xq[None])[0]
    np.testing.assert_allclose(y.numpy(), ref.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(meta.adapt(xs, ys, xq, steps).numpy(), ref.numpy(), atol=1e-6)
    y0 = loaded.signatures["serving_default"](x=tf.constant(xq))["y"]
    np.testing.assert_allclose(y0.numpy(), meta(xq).numpy(), atol=1e-5)


def test_export_to_a_plain_directory_is_the_same_saved_model(fitted, exported, tmp_path):
    meta = fitted["meta"]
    path = meta.export(str(tmp_path / "model"), max_num_steps=7)
    assert path == str(tmp_path / "model")
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "adapt"}
    with open(os.path.join(path, "assets.extra", "metarl_tf.json")) as fh:
        info = json.load(fh)
    assert info["kind"] == "AdaptableRegressor" and info["trained_with"] == "keras_fit"
    assert info["max_num_steps"] == 7
    xs, xq = np.linspace(-4, 4, 10, dtype=np.float32)[:, None], np.zeros((3, 1), np.float32)
    args = dict(support_x=xs, support_y=np.sin(xs), query_x=xq, num_steps=tf.constant(2))
    # The same module as export_learner writes: the same predictions, to the bit.
    np.testing.assert_array_equal(loaded.signatures["adapt"](**args)["y"].numpy(),
                                  exported["loaded"].signatures["adapt"](**args)["y"].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_steps must be <= max_num_steps"):
        loaded.signatures["adapt"](**{**args, "num_steps": tf.constant(8)})
    with pytest.raises(ValueError, match=r"export.saved_model.export_learner\(meta_model, base"):
        meta.export(str(tmp_path / "other"), name="sine")


def test_metarl_tf_imports_neither_training_nor_export(repo_root, tmp_path):
    """The arrows point one way: MetaModel.export writes the adaptable SavedModel with the library's
    own AdaptableRegressor, and no module under metarl_tf imports `export` or `training`."""
    import ast

    offenders = []
    for path in glob.glob(os.path.join(repo_root, "metarl_tf", "**", "*.py"), recursive=True):
        with open(path) as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):  # every import, at module level or inside a function
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [(path, n) for n in names if n.split(".")[0] in ("export", "training")]
    assert offenders == []
    code = f"""
import sys
from metarl_tf.algorithms import MAMLConfig
from metarl_tf.keras import MetaModel
from metarl_tf.networks import mlp
MetaModel(mlp(1, 1, (4,)), MAMLConfig(jit_compile=False)).export({str(tmp_path / "m")!r})
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"export", "training"}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=repo_root, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert os.path.exists(tmp_path / "m" / "saved_model.pb")


# -- bad input --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled():
    meta = MetaModel(net(), MAMLConfig(**FAST))
    meta.compile()
    return meta


def dict_dataset(**shapes):
    return tf.data.Dataset.from_tensors(
        {k: tf.zeros(s) for k, s in shapes.items()})


GOOD = dict(support_x=(4, 5, 1), support_y=(4, 5, 1), query_x=(4, 6, 1), query_y=(4, 6, 1))


@pytest.mark.parametrize("data,match", [
    (dict_dataset(**{k: v for k, v in GOOD.items() if k != "query_y"}),
     r"`x` elements lack 'query_y'.*'support_x': \[tasks, K, \*input_shape\]"),
    (tf.data.Dataset.from_tensors((tf.zeros((4, 5, 1)), tf.zeros((4, 5, 1)))),
     r"`x` elements must be dicts \{'support_x'.*got elements of structure tuple of 2"),
    (dict_dataset(**{**GOOD, "support_x": (4, 5, 3), "query_x": (4, 6, 3)}),
     r"element 'support_x' has feature shape \(3,\).*model's input shape is \(1,\)"),
    (dict_dataset(**{**GOOD, "query_y": (4, 6, 2)}),
     r"elements 'support_y' \(4, 5, 1\) and 'query_y' \(4, 6, 2\) disagree on the feature shape"),
    (dict_dataset(**{**GOOD, "support_y": (4, 5, 2), "query_y": (4, 6, 2)}),
     r"element 'support_y' has feature shape \(2,\).*output shape is \(1,\)"),
    (dict_dataset(**{**GOOD, "support_y": (4, 3, 1)}),
     r"'support_x' \(4, 5, 1\) and 'support_y' \(4, 3, 1\) disagree on axis 1"),
    (dict_dataset(**{**GOOD, "support_x": (4, 1)}), r"element 'support_x' has shape \(4, 1\)"),
    (np.zeros((4, 5, 1), np.float32), r"`x` must be a tf.data.Dataset of meta-batches"),
    (data(4, 5, 6), r"`x` is an infinite task dataset: pass `steps_per_epoch`"),
])
def test_bad_datasets_fail_at_fit_start_naming_the_element(compiled, data, match):
    with pytest.raises(ValueError, match=match):
        compiled.fit(data, epochs=1, verbose=0)


class TwoInputs(keras.Model):
    """A subclassed network (no ``inputs`` to read widths from): f(x) = w . x, x of width 2."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)


def test_bad_widths_for_a_subclassed_network():
    network = TwoInputs()
    network(np.zeros((1, 2), np.float32))
    meta = MetaModel(network, MAMLConfig(**FAST))
    meta.compile()
    with pytest.raises(ValueError, match=r"element 'support_x' \(4, 5, 1\) does not fit the network"):
        meta.fit(dict_dataset(**GOOD), verbose=0)
    wide_y = dict_dataset(support_x=(4, 5, 2), support_y=(4, 5, 3), query_x=(4, 6, 2),
                          query_y=(4, 6, 3))
    with pytest.raises(ValueError, match=r"'support_y' \(4, 5, 3\) does not match the network's "
                                         r"output shape \(1,\)"):
        meta.fit(wide_y, verbose=0)


def test_bad_validation_data_and_arguments(compiled):
    good = data(4, 5, 6, num_batches=1)
    bad = dict_dataset(**{k: v for k, v in GOOD.items() if k != "support_y"})
    with pytest.raises(ValueError, match="`validation_data` elements lack 'support_y'"):
        compiled.fit(good, validation_data=bad, verbose=0)
    with pytest.raises(ValueError, match="`y` must be None"):
        compiled.fit(good, np.zeros(3), verbose=0)
    with pytest.raises(ValueError, match="without `loss`"):
        MetaModel(net(), MAMLConfig(**FAST)).compile(loss="mse")
    with pytest.raises(ValueError, match="compile it with optimizer=None"):
        MetaModel(net(), ReptileConfig(**FAST)).compile(optimizer="adam")
    with pytest.raises(TypeError, match="MAMLConfig, MetaSGDConfig or ReptileConfig"):
        MetaModel(net(), {"inner_lr": 0.1})
    assert check_task_dataset(good, (1,), (1,))["query_x"].shape.as_list() == [4, 6, 1]


# -- distribution ---------------------------------------------------------------------------------
MIRRORED = r"""
import json, warnings
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from metarl_tf.algorithms import MetaSGDConfig, ReptileConfig
from metarl_tf.keras import MetaModel
from metarl_tf.networks import mlp
from metarl_tf.tasks import SinusoidTasks
from metarl_tf.tasks.datasets import task_dataset
data = task_dataset(SinusoidTasks(), 4, 5, 5, seed=3, num_batches=3, jit_compile=False)
# One strategy for the whole process: a second MirroredStrategy over the same devices would clash
# with the first one's collective instance keys (a TensorFlow limitation, plain Keras models too).
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
# Meta-SGD covers MAML's path (Keras' optimizer sums the gradients) plus learned rates as mirrored
# weights; Reptile covers the all-reduced direction applied in cross-replica context.
for name, cfg, val in [("metasgd", MetaSGDConfig(jit_compile=False), data),
                       ("reptile", ReptileConfig(jit_compile=False, anneal_steps=4), None)]:
    single = MetaModel(mlp(1, 1, (8,), init="glorot_uniform", seed=1), cfg, seed=2)
    single.compile(steps_per_execution=1)
    h1 = single.fit(data, epochs=2, verbose=0, validation_data=val).history
    with strategy.scope():
        dist = MetaModel(mlp(1, 1, (8,), init="glorot_uniform", seed=1), cfg, seed=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dist.compile(steps_per_execution=3)
    h2 = dist.fit(data, epochs=2, verbose=0, validation_data=val).history
    out[name] = {
        "replicas": dist.distribute_strategy.num_replicas_in_sync,
        "steps": int(dist.meta_step.numpy()), "metrics": sorted(h2),
        "max_weight_diff": max(float(np.max(np.abs(a.numpy() - b.numpy())))
                               for a, b in zip(single.weights, dist.weights)),
        "max_metric_diff": max(abs(a - b) for k in h1 for a, b in zip(h1[k], h2[k])),
        "spe_warning": any("keras-team/keras#19246" in str(w.message) for w in caught)}
try:
    dist.fit(task_dataset(SinusoidTasks(), 5, 5, 5, num_batches=1, jit_compile=False), verbose=0)
except ValueError as e:
    out["odd_error"] = str(e)
print(json.dumps(out))
"""


def test_mirrored_fit_on_two_logical_cpus_equals_one_device(repo_root):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                          env=env, cwd=repo_root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("metasgd", "reptile"):
        r = out[name]
        assert r["replicas"] == 2 and r["steps"] == 6 and r["spe_warning"], (name, r)
        # Each replica meta-learns on 2 of the 4 tasks, loss scaled by 1/2, gradients (Reptile:
        # directions) summed: 6 updates give the single-device weights and metrics.
        assert r["max_weight_diff"] < 1e-6, (name, r)
        assert r["max_metric_diff"] < 1e-5, (name, r)
    assert "val_query_loss" in out["metasgd"]["metrics"]
    assert "5 tasks" in out["odd_error"] and "2 replicas" in out["odd_error"]
