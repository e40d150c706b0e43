"""Adaptable modules: a meta-learned regressor plus its own inner loop, as a ``tf.Module``.

This is the one exporter of supervised meta-learners: ``export.saved_model.export_learner`` (what
``metarl export`` runs) and ``metarl_tf.keras.MetaModel.export`` both build an ``AdaptableRegressor``
and call its ``save``. It lives in the library, not in ``export/``, so that ``MetaModel.export`` uses
it without ``metarl_tf`` importing the ``export`` package (the arrows point one way,
``export -> metarl_tf``); ``export/`` adds TF Serving's versioned layout, the policy exports and the
clients, and re-exports these names. Files are written only when asked (``save``), as
``keras.Model.save`` does.

``AdaptableRegressor`` signatures (TF Serving's predict method, batch dimension -1):

* ``serving_default``: ``x`` float32 ``[-1, d_in]`` -> ``y`` float32 ``[-1, d_out]``, the
  meta-learned model's prediction.
* ``adapt``: ``support_x`` ``[-1, d_in]``, ``support_y`` ``[-1, d_out]``, ``query_x`` ``[-1, d_in]``,
  ``num_steps`` int32 scalar -> ``y`` ``[-1, d_out]``: the prediction at ``query_x`` after
  ``num_steps`` inner steps on the support set, with the learned rates when the model was trained
  with Meta-SGD. The steps run in a ``tf.while_loop`` traced from ``metarl_tf.adaptation.adapt``,
  the same function training uses.

The SavedModel holds only TensorFlow ops and variables: it loads with ``tensorflow`` alone (no
Keras, no metarl_tf, no Python function ops). Save, load and call::

    module = AdaptableRegressor(learner.fmodel, learner.fmodel.params(), learner.update_rule())
    module.save("model_dir")     # or export.saved_model.export_learner(learner, "exports", "sine")
    m = tf.saved_model.load("model_dir")                          # in any process with TF
    y = m.signatures["adapt"](support_x=xs, support_y=ys, query_x=xq,
                              num_steps=tf.constant(5))["y"]

Bad input fails inside the graph with ``InvalidArgumentError`` naming the input: shapes
(``support_x`` etc. must be ``[rows, d]`` with the model's ``d``), ``support_x``/``support_y`` row
counts, at least one support row, finite values, and ``0 <= num_steps <= max_num_steps``; an output
that overflows (finite but huge inputs) fails the same way rather than returning inf/NaN.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from metarl_tf import __version__, adaptation, update_rules
from metarl_tf.params import FunctionalModel, mse
from metarl_tf.signatures import regressor_specs

SIGNATURE_KEYS = ("serving_default", "adapt")


def own_rule(module: tf.Module, rule: adaptation.UpdateRule) -> adaptation.UpdateRule:
    """Copies ``rule``'s rate(s) into variables of ``module`` (``inner_lr`` or ``inner_rates``) and
    returns the same rule reading them, so the SavedModel carries the (learned) rates itself."""
    if isinstance(rule, adaptation.SGD):
        module.inner_lr = tf.Variable(float(rule.learning_rate), trainable=False, name="inner_lr")
        return adaptation.SGD(module.inner_lr)
    if isinstance(rule, adaptation.PerParameterSGD):
        module.inner_rates = [tf.Variable(r, trainable=False, name=f"inner_rate_{i}")
                              for i, r in enumerate(rule.rates)]
        return adaptation.PerParameterSGD(module.inner_rates)
    if isinstance(rule, adaptation.PerStepSGD):
        module.inner_step_rates = [tf.Variable(r, trainable=False, name=f"inner_step_rate_{i}")
                                   for i, r in enumerate(rule.rates)]
        return adaptation.PerStepSGD(module.inner_step_rates)
    if isinstance(rule, update_rules.MetaLSTM):  # a learned rule carries its own weights
        return rule.copy_into(module)
    raise TypeError("`rule` must be SGD, PerParameterSGD, PerStepSGD or update_rules.MetaLSTM, got "
                    f"{type(rule).__name__}")


def rule_metadata(module: tf.Module) -> dict:
    if hasattr(module, "rule_weights"):
        return update_rules.weights_metadata(module.rule_weights)
    if hasattr(module, "inner_rates"):
        return {"inner_rule": "per_parameter_sgd"}
    if hasattr(module, "inner_step_rates"):
        return {"inner_rule": "per_step_sgd",
                "inner_rate_steps": int(module.inner_step_rates[0].shape[0])}
    return {"inner_rule": "sgd", "inner_lr": float(module.inner_lr.numpy())}


def save_with_metadata(module: tf.Module, path: str, metadata: dict) -> None:
    """Writes the SavedModel (tag ``serve``, ``module.signatures()``) plus
    ``assets.extra/metarl_tf.json`` (TF Serving ignores ``assets.extra``)."""
    tf.saved_model.save(module, path, signatures=module.signatures())
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    target = os.path.join(path, "assets.extra", "metarl_tf.json")
    with open(target + ".tmp", "w") as f:
        json.dump(metadata, f, indent=2)
    os.replace(target + ".tmp", target)



class AdaptableRegressor(tf.Module):
    """A regressor plus its inner loop, as a ``tf.Module`` ready for ``tf.saved_model.save``.

    Args:
      fmodel: the network (only traced; the export keeps its own copies of the values).
      params: meta-learned parameter values, ordered like ``fmodel.variables``.
      rule: ``adaptation.SGD``, ``adaptation.PerParameterSGD`` with the meta-learned rate(s), or a
        learned ``update_rules.MetaLSTM`` (its weights become variables of the SavedModel).
      max_num_steps: the largest ``num_steps`` the ``adapt`` signature accepts. Meta-SGD's rates
        are learned for the number of steps it was trained with (often 1) and can be large
        (|alpha| of 2-4 on sinusoids): many more steps than that may diverge to inf/NaN.
        ``export.step_bounds`` finds the largest count that is sound on validation tasks, which
        ``export.saved_model.export_learner`` passes here.
      max_num_steps_note: why the bound is what it is; appended to the error a larger
        ``num_steps`` gets (e.g. "the largest count finite and not worse than fewer steps on 100
        validation tasks").
      jit_compile: compile the inner loop and the prediction of ``adapt`` with XLA (the input and
        output checks stay outside, where their ``Assert`` ops run). About 3x faster at 5 steps
        (``benchmarks/serving.py``), but TF Serving then needs its XLA JIT
        (``--xla_cpu_compilation_enabled=true`` on CPU); ``metarl inspect`` reports that.
    """

    def __init__(self, fmodel: FunctionalModel, params, rule: adaptation.UpdateRule,
                 max_num_steps: int = 1000, name: str = "adaptable_regressor",
                 max_num_steps_note: str = "", jit_compile: bool = False):
        super().__init__(name=name)
        if isinstance(max_num_steps, bool) or not isinstance(max_num_steps, int) or max_num_steps < 0:
            raise ValueError(f"`max_num_steps` must be an integer >= 0, got {max_num_steps!r}")
        if not isinstance(jit_compile, bool):
            raise ValueError(f"`jit_compile` must be a bool, got {jit_compile!r}")
        self.jit_compile = jit_compile
        d_in = int(fmodel.model.inputs[0].shape[-1])
        d_out = int(fmodel.model.outputs[0].shape[-1])
        self.input_dim, self.output_dim = d_in, d_out
        self.max_num_steps = max_num_steps
        self.params = [tf.Variable(p, trainable=False, name=f"param_{i}")
                       for i, p in enumerate(params)]
        self.non_trainable = [tf.Variable(v, trainable=False, name=f"state_{i}")
                              for i, v in enumerate(fmodel.non_trainable_variables)]
        rule = own_rule(self, rule)
        max_steps = tf.constant(max_num_steps, tf.int32)

        def predict_batched(params, x):
            return fmodel.apply_batched(params, x, self.non_trainable)

        def checked(x, name, width):
            x = tf.ensure_shape(x, [None, width], name=f"check_{name}_shape")
            return tf.debugging.check_numerics(x, f"{name} must be finite")

        def finite_output(y):
            # Finite but huge inputs (or many steps with large learned rates) can overflow: refuse
            # to answer rather than return inf/NaN.
            return tf.debugging.check_numerics(y, "y is not finite: inputs too large, or too many "
                                                  "num_steps for the learned rates")

        specs = regressor_specs(d_in, d_out)

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(x):
            x = checked(x, "x", d_in)
            tiled = fmodel.tile([tf.convert_to_tensor(p) for p in self.params], 1)
            return {"y": finite_output(predict_batched(tiled, x[None])[0])}

        @tf.function(input_signature=specs["adapt"])
        def adapt(support_x, support_y, query_x, num_steps):
            support_x = checked(support_x, "support_x", d_in)
            support_y = checked(support_y, "support_y", d_out)
            query_x = checked(query_x, "query_x", d_in)
            rows_x, rows_y = tf.shape(support_x)[0], tf.shape(support_y)[0]
            checks = [
                tf.debugging.assert_equal(rows_x, rows_y, message=(
                    "support_x and support_y must have the same number of rows")),
                tf.debugging.assert_positive(rows_x, message="support_x must have at least one row"),
                tf.debugging.assert_non_negative(num_steps, message="num_steps must be >= 0"),
                tf.debugging.assert_less_equal(num_steps, max_steps, message=(
                    f"num_steps must be <= max_num_steps ({max_num_steps})" + (
                        f": {max_num_steps_note}" if max_num_steps_note else ""))),
            ]
            with tf.control_dependencies(checks):
                support_x, support_y = tf.identity(support_x), tf.identity(support_y)
                query_x, num_steps = tf.identity(query_x), tf.identity(num_steps)
            return {"y": finite_output(adapted_prediction(support_x, support_y, query_x,
                                                          num_steps))}

        def adapted_prediction(support_x, support_y, query_x, num_steps):
            tiled = fmodel.tile([tf.convert_to_tensor(p) for p in self.params], 1)
            sx, sy = support_x[None], support_y[None]
            loss = lambda p: mse(predict_batched(p, sx), sy)  # noqa: E731
            adapted = adaptation.adapt(loss, tiled, rule, num_steps, support_loss=False)
            return predict_batched(adapted.params, query_x[None])[0]

        if jit_compile:
            adapted_prediction = tf.function(adapted_prediction, jit_compile=True)

        self.serving_default = serving_default
        self.adapt = adapt

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "adapt": self.adapt}

    def metadata(self) -> dict:
        return {"kind": "AdaptableRegressor", "metarl_tf_version": __version__,
                "input_dim": self.input_dim, "output_dim": self.output_dim,
                "max_num_steps": self.max_num_steps, "signatures": list(SIGNATURE_KEYS),
                "jit_compile": self.jit_compile,
                **rule_metadata(self)}

    def save(self, path: str, extra_metadata: dict | None = None) -> None:
        """Writes the SavedModel (tag ``serve``) plus ``assets.extra/metarl_tf.json`` to ``path``."""
        save_with_metadata(self, path, {**self.metadata(), **(extra_metadata or {})})
