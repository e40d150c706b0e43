"""What every adaptable export shares: its own copy of the inner rule, and how it is written."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from metarl_tf import adaptation


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
    raise TypeError(f"`rule` must be SGD or PerParameterSGD, got {type(rule).__name__}")


def rule_metadata(module: tf.Module) -> dict:
    if hasattr(module, "inner_rates"):
        return {"inner_rule": "per_parameter_sgd"}
    return {"inner_rule": "sgd", "inner_lr": float(module.inner_lr.numpy())}


def save_with_metadata(module: tf.Module, path: str, metadata: dict) -> None:
    """Writes the SavedModel (tag ``serve``, ``module.signatures()``) plus
    ``assets.extra/metarl_tf.json`` (TF Serving ignores ``assets.extra``)."""
    tf.saved_model.save(module, path, signatures=module.signatures())
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", "metarl_tf.json"), "w") as f:
        json.dump(metadata, f, indent=2)
