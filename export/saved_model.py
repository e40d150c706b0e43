"""Adaptable SavedModels: a meta-learned model that carries its own few-step adaptation.

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

    path = export_learner(learner, "exports", "sinusoid")        # exports/sinusoid/1
    m = tf.saved_model.load(path)                                 # in any process with TF
    y = m.signatures["adapt"](support_x=xs, support_y=ys, query_x=xq,
                              num_steps=tf.constant(5))["y"]

Bad input fails inside the graph with ``InvalidArgumentError`` naming the input: shapes
(``support_x`` etc. must be ``[rows, d]`` with the model's ``d``), ``support_x``/``support_y`` row
counts, at least one support row, finite values, and ``0 <= num_steps <= max_num_steps``.
"""
from __future__ import annotations

from export.layout import write_versioned
# The module itself lives in the library, so that metarl_tf.keras.MetaModel.export builds the same
# one without importing this package; see metarl_tf/adaptable.py.
from metarl_tf.adaptable import SIGNATURE_KEYS, AdaptableRegressor

__all__ = ["SIGNATURE_KEYS", "AdaptableRegressor", "export_learner"]


def export_learner(learner, base: str, name: str, version: int | None = None,
                   max_num_steps: int = 1000, extra_metadata: dict | None = None) -> str:
    """Exports a supervised meta-learner (MAML, FOMAML, Meta-SGD, Reptile) as an AdaptableRegressor.

    ``learner`` is a library learner or a ``metarl_tf.keras.MetaModel`` (anything with ``fmodel``
    and ``update_rule()``; a MetaModel adds its ``export_metadata()``, e.g. ``trained_with``).

    Returns the version directory written (``<base>/<name>/<version>``).
    """
    module = AdaptableRegressor(learner.fmodel, learner.fmodel.params(), learner.update_rule(),
                                max_num_steps=max_num_steps)
    own = learner.export_metadata() if hasattr(learner, "export_metadata") else {}
    metadata = {**own, **(extra_metadata or {})}
    return write_versioned(base, name, lambda d: module.save(d, metadata), version=version)
