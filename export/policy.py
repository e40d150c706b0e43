"""Adaptable policies: a meta-learned policy that adapts itself from a few episodes of a new task.

``AdaptablePolicy`` signatures (TF Serving's predict method):

* ``serving_default``: ``observation`` float32 ``[-1, obs_dim]`` -> Gaussian policies: ``action``
  (the mean) and ``log_std``, ``[-1, act_dim]`` each; categorical policies: ``action`` int32
  ``[-1]`` (greedy) and ``logits`` ``[-1, num_actions]``. The meta-learned (pre-adaptation) policy.
* ``adapt``: ``observations`` ``[-1, -1, obs_dim]``, ``actions`` ``[-1, -1, act_dim]`` float32
  (categorical: ``[-1, -1]`` int32), ``rewards`` ``[-1, -1]``, ``mask`` ``[-1, -1]`` (episodes x
  steps, 1 on steps that happened), ``num_steps`` int32 -> ``params`` float32 ``[num_params]``: the
  adapted weights as one flat vector. The episodes must come from the meta-learned policy
  (``serving_default``), as in training; each step is ``metarl_tf.adaptation.adapt`` on
  ``pg_losses.inner_pg_loss`` (linear feature baseline, GAE, the learner's estimator), with the
  learned rates of a Meta-SGD policy.
* ``action_with_params``: ``observation`` ``[-1, obs_dim]``, ``params`` ``[num_params]`` -> the same
  outputs as ``serving_default``, for the policy with those weights.

A stateless server (TF Serving) can therefore adapt once and let the client hold the adapted weights::

    m = tf.saved_model.load("exports/pointnav/1")               # TensorFlow only
    params = m.signatures["adapt"](observations=obs, actions=act, rewards=rew, mask=mask,
                                   num_steps=tf.constant(1))["params"]
    a = m.signatures["action_with_params"](observation=o, params=params)["action"]

Bad input (shapes, NaN/Inf, an all-zero mask, ``num_steps`` outside ``[0, max_num_steps]``) fails
inside the graph with ``InvalidArgumentError`` naming the input.
"""
from __future__ import annotations


import tensorflow as tf

from export._common import own_rule, rule_metadata, save_with_metadata
from export.layout import write_versioned
from metarl_tf import __version__, adaptation, update_rules
from metarl_tf.algorithms import pg_losses
from metarl_tf.algorithms.trpo import flatten, unflatten
from metarl_tf.networks.policies import split_gaussian
from metarl_tf.rollouts.episodes import Episodes
from metarl_tf.signatures import policy_specs


class AdaptablePolicy(tf.Module):
    """A policy plus its policy-gradient inner loop, ready for ``tf.saved_model.save``.

    Args:
      policy: the Keras policy (``gaussian_mlp_policy`` or ``categorical_mlp_policy``); only traced.
      params: meta-learned values of ``policy.trainable_variables``.
      rule: ``adaptation.SGD``, ``adaptation.PerParameterSGD`` with the meta-learned rate(s), or
        the meta-policy-gradient ``update_rules.MetaLSTM`` (its weights are copied into the module).
      discount, gae_lambda, normalize_advantages, estimator: the inner objective's settings (the
        learner's config).
      max_num_steps: the largest ``num_steps`` the ``adapt`` signature accepts.
    """

    def __init__(self, policy, params, rule: adaptation.UpdateRule, discount: float = 0.99,
                 gae_lambda: float = 1.0, normalize_advantages: bool = True,
                 estimator: str = "lvc", max_num_steps: int = 100, name: str = "adaptable_policy"):
        super().__init__(name=name)
        if isinstance(max_num_steps, bool) or not isinstance(max_num_steps, int) or max_num_steps < 0:
            raise ValueError(f"`max_num_steps` must be an integer >= 0, got {max_num_steps!r}")
        apply_fn, dist = pg_losses.resolve_policy(policy)
        obs_dim = int(policy.inputs[0].shape[-1])
        out_dim = int(policy.outputs[0].shape[-1])
        self.distribution, self.obs_dim, self.max_num_steps = dist, obs_dim, max_num_steps
        self.settings = {"discount": float(discount), "gae_lambda": float(gae_lambda),
                         "normalize_advantages": bool(normalize_advantages), "estimator": estimator}
        self.params = [tf.Variable(p, trainable=False, name=f"param_{i}")
                       for i, p in enumerate(params)]
        self.num_params = sum(int(tf.size(p)) for p in self.params)
        rule = own_rule(self, rule)
        gaussian = dist == "gaussian"
        act_dim = out_dim // 2 if gaussian else None
        max_steps = tf.constant(max_num_steps, tf.int32)

        def checked(x, name, shape):
            x = tf.ensure_shape(x, shape, name=f"check_{name}_shape")
            if x.dtype.is_floating:
                x = tf.debugging.check_numerics(x, f"{name} must be finite")
            return x

        def outputs(params, observation):
            """Signature outputs for ``[num_obs, obs_dim]`` observations and unbatched params."""
            out = apply_fn([p[None] for p in params], observation[None])[0]
            # Finite but huge inputs can overflow: refuse to answer rather than act on inf/NaN.
            out = tf.debugging.check_numerics(out, "the policy output is not finite: inputs "
                                                   "(observation or params) too large")
            if gaussian:
                mean, log_std = split_gaussian(out)
                return {"action": mean, "log_std": log_std}
            return {"action": tf.argmax(out, axis=-1, output_type=tf.int32), "logits": out}

        specs = policy_specs(obs_dim, act_dim, self.num_params, gaussian)
        action_spec = specs["adapt"][1]

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(observation):
            observation = checked(observation, "observation", [None, obs_dim])
            return outputs([tf.convert_to_tensor(p) for p in self.params], observation)

        @tf.function(input_signature=specs["action_with_params"])
        def action_with_params(observation, params):
            observation = checked(observation, "observation", [None, obs_dim])
            params = checked(params, "params", [self.num_params])
            return outputs(unflatten(params, self.params), observation)

        @tf.function(input_signature=specs["adapt"])
        def adapt(observations, actions, rewards, mask, num_steps):
            observations = checked(observations, "observations", [None, None, obs_dim])
            actions = checked(actions, "actions", action_spec.shape)
            rewards = checked(rewards, "rewards", [None, None])
            mask = checked(mask, "mask", [None, None])
            shape = tf.shape(rewards)
            checks = [
                tf.debugging.assert_equal(tf.shape(observations)[:2], shape, message=(
                    "observations must be [episodes, steps, obs_dim] with the same episodes and "
                    "steps as rewards")),
                tf.debugging.assert_equal(tf.shape(actions)[:2], shape, message=(
                    "actions must have the same episodes and steps as rewards")),
                tf.debugging.assert_equal(tf.shape(mask), shape, message=(
                    "mask must have the same shape as rewards, [episodes, steps]")),
                tf.debugging.assert_equal(tf.reduce_all((mask == 0.0) | (mask == 1.0)), True,
                                          message="mask must hold only 0 and 1"),
                tf.debugging.assert_positive(tf.reduce_sum(mask), message=(
                    "mask must contain at least one valid step (it is all zero)")),
                tf.debugging.assert_non_negative(num_steps, message="num_steps must be >= 0"),
                tf.debugging.assert_less_equal(num_steps, max_steps, message=(
                    f"num_steps must be <= max_num_steps ({max_num_steps})")),
            ]
            with tf.control_dependencies(checks):
                episodes = Episodes(observations[None], actions[None], rewards[None], mask[None])
            theta = [tf.convert_to_tensor(p)[None] for p in self.params]
            adapted = adapt_policy(apply_fn, dist, theta, episodes, rule, num_steps, self.settings)
            # Finite but huge rewards/observations can overflow the adapted parameters: refuse to
            # answer rather than hand out inf/NaN parameters.
            return {"params": tf.debugging.check_numerics(
                flatten([p[0] for p in adapted]), "params is not finite: inputs too large, or too "
                "many num_steps for the inner rate")}

        self.serving_default = serving_default
        self.action_with_params = action_with_params
        self.adapt = adapt

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "adapt": self.adapt,
                "action_with_params": self.action_with_params}

    def metadata(self) -> dict:
        return {"kind": "AdaptablePolicy", "metarl_tf_version": __version__,
                "distribution": self.distribution, "observation_dim": self.obs_dim,
                "num_params": self.num_params, "max_num_steps": self.max_num_steps,
                # not validated on tasks (only the supervised export is, export.step_bounds); the
                # in-graph output checks still refuse any non-finite answer
                "step_bound": {"requested": self.max_num_steps, "validated": False},
                "signatures": sorted(self.signatures()), **self.settings, **rule_metadata(self)}

    def save(self, path: str, extra_metadata: dict | None = None) -> None:
        """Writes the SavedModel (tag ``serve``) plus ``assets.extra/metarl_tf.json`` to ``path``."""
        save_with_metadata(self, path, {**self.metadata(), **(extra_metadata or {})})


def adapt_policy(apply_fn, distribution: str, params, episodes: Episodes,
                 rule: adaptation.UpdateRule, num_steps, settings: dict) -> list:
    """``num_steps`` inner policy-gradient steps on one fixed set of episodes (task-batched).

    The episodes were sampled by ``params`` (the behaviour policy): advantages and behaviour
    log-probabilities are computed once, and every step maximises the importance-weighted inner
    objective, so step 1 is exactly the training-time inner update.
    """
    advantages = pg_losses.compute_advantages(episodes, settings["discount"], settings["gae_lambda"],
                                              None, settings["normalize_advantages"])
    behaviour = tf.stop_gradient(pg_losses.log_prob(apply_fn(params, episodes.observations),
                                                     episodes.actions, distribution))
    loss = lambda p: pg_losses.inner_pg_loss(  # noqa: E731
        apply_fn, p, episodes, estimator=settings["estimator"], distribution=distribution,
        advantages=advantages, behaviour_log_probs=behaviour)
    # The meta-policy-gradient rule reads the episodes' statistics, as in training.
    rule = update_rules.bind_episodes(rule, episodes.rewards, episodes.mask, advantages)
    return adaptation.adapt(loss, params, rule, num_steps, first_order=True).params


def export_policy_learner(learner, base: str, name: str, version: int | None = None,
                          max_num_steps: int = 100, extra_metadata: dict | None = None) -> str:
    """Exports a MAML-RL / Meta-SGD-RL / Reptile-RL learner's policy as an AdaptablePolicy."""
    cfg = learner.config
    module = AdaptablePolicy(
        learner.policy, [tf.convert_to_tensor(v) for v in learner.policy.trainable_variables],
        learner.update_rule(), discount=cfg.discount, gae_lambda=cfg.gae_lambda,
        normalize_advantages=getattr(cfg, "normalize_advantages", True),
        estimator=getattr(cfg, "estimator", "lvc"), max_num_steps=max_num_steps)
    return write_versioned(base, name, lambda d: module.save(d, extra_metadata), version=version)
