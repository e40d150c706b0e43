"""Keras models as functions of explicit, task-batched parameters."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.networks import mlp
from metarl_tf.params import FunctionalModel


def perturbed(fmodel, num_tasks, seed=0):
    """Different parameters per task, so that a mix-up between tasks would show."""
    tiled = fmodel.tile(fmodel.params(), num_tasks)
    return [p + 0.1 * tf.random.stateless_normal(tf.shape(p), [seed, i]) for i, p in enumerate(tiled)]


def per_task_reference(fmodel, params, x):
    return np.stack([fmodel.apply([p[t] for p in params], x[t]).numpy() for t in range(x.shape[0])])


def test_dense_fast_path_equals_stateless_call_per_task():
    fmodel = FunctionalModel(mlp(3, 2, hidden=(8, 5), activation="tanh", init="glorot_uniform"))
    assert fmodel.uses_dense_fast_path
    x = tf.random.stateless_normal([4, 6, 3], [1, 2])
    params = perturbed(fmodel, 4)
    np.testing.assert_allclose(fmodel.apply_batched(params, x).numpy(),
                               per_task_reference(fmodel, params, x), rtol=1e-5, atol=1e-6)


def test_general_path_for_other_layers_equals_stateless_call_per_task():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.LayerNormalization(), keras.layers.Dense(2)])
    fmodel = FunctionalModel(model)
    assert not fmodel.uses_dense_fast_path
    x = tf.random.stateless_normal([3, 5, 3], [3, 4])
    params = perturbed(fmodel, 3)
    np.testing.assert_allclose(fmodel.apply_batched(params, x).numpy(),
                               per_task_reference(fmodel, params, x), rtol=1e-5, atol=1e-5)


def test_functional_chain_uses_the_fast_path_and_branches_do_not():
    inp = keras.Input((2,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    chain = keras.Model(inp, keras.layers.Dense(1)(h))
    assert FunctionalModel(chain).uses_dense_fast_path
    branch = keras.Model(inp, keras.layers.Add()([keras.layers.Dense(4)(inp), h]))
    fmodel = FunctionalModel(branch)
    assert not fmodel.uses_dense_fast_path
    x = tf.random.stateless_normal([2, 3, 2], [5, 6])
    params = perturbed(fmodel, 2)
    np.testing.assert_allclose(fmodel.apply_batched(params, x).numpy(),
                               per_task_reference(fmodel, params, x), rtol=1e-5, atol=1e-6)


def test_the_model_is_never_written():
    model = mlp(1, 1)
    before = [v.numpy().copy() for v in model.trainable_variables]
    fmodel = FunctionalModel(model)
    fmodel.apply_batched([p + 1.0 for p in fmodel.tile(fmodel.params(), 2)], tf.ones([2, 3, 1]))
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_unbuilt_model_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="must be built"):
        FunctionalModel(keras.Sequential([keras.layers.Dense(1)]))
    with pytest.raises(TypeError, match="keras.Model"):
        FunctionalModel("not a model")
