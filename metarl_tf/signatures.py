"""Input signatures of the exported models, one function per model kind.

The SavedModel exporters (``metarl_tf/adaptable.py``, ``export/policy.py``, ``export/qnetwork.py``)
and the TFLite modules (``export/tflite.py``) build their ``tf.function`` input signatures from
these, so the names, dtypes and shapes a client sends are defined in one place. Each function returns
``{signature_name: [tf.TensorSpec, ...]}`` in argument order; a leading ``None`` is the batch (or
episode / transition) dimension a server may vary.
"""

from __future__ import annotations

import tensorflow as tf


def _f32(shape, name):
    return tf.TensorSpec(shape, tf.float32, name=name)


def _num_steps():
    return tf.TensorSpec([], tf.int32, name="num_steps")


def regressor_specs(d_in: int, d_out: int) -> dict[str, list[tf.TensorSpec]]:
    """``AdaptableRegressor``: ``serving_default(x)`` and ``adapt(support_x, support_y, query_x,
    num_steps)``."""
    return {
        "serving_default": [_f32([None, d_in], "x")],
        "adapt": [_f32([None, d_in], "support_x"), _f32([None, d_out], "support_y"),
                  _f32([None, d_in], "query_x"), _num_steps()],
    }


def policy_specs(obs_dim: int, act_dim: int, num_params: int, gaussian: bool,
                 signal: str = "rewards") -> dict[str, list[tf.TensorSpec]]:
    """``AdaptablePolicy``: ``serving_default(observation)``, ``action_with_params(observation,
    params)`` and ``adapt(observations, actions, <signal>, mask, num_steps)``.

    Args:
        obs_dim: observation width.
        act_dim: action width of a Gaussian policy (ignored for a categorical one, whose actions are
            int32 indices ``[episodes, steps]``).
        num_params: length of the flat parameter vector ``params``.
        gaussian: Gaussian (float actions) or categorical (int32 actions) policy.
        signal: name of the per-step learning signal: ``"rewards"`` in the SavedModel (the export
            fits the linear baseline itself), ``"advantages"`` in TFLite (the baseline's float64
            eigendecomposition has no TFLite builtin, so the client supplies advantages).
    """
    observation = _f32([None, obs_dim], "observation")
    actions = (_f32([None, None, act_dim], "actions") if gaussian
               else tf.TensorSpec([None, None], tf.int32, name="actions"))
    return {
        "serving_default": [observation],
        "action_with_params": [observation, _f32([num_params], "params")],
        "adapt": [_f32([None, None, obs_dim], "observations"), actions,
                  _f32([None, None], signal), _f32([None, None], "mask"), _num_steps()],
    }


def qnetwork_specs(obs_dim: int, z_dim: int) -> dict[str, list[tf.TensorSpec]]:
    """``AdaptableQNetwork``: ``serving_default(observation)``, ``action_with_z(observation, z)`` and
    ``adapt(observations, actions, rewards, next_observations, dones, num_steps)``."""
    observation = _f32([None, obs_dim], "observation")
    return {
        "serving_default": [observation],
        "action_with_z": [observation, _f32([z_dim], "z")],
        "adapt": [_f32([None, obs_dim], "observations"),
                  tf.TensorSpec([None], tf.int32, name="actions"),
                  _f32([None], "rewards"), _f32([None, obs_dim], "next_observations"),
                  _f32([None], "dones"), _num_steps()],
    }
