"""AdaptableContextPolicy: a PEARL agent whose adaptation is one forward pass of its encoder.

Signatures (TF Serving's predict method; leading dimensions -1):

* ``serving_default``: ``observation`` float32 ``[-1, obs_dim]`` -> ``action`` float32
  ``[-1, act_dim]``: the actor's mean action (tanh of the Gaussian mean, in the environment's
  action bounds) with z = the prior mean (0): the policy before any context.
* ``adapt``: one task's context, ``observations`` ``[-1, obs_dim]``, ``actions`` ``[-1, act_dim]``
  (environment units; clipped to the action bounds, as the environments clip them),
  ``rewards`` ``[-1]``, ``next_observations`` ``[-1, obs_dim]`` (read only by encoders trained
  with next observations in the context, but always checked), ``mask`` ``[-1]`` (1 for a real
  transition, 0 for padding) -> ``z_mean`` and ``z_std`` ``[latent_dim]``: the posterior
  ``q(z | c)``, a product of the encoder's per-transition Gaussians (padding changes nothing; an
  all-zero mask gives the prior N(0, I); the deterministic encoder gives ``z_std`` 0).
* ``action_with_z``: ``observation`` ``[-1, obs_dim]``, ``z`` ``[latent_dim]`` -> ``action`` (the
  mean action) and ``sampled_action`` (a draw of the tanh-Gaussian), ``[-1, act_dim]`` each.

Adaptation is inference: a stateless server answers ``adapt`` and the client keeps the few floats
of z::

    m = tf.saved_model.load("models/pearl-halfcheetah-vel/1")            # TensorFlow only
    post = m.signatures["adapt"](observations=o, actions=a, rewards=r, next_observations=o2,
                                 mask=tf.ones_like(r))
    a = m.signatures["action_with_z"](observation=obs, z=post["z_mean"])["action"]

Bad input fails inside the graph with ``InvalidArgumentError`` naming the input: wrong widths,
context arrays of different lengths, NaN/Inf, a mask other than 0/1; an output that would not be
finite (e.g. rewards so large that the encoder overflows) raises instead of being returned.

``tflite_module`` gives the forward-only ``adapt`` and ``action_with_z`` for TFLite (builtins
only): the same arithmetic without the graph checks, which ``export.tflite.TFLiteModel`` replaces
by checking names, dtypes and shapes before the call.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from export._common import save_with_metadata
from export.layout import write_versioned
from metarl_tf import __version__
from metarl_tf.algorithms.pearl.networks import (actor_outputs, context_rows, encode,
                                                 from_env_action, to_env_action)

KIND = "AdaptableContextPolicy"


def context_policy_specs(obs_dim: int, act_dim: int, latent_dim: int) -> dict:
    """Input signatures, in argument order."""
    f32 = lambda shape, name: tf.TensorSpec(shape, tf.float32, name=name)  # noqa: E731
    observation = f32([None, obs_dim], "observation")
    return {
        "serving_default": [observation],
        "adapt": [f32([None, obs_dim], "observations"), f32([None, act_dim], "actions"),
                  f32([None], "rewards"), f32([None, obs_dim], "next_observations"),
                  f32([None], "mask")],
        "action_with_z": [observation, f32([latent_dim], "z")],
    }


class _Forward(tf.Module):
    """The weights and the forward arithmetic shared by the SavedModel and the TFLite module."""

    def __init__(self, encoder_params, actor_params, settings: dict, name: str):
        super().__init__(name=name)
        self.encoder_params = [tf.Variable(np.asarray(p, np.float32), trainable=False,
                                           name=f"encoder_{i}")
                               for i, p in enumerate(encoder_params)]
        self.actor_params = [tf.Variable(np.asarray(p, np.float32), trainable=False,
                                         name=f"actor_{i}") for i, p in enumerate(actor_params)]
        self.settings = dict(settings)
        s = self.settings
        self.obs_dim, self.act_dim = int(s["observation_dim"]), int(s["action_dim"])
        self.latent_dim = int(s["latent_dim"])
        self.low = tf.constant(np.asarray(s["action_low"], np.float32))
        self.high = tf.constant(np.asarray(s["action_high"], np.float32))

    def _posterior(self, observations, actions, rewards, next_observations, mask):
        s = self.settings
        actions = from_env_action(tf.clip_by_value(actions, self.low, self.high), self.low,
                                  self.high)
        rows = context_rows(observations, actions, rewards,
                            next_observations if s["use_next_obs_in_context"] else None)
        mean, var = encode([tf.convert_to_tensor(p) for p in self.encoder_params], rows[None],
                           mask[None], self.latent_dim, s["information_bottleneck"],
                           s["activation"])
        return mean[0], tf.sqrt(var[0])

    def _actions(self, observation, z, noise=None):
        params = [tf.convert_to_tensor(p) for p in self.actor_params]
        mean, log_std = actor_outputs(params, observation, z[None], self.settings["activation"])
        out = {"action": to_env_action(tf.tanh(mean), self.low, self.high)}
        if noise is not None:
            out["sampled_action"] = to_env_action(tf.tanh(mean + tf.exp(log_std) * noise),
                                                  self.low, self.high)
        return out


class AdaptableContextPolicy(_Forward):
    """A PEARL agent (context encoder + actor) ready for ``tf.saved_model.save``.

    Args:
      encoder_params, actor_params: the learner's weights (``PEARLLearner.encoder`` / ``.actor``).
      settings: ``settings_of(learner)``: sizes, action bounds, activation, encoder options.
    """

    def __init__(self, encoder_params, actor_params, settings: dict,
                 name: str = "adaptable_context_policy"):
        super().__init__(encoder_params, actor_params, settings, name)
        obs_dim, act_dim, latent = self.obs_dim, self.act_dim, self.latent_dim
        specs = context_policy_specs(obs_dim, act_dim, latent)

        def finite(x, name, shape):
            x = tf.ensure_shape(x, shape, name=f"check_{name}_shape")
            return tf.debugging.check_numerics(x, f"{name} must be finite (no NaN or Inf)")

        def checked_out(out):
            return {k: tf.debugging.check_numerics(v, f"the {k} output is not finite")
                    for k, v in out.items()}

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(observation):
            obs = finite(observation, "observation", [None, obs_dim])
            return checked_out(self._actions(obs, tf.zeros([latent])))

        @tf.function(input_signature=specs["action_with_z"])
        def action_with_z(observation, z):
            obs = finite(observation, "observation", [None, obs_dim])
            z = finite(z, "z", [latent])
            noise = tf.random.normal([tf.shape(obs)[0], act_dim])
            return checked_out(self._actions(obs, z, noise))

        @tf.function(input_signature=specs["adapt"])
        def adapt(observations, actions, rewards, next_observations, mask):
            observations = finite(observations, "observations", [None, obs_dim])
            actions = finite(actions, "actions", [None, act_dim])
            rewards = finite(rewards, "rewards", [None])
            next_observations = finite(next_observations, "next_observations", [None, obs_dim])
            mask = finite(mask, "mask", [None])
            n = tf.shape(mask)[0]
            checks = [
                tf.debugging.assert_equal(tf.shape(observations)[0], n, message=(
                    "observations must have as many rows as mask (one per transition)")),
                tf.debugging.assert_equal(tf.shape(actions)[0], n, message=(
                    "actions must have as many rows as mask (one per transition)")),
                tf.debugging.assert_equal(tf.shape(rewards)[0], n, message=(
                    "rewards must have as many entries as mask (one per transition)")),
                tf.debugging.assert_equal(tf.shape(next_observations)[0], n, message=(
                    "next_observations must have as many rows as mask (one per transition)")),
                tf.debugging.assert_equal(tf.reduce_all((mask == 0.0) | (mask == 1.0)), True,
                                          message="mask must hold only 0 and 1"),
            ]
            with tf.control_dependencies(checks):
                mean, std = self._posterior(tf.identity(observations), actions, rewards,
                                            next_observations, mask)
            return checked_out({"z_mean": mean, "z_std": std})

        self.serving_default = serving_default
        self.action_with_z = action_with_z
        self.adapt = adapt

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "adapt": self.adapt,
                "action_with_z": self.action_with_z}

    def metadata(self) -> dict:
        s = self.settings
        return {"kind": KIND, "metarl_tf_version": __version__, **s,
                "action_low": [float(x) for x in s["action_low"]],
                "action_high": [float(x) for x in s["action_high"]],
                "signatures": sorted(self.signatures())}

    def save(self, path: str, extra_metadata: dict | None = None) -> None:
        """Writes the SavedModel (tag ``serve``) plus ``assets.extra/metarl_tf.json`` to ``path``."""
        save_with_metadata(self, path, {**self.metadata(), **(extra_metadata or {})})


def settings_of(learner) -> dict:
    """What the export needs to know about a ``PEARLLearner``'s networks."""
    n = learner.networks
    return {"observation_dim": n.obs_dim, "action_dim": n.act_dim, "latent_dim": n.latent_dim,
            "activation": n.activation, "information_bottleneck": bool(n.information_bottleneck),
            "use_next_obs_in_context": bool(n.use_next_obs),
            "action_low": [float(x) for x in n.action_low],
            "action_high": [float(x) for x in n.action_high],
            "hidden": list(n.hidden), "encoder_hidden": list(n.encoder_hidden)}


def export_context_policy_learner(learner, base: str, name: str, version: int | None = None,
                                  max_num_steps: int = 0, extra_metadata: dict | None = None) -> str:
    """Exports a ``PEARLLearner`` as an AdaptableContextPolicy under ``<base>/<name>/<version>``
    (TF Serving's layout, written atomically). ``max_num_steps`` is accepted for the common
    exporter interface and unused: ``adapt`` takes no step count."""
    del max_num_steps
    module = AdaptableContextPolicy([tf.convert_to_tensor(v) for v in learner.encoder],
                                    [tf.convert_to_tensor(v) for v in learner.actor],
                                    settings_of(learner))
    return write_versioned(base, name, lambda d: module.save(d, extra_metadata), version=version)


class _TFLiteContextPolicy(_Forward):
    """``adapt`` and ``action_with_z`` without graph checks, for ``export.tflite.convert``.

    ``action_with_z`` takes the standard-normal ``noise`` ``[-1, act_dim]`` as an input (a
    stateful random op does not convert to a TFLite builtin): ``sampled_action`` is
    ``tanh(mean + std * noise)`` in the action bounds.
    """

    kind = KIND
    max_num_steps = None

    def __init__(self, encoder_params, actor_params, settings: dict):
        super().__init__(encoder_params, actor_params, settings, "tflite_context_policy")
        specs = context_policy_specs(self.obs_dim, self.act_dim, self.latent_dim)
        noise_spec = tf.TensorSpec([None, self.act_dim], tf.float32, name="noise")

        @tf.function(input_signature=specs["adapt"])
        def adapt(observations, actions, rewards, next_observations, mask):
            mean, std = self._posterior(observations, actions, rewards, next_observations, mask)
            return {"z_mean": mean, "z_std": std}

        @tf.function(input_signature=specs["action_with_z"] + [noise_spec])
        def action_with_z(observation, z, noise):
            return self._actions(observation, z, noise)

        self.adapt, self.action_with_z = adapt, action_with_z

    def signatures(self) -> dict:
        return {"adapt": self.adapt, "action_with_z": self.action_with_z}

    def metadata(self) -> dict:
        return {"kind": self.kind, **self.settings}


def tflite_module(path: str) -> _TFLiteContextPolicy:
    """The TFLite module of an exported AdaptableContextPolicy, checked against the SavedModel's
    ``adapt`` and mean ``action`` on random inputs (max difference <= 1e-4 relative)."""
    from export.inspect import read_metadata

    meta = read_metadata(path) or {}
    if meta.get("kind") != KIND:
        raise ValueError(f"{path} is not an {KIND} export (kind {meta.get('kind')!r})")
    m = tf.saved_model.load(path)
    module = _TFLiteContextPolicy([p.numpy() for p in m.encoder_params],
                                  [p.numpy() for p in m.actor_params], meta)
    rng = np.random.default_rng(0)
    n, d, a = 7, module.obs_dim, module.act_dim
    low, high = np.asarray(meta["action_low"], np.float32), np.asarray(meta["action_high"],
                                                                       np.float32)
    ctx = {"observations": rng.normal(size=(n, d)).astype(np.float32),
           "actions": rng.uniform(low, high, size=(n, a)).astype(np.float32),
           "rewards": rng.normal(size=n).astype(np.float32),
           "next_observations": rng.normal(size=(n, d)).astype(np.float32),
           "mask": np.array([1, 1, 1, 1, 1, 0, 0], np.float32)}
    want = m.signatures["adapt"](**{k: tf.constant(v) for k, v in ctx.items()})
    got = module.adapt(**ctx)
    obs = ctx["observations"]
    pairs = [(got["z_mean"], want["z_mean"]), (got["z_std"], want["z_std"]),
             (module.action_with_z(obs, want["z_mean"], np.zeros((n, a), np.float32))["action"],
              m.signatures["action_with_z"](observation=tf.constant(obs),
                                            z=want["z_mean"])["action"])]
    for x, y in pairs:
        diff = float(np.abs(np.asarray(x) - np.asarray(y)).max())
        if not diff <= 1e-4 * (1.0 + float(np.abs(np.asarray(y)).max())):
            raise ValueError(f"the TFLite module does not reproduce the SavedModel ({KIND}): max "
                             f"difference {diff:.3g}")
    return module
