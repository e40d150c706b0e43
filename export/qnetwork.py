"""AdaptableQNetwork: a meta-learned task-conditioned Q-network that infers its task embedding itself.

Signatures (TF Serving's predict method; batch dimensions -1):

* ``serving_default``: ``observation`` float32 ``[-1, obs_dim]`` -> ``action`` int32 ``[-1]``
  (greedy) and ``q_values`` float32 ``[-1, num_actions]``, with the meta-learned initial ``z``.
* ``adapt``: ``observations`` float32 ``[-1, obs_dim]``, ``actions`` int32 ``[-1]``, ``rewards``
  float32 ``[-1]``, ``next_observations`` float32 ``[-1, obs_dim]``, ``dones`` float32 ``[-1]``
  (1 where the next state is terminal), ``num_steps`` int32 ``[]`` -> ``z`` float32 ``[z_dim]``:
  ``num_steps`` gradient steps on z of the learner's inner loss on those transitions (the TD loss,
  or a head's error: ``MetaDQNConfig.inner_loss``), from the initial z
  (``metarl_tf.algorithms.meta_dqn.adapt_embedding``: the library's inner loop, traced).
* ``action_with_z``: ``observation`` ``[-1, obs_dim]``, ``z`` ``[z_dim]`` -> ``action``, ``q_values``.

A stateless server adapts once and the client keeps the 8-odd floats of ``z``::

    m = tf.saved_model.load("exports/cartpole/1")                       # TensorFlow only
    z = m.signatures["adapt"](observations=o, actions=a, rewards=r, next_observations=o2,
                              dones=d, num_steps=tf.constant(5))["z"]
    a = m.signatures["action_with_z"](observation=obs, z=z)["action"]

Bad input fails inside the graph with ``InvalidArgumentError`` naming the input: transition arrays
of different lengths, no transition, actions outside ``[0, num_actions)``, NaN/Inf in
observations, rewards or z, dones other than 0/1, ``num_steps`` outside ``[0, max_num_steps]``,
rewards outside [0, 1] for the reward head (``inner_loss`` "reward").
"""
from __future__ import annotations

import tensorflow as tf

from export._common import own_rule, rule_metadata, save_with_metadata
from export.layout import write_versioned
from metarl_tf import __version__, adaptation
from metarl_tf.algorithms.meta_dqn import adapt_embedding
from metarl_tf.algorithms.meta_dqn.config import INNER_LOSSES, REWARD_HEADS
from metarl_tf.networks.q_network import q_values
from metarl_tf.rollouts.replay import Transitions
from metarl_tf.signatures import qnetwork_specs


class AdaptableQNetwork(tf.Module):
    """A ``TaskConditionedQNetwork`` plus its z-adaptation, ready for ``tf.saved_model.save``.

    Args:
      network: the Keras Q-network (read for sizes and activation only).
      params: meta-learned values of ``network.trainable_variables``.
      z_init: the meta-learned initial embedding ``[z_dim]``.
      rule: ``adaptation.SGD`` or ``adaptation.PerParameterSGD`` (one rate per z dimension).
      discount, huber_delta: the inner TD loss's settings (the learner's config).
      max_num_steps: the largest ``num_steps`` ``adapt`` accepts.
      inner_loss, head_params, normalize_grad: the learner's inner loss
        (``MetaDQNConfig.inner_loss``; ``head_params`` are the model or reward head's weights
        when it is not ``"td"``) and ``normalize_inner_grad``.
    """

    def __init__(self, network, params, z_init, rule: adaptation.UpdateRule, discount: float,
                 huber_delta: float = 1.0, max_num_steps: int = 100,
                 name: str = "adaptable_q_network", inner_loss: str = "td",
                 head_params=None, normalize_grad: bool = False):
        super().__init__(name=name)
        if isinstance(max_num_steps, bool) or not isinstance(max_num_steps, int) or max_num_steps < 0:
            raise ValueError(f"`max_num_steps` must be an integer >= 0, got {max_num_steps!r}")
        self.obs_dim, self.num_actions, self.z_dim = network.obs_dim, network.num_actions, network.z_dim
        self.hidden, self.activation = tuple(network.hidden), network.activation_name
        self.discount, self.huber_delta = float(discount), float(huber_delta)
        self.max_num_steps = max_num_steps
        self.params = [tf.Variable(p, trainable=False, name=f"param_{i}")
                       for i, p in enumerate(params)]
        self.z_init = tf.Variable(z_init, trainable=False, name="z_init")
        if inner_loss not in INNER_LOSSES:
            raise ValueError(f"`inner_loss` must be one of {INNER_LOSSES}, got {inner_loss!r}")
        if inner_loss != "td" and not head_params:
            raise ValueError(f"`inner_loss` {inner_loss!r} needs `head_params` (the head's weights)")
        self.inner_loss = inner_loss
        self.normalize_grad = bool(normalize_grad)
        # variable names of earlier exports (the head was the "reward" head for both kinds)
        self.reward_params = [tf.Variable(p, trainable=False, name=f"reward_param_{i}")
                              for i, p in enumerate(head_params or [])]
        # the head's form in the metadata: "model", the reward head's, or None (TD)
        self.reward_head = {"model": "model", "reward": REWARD_HEADS[0]}.get(inner_loss)
        rule = own_rule(self, rule)
        obs_dim, num_actions, z_dim, act = self.obs_dim, self.num_actions, self.z_dim, self.activation
        max_steps = tf.constant(max_num_steps, tf.int32)

        def finite(x, name, shape):
            x = tf.ensure_shape(x, shape, name=f"check_{name}_shape")
            return tf.debugging.check_numerics(x, f"{name} must be finite (no NaN or Inf)")

        def outputs(observation, z):
            q = q_values([tf.convert_to_tensor(p) for p in self.params], observation[None],
                         z[None], act)[0]
            # Finite but huge inputs can overflow: refuse to answer rather than act on inf/NaN.
            q = tf.debugging.check_numerics(q, "q_values is not finite: inputs (observation or z) "
                                               "too large")
            return {"action": tf.argmax(q, axis=-1, output_type=tf.int32), "q_values": q}

        specs = qnetwork_specs(obs_dim, z_dim)

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(observation):
            return outputs(finite(observation, "observation", [None, obs_dim]),
                           tf.convert_to_tensor(self.z_init))

        @tf.function(input_signature=specs["action_with_z"])
        def action_with_z(observation, z):
            return outputs(finite(observation, "observation", [None, obs_dim]),
                           finite(z, "z", [z_dim]))

        @tf.function(input_signature=specs["adapt"])
        def adapt(observations, actions, rewards, next_observations, dones, num_steps):
            observations = finite(observations, "observations", [None, obs_dim])
            next_observations = finite(next_observations, "next_observations", [None, obs_dim])
            rewards = finite(rewards, "rewards", [None])
            dones = finite(dones, "dones", [None])
            n = tf.shape(rewards)[0]
            checks = [
                tf.debugging.assert_equal(tf.shape(observations)[0], n, message=(
                    "observations must have as many rows as rewards (one per transition)")),
                tf.debugging.assert_equal(tf.shape(actions)[0], n, message=(
                    "actions must have as many entries as rewards (one per transition)")),
                tf.debugging.assert_equal(tf.shape(next_observations)[0], n, message=(
                    "next_observations must have as many rows as rewards (one per transition)")),
                tf.debugging.assert_equal(tf.shape(dones)[0], n, message=(
                    "dones must have as many entries as rewards (one per transition)")),
                tf.debugging.assert_positive(n, message="the transitions are empty (no rewards)"),
                tf.debugging.assert_equal(
                    tf.reduce_all((actions >= 0) & (actions < num_actions)), True,
                    message=f"actions must be integers in [0, {num_actions})"),
                tf.debugging.assert_equal(tf.reduce_all((dones == 0.0) | (dones == 1.0)), True,
                                          message="dones must hold only 0 and 1"),
                tf.debugging.assert_equal(
                    tf.reduce_all((rewards >= 0.0) & (rewards <= 1.0))
                    if self.inner_loss == "reward" else tf.constant(True), True,
                    message="rewards must lie in [0, 1] for the next_logistic reward head"),
                tf.debugging.assert_non_negative(num_steps, message="num_steps must be >= 0"),
                tf.debugging.assert_less_equal(num_steps, max_steps, message=(
                    f"num_steps must be <= max_num_steps ({max_num_steps})")),
            ]
            with tf.control_dependencies(checks):
                batch = Transitions(tf.identity(observations)[None], actions[None], rewards[None],
                                    next_observations[None], dones[None], dones[None])
            params = [tf.convert_to_tensor(p) for p in self.params]
            head = [tf.convert_to_tensor(p) for p in self.reward_params]
            z = adapt_embedding(params, tf.convert_to_tensor(self.z_init), batch, rule, num_steps,
                                self.discount, inner_loss_kind=self.inner_loss, head=head,
                                normalize_grad=self.normalize_grad, activation=act,
                                huber_delta=self.huber_delta, first_order=True).params[0]
            # Finite but huge transitions (or large inner rates) can overflow z: refuse to answer
            # rather than hand out a non-finite embedding.
            return {"z": tf.debugging.check_numerics(z[0], "z is not finite: inputs too large, or "
                                                           "too many num_steps for the inner rate")}

        self.serving_default = serving_default
        self.action_with_z = action_with_z
        self.adapt = adapt

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "adapt": self.adapt,
                "action_with_z": self.action_with_z}

    def metadata(self) -> dict:
        return {"kind": "AdaptableQNetwork", "metarl_tf_version": __version__,
                "observation_dim": self.obs_dim, "num_actions": self.num_actions,
                "z_dim": self.z_dim, "hidden": list(self.hidden), "activation": self.activation,
                "discount": self.discount, "huber_delta": self.huber_delta,
                "inner_loss": self.inner_loss, "reward_loss_weight": 1.0,
                "reward_head": self.reward_head,
                "normalize_inner_grad": self.normalize_grad,
                "max_num_steps": self.max_num_steps, "signatures": sorted(self.signatures()),
                # not validated on tasks (only the supervised export is, export.step_bounds); the
                # in-graph output checks still refuse any non-finite answer
                "step_bound": {"requested": self.max_num_steps, "validated": False},
                **rule_metadata(self)}

    def save(self, path: str, extra_metadata: dict | None = None) -> None:
        """Writes the SavedModel (tag ``serve``) plus ``assets.extra/metarl_tf.json`` to ``path``."""
        save_with_metadata(self, path, {**self.metadata(), **(extra_metadata or {})})


def export_qnetwork_learner(learner, base: str, name: str, version: int | None = None,
                            max_num_steps: int = 100, extra_metadata: dict | None = None) -> str:
    """Exports a ``MetaDQNLearner``'s network and embedding as an AdaptableQNetwork under
    ``<base>/<name>/<version>`` (TF Serving's layout, written atomically)."""
    cfg, meta = learner.config, learner.meta
    module = AdaptableQNetwork(
        learner.network, [tf.convert_to_tensor(v) for v in meta.network],
        tf.convert_to_tensor(meta.z_init), learner.update_rule(), cfg.discount,
        max_num_steps=max_num_steps, inner_loss=cfg.inner_loss,
        head_params=[tf.convert_to_tensor(v) for v in meta.head],
        normalize_grad=cfg.normalize_inner_grad)
    return write_versioned(base, name, lambda d: module.save(d, extra_metadata), version=version)
