"""Exports supervised meta-learners as ``AdaptableRegressor`` SavedModels in TF Serving's layout.

The module and its signatures (``serving_default``, ``adapt``), in-graph input checks and loading
rules are documented where it lives, ``metarl_tf/adaptable.py``. Export, load and call::

    path = export_learner(learner, "exports", "sinusoid")        # exports/sinusoid/1
    m = tf.saved_model.load(path)                                 # in any process with TF
    y = m.signatures["adapt"](support_x=xs, support_y=ys, query_x=xq,
                              num_steps=tf.constant(5))["y"]
"""
from __future__ import annotations

import dataclasses

from export.layout import write_versioned
from export.step_bounds import StepBoundConfig, validate_regressor_steps
# The module itself lives in the library, so that metarl_tf.keras.MetaModel.export builds the same
# one without importing this package; see metarl_tf/adaptable.py.
from metarl_tf.adaptable import SIGNATURE_KEYS, AdaptableRegressor

__all__ = ["SIGNATURE_KEYS", "AdaptableRegressor", "export_learner"]


def export_learner(learner, base: str, name: str, version: int | None = None,
                   max_num_steps: int = 1000, extra_metadata: dict | None = None,
                   validate_steps: bool = True, jit_compile: bool = False,
                   step_bound_config: StepBoundConfig | None = None) -> str:
    """Exports a supervised meta-learner (MAML, FOMAML, Meta-SGD, Reptile) as an AdaptableRegressor.

    ``learner`` is a library learner or a ``metarl_tf.keras.MetaModel`` (anything with ``fmodel``
    and ``update_rule()``; a MetaModel adds its ``export_metadata()``, e.g. ``trained_with``).

    With ``validate_steps`` and a learner that has its task family (``learner.tasks``), the
    ``adapt`` signature's bound is not ``max_num_steps`` as given but the largest count up to it
    that stays finite and not worse than fewer steps on validation tasks
    (``export.step_bounds``); the metadata's ``step_bound`` records the evidence. Without a task
    family the given bound is kept and recorded as not validated. ``step_bound_config``'s
    ``num_support`` defaults to the learner's ``config.num_support``. ``jit_compile``: see
    ``AdaptableRegressor``.

    Returns the version directory written (``<base>/<name>/<version>``).
    """
    params, rule = learner.fmodel.params(), learner.update_rule()
    tasks = getattr(learner, "tasks", None)
    note, bound_meta = "", {"requested": max_num_steps, "validated": False}
    if validate_steps and tasks is not None and hasattr(tasks, "sample_task_params"):
        cfg = step_bound_config or StepBoundConfig()
        support = getattr(getattr(learner, "config", None), "num_support", None)
        if support is not None and cfg == StepBoundConfig():
            cfg = dataclasses.replace(cfg, num_support=int(support))
        bound = validate_regressor_steps(learner.fmodel, params, rule, tasks, max_num_steps,
                                         seed=int(getattr(learner, "seed", 0)), config=cfg)
        max_num_steps, note, bound_meta = bound.max_num_steps, bound.note(), bound.metadata()
    module = AdaptableRegressor(learner.fmodel, params, rule, max_num_steps=max_num_steps,
                                max_num_steps_note=note, jit_compile=jit_compile)
    own = learner.export_metadata() if hasattr(learner, "export_metadata") else {}
    metadata = {**own, "step_bound": bound_meta, **(extra_metadata or {})}
    return write_versioned(base, name, lambda d: module.save(d, metadata), version=version)
