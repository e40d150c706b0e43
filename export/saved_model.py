"""Exports supervised meta-learners as ``AdaptableRegressor`` SavedModels in TF Serving's layout.

The module and its signatures (``serving_default``, ``adapt``), in-graph input checks and loading
rules are documented where it lives, ``metarl_tf/adaptable.py``. Export, load and call::

    path = export_learner(learner, "exports", "sinusoid")        # exports/sinusoid/1
    m = tf.saved_model.load(path)                                 # in any process with TF
    y = m.signatures["adapt"](support_x=xs, support_y=ys, query_x=xq,
                              num_steps=tf.constant(5))["y"]
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
