"""Keras 3 models as pure functions of explicit parameter lists.

Meta-learning needs ``f(params, x)`` for parameters the learner owns (adapted copies, one per task),
not the values stored in the model's variables. Keras 3 gives exactly that with
``model.stateless_call(trainable, non_trainable, x)``; this module wraps it and adds the *task axis*:
a meta-batch of ``T`` tasks carries ``T`` adapted parameter sets, stored as tensors with a leading
axis of size ``T`` (``[T, *variable.shape]``).

Two ways to evaluate a task-batched model, both exact:

* **dense fast path** -- a model made only of ``Dense`` (and ``Activation``) layers is evaluated with
  batched matrix products (``[T, N, d] @ [T, d, h]``); this is what makes a whole MAML meta-step a
  handful of fused XLA kernels;
* **general path** -- any other model runs ``stateless_call`` per task under ``tf.vectorized_map``.

The model itself is never modified: no variable is assigned, no layer rewritten.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

Params = list  # list[tf.Tensor], ordered like ``model.trainable_variables``


class FunctionalModel:
    """A Keras model seen as ``apply(params, x)`` over explicit parameters.

    Args:
      model: a built Keras 3 model (its variables must exist; call it once or give it an ``Input``).

    Example::

        fmodel = FunctionalModel(keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, "relu"),
                                                   keras.layers.Dense(1)]))
        params = fmodel.params()                                  # the model's current values
        y = fmodel.apply(params, x)                               # x: [N, 1]
        batched = fmodel.tile(params, num_tasks=25)               # [25, *shape] each
        y_t = fmodel.apply_batched(batched, x_t)                  # x_t: [25, N, 1]
    """

    def __init__(self, model: keras.Model):
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}")
        if not model.built or not model.trainable_variables:
            raise ValueError("`model` must be built and have trainable variables: give it a "
                             "keras.Input or call it once on a batch before meta-learning")
        self.model = model
        self.variables = list(model.trainable_variables)
        self.non_trainable_variables = list(model.non_trainable_variables)
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.names = [v.path for v in self.variables]
        self.dtype = tf.as_dtype(self.variables[0].dtype)
        self._dense_plan = _dense_plan(model, self.variables)

    @property
    def uses_dense_fast_path(self) -> bool:
        return self._dense_plan is not None

    def params(self) -> Params:
        """The model's current trainable values, as tensors."""
        return [tf.convert_to_tensor(v) for v in self.variables]

    def apply(self, params: Sequence[tf.Tensor], x: tf.Tensor,
              non_trainable: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """``f(params, x)`` for one parameter set; ``x`` has the model's input shape."""
        nt = self.non_trainable_variables if non_trainable is None else non_trainable
        out, _ = self.model.stateless_call(list(params), list(nt), x, training=False)
        return out

    def apply_batched(self, params: Sequence[tf.Tensor], x: tf.Tensor,
                      non_trainable: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """``f(params[t], x[t])`` for every task ``t``.

        Args:
          params: task-batched parameters, ``[T, *shape]`` per variable.
          x: ``[T, N, *input_shape]``.
          non_trainable: values for the model's non-trainable variables (shared by all tasks);
            default: the model's own.

        Returns:
          ``[T, N, *output_shape]``.
        """
        if self._dense_plan is not None:
            return _apply_dense_plan(self._dense_plan, params, x)
        nt = self.non_trainable_variables if non_trainable is None else non_trainable
        nt = [tf.convert_to_tensor(v) for v in nt]
        return tf.vectorized_map(lambda args: self.apply(args[0], args[1], nt), (list(params), x))

    def tile(self, params: Sequence[tf.Tensor], num_tasks) -> Params:
        """Shared parameters -> task-batched ``[num_tasks, *shape]`` copies (differentiable)."""
        return [tf.tile(p[None], [num_tasks] + [1] * len(p.shape)) for p in params]


def _dense_plan(model: keras.Model, variables: list) -> list | None:
    """Describes ``model`` as [(kernel_index, bias_index_or_None, activation)] if it is a plain MLP.

    Returns None (use the general path) for anything else: other layer types, LoRA or quantized
    Dense layers, branching functional graphs.
    """
    index = {id(v): i for i, v in enumerate(variables)}
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        pass
    elif isinstance(model, keras.Model) and hasattr(model, "_operations"):
        # A functional model is a chain iff each layer consumes exactly the previous one's output.
        try:
            chain = all(len(layer._inbound_nodes) == 1 for layer in layers)
            for prev, layer in zip(layers, layers[1:]):
                parents = layer._inbound_nodes[0].parent_nodes
                chain = chain and len(parents) == 1 and parents[0].operation is prev
        except (AttributeError, IndexError):
            chain = False
        if not chain:
            return None
    else:
        return None
    plan = []
    for layer in layers:
        if type(layer) is keras.layers.Dense:
            if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
                return None
            if id(layer.kernel) not in index:
                return None
            bias = index[id(layer.bias)] if layer.use_bias else None
            plan.append((index[id(layer.kernel)], bias, layer.activation))
        elif type(layer) is keras.layers.Activation:
            plan.append((None, None, layer.activation))
        else:
            return None
    if {p[0] for p in plan if p[0] is not None} | {p[1] for p in plan if p[1] is not None} != set(
            range(len(variables))):
        return None
    return plan


def _apply_dense_plan(plan, params, x):
    h = x
    for kernel, bias, activation in plan:
        if kernel is not None:
            h = tf.matmul(h, params[kernel])
            if bias is not None:
                h = h + tf.expand_dims(params[bias], -2)
        if activation is not None and activation is not keras.activations.linear:
            h = activation(h)
    return h


def mse(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Mean squared error per task: ``[T, N, d] -> [T]``."""
    return tf.reduce_mean(tf.square(pred - target), axis=list(range(1, len(pred.shape))))


LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
