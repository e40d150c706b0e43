"""Meta-train YOUR Keras model on YOUR regression family with compile() and fit() (MAML).

    python examples/keras_fit_own_model.py [EXPORT_DIR]

The family is lines ``y = a x + b`` (``a, b ~ U[-2, 2]``): any object with these three batched,
pure-TensorFlow methods is a task family (``metarl_tf.core.RegressionTaskDistribution``). The model is
any Keras model with an ``Input``. 17 lines below the imports; the last one writes an adaptable
SavedModel that examples/adapt_exported.py-style clients adapt with TensorFlow alone.
"""
import sys

import keras
import tensorflow as tf

from metarl_tf.algorithms import MAMLConfig
from metarl_tf.keras import MetaModel
from metarl_tf.tasks.datasets import task_dataset


class Lines:  # y = a x + b, one (a, b) per task
    input_dim, output_dim = 1, 1

    def sample_task_params(self, seed, num_tasks):
        return tf.random.stateless_uniform([num_tasks, 2], seed, -2.0, 2.0, alg="philox")

    def sample_inputs(self, seed, num_tasks, num_points):
        return tf.random.stateless_uniform([num_tasks, num_points, 1], seed, -3.0, 3.0, alg="philox")

    def evaluate(self, task_params, x):
        return task_params[:, None, 0:1] * x + task_params[:, None, 1:2]


model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, "tanh"), keras.layers.Dense(1)])
meta = MetaModel(model, MAMLConfig(inner_lr=0.05))  # 5-shot tasks, one inner step at 0.05
meta.compile(optimizer=keras.optimizers.Adam(3e-3))
meta.fit(task_dataset(Lines(), 16, 5, 10), steps_per_epoch=500, epochs=5,
         validation_data=task_dataset(Lines(), 16, 5, 10, seed=1, num_batches=20),
         callbacks=[keras.callbacks.EarlyStopping(monitor="val_query_loss", patience=1)])
curve = meta.adaptation_curve(Lines(), num_tasks=600, num_support=5, num_steps=5)
print("held-out query MSE after 0..5 inner steps:", [round(m, 3) for m in curve["mse"]])
print("exported:", meta.export(sys.argv[1] if len(sys.argv) > 1 else "lines_model"))
