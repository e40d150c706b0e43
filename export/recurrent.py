"""Adaptive recurrent policies (RL²): the adaptation lives in a state that the client carries.

An RL² policy (Duan et al. 2016, arXiv:1611.02779) adapts to a task through its hidden state, not
through gradient steps. ``AdaptiveRecurrentPolicy`` makes that state explicit, so a stateless
server (TF Serving's predict method) can run it while the client holds the state between calls:

* ``get_initial_state``: ``batch_size`` int32 scalar -> ``state`` float32 ``[batch_size,
  state_size]`` (zeros: the start of a trial, i.e. of a new task);
* ``action``: ``observation`` float32 ``[-1, obs_dim]``, ``prev_action`` (categorical: int32
  ``[-1]``, ``-1`` on the first step of a trial; Gaussian: float32 ``[-1, act_dim]``, zeros on the
  first step), ``prev_reward`` float32 ``[-1]``, ``done`` float32 ``[-1]`` (1 when the previous
  step ended an episode; 0 on the first step), ``state`` float32 ``[-1, state_size]`` ->
  categorical: ``action`` int32 ``[-1]`` (the most likely action), ``logits`` ``[-1, A]``,
  ``sampled_action`` int32 ``[-1]`` (a draw from ``logits``); Gaussian: ``action`` (the mean),
  ``mean``, ``log_std``, ``sampled_action`` ``[-1, act_dim]``; both: ``value`` ``[-1]`` and the
  next ``state``.

Keep the state across the episodes of a trial, reset it (``get_initial_state``) for a new task::

    m = tf.saved_model.load("exports/rl2-bandits/1")            # TensorFlow only
    state = m.signatures["get_initial_state"](batch_size=tf.constant(1))["state"]
    prev_a, prev_r, done = tf.constant([-1]), tf.constant([0.0]), tf.constant([0.0])
    for t in range(num_pulls):
        out = m.signatures["action"](observation=tf.zeros([1, 1]), prev_action=prev_a,
                                     prev_reward=prev_r, done=done, state=state)
        a = out["sampled_action"]                      # or out["action"], the greedy choice
        r = pull(a)                                    # the environment
        prev_a, prev_r, done, state = a, r, tf.constant([1.0]), out["state"]

Bad input fails inside the graph with ``InvalidArgumentError`` naming the input: a ``state`` of the
wrong width or batch size, ``prev_action`` outside ``[-1, A)``, batch sizes that differ, non-finite
values. The SavedModel holds only TensorFlow ops and variables (no Keras, no metarl_tf).
"""
from __future__ import annotations

import tensorflow as tf

from export._common import save_with_metadata
from export.layout import write_versioned
from metarl_tf import __version__
from metarl_tf.networks.policies import split_gaussian
from metarl_tf.networks.recurrent import RecurrentApply, rl2_input

SIGNATURE_KEYS = ("serving_default", "get_initial_state", "action")


class AdaptiveRecurrentPolicy(tf.Module):
    """A ``recurrent_policy`` with explicit state, ready for ``tf.saved_model.save``.

    Args:
      policy: the Keras ``recurrent_policy`` (only traced; the module keeps its own copies).
      params: values of ``policy.trainable_variables`` (default: their current values).
      obs_dim: the observation width (``policy.input_dim`` minus action, reward and done).
      metadata: extra entries for ``assets.extra/metarl_tf.json`` (trial length, task family).
    """

    def __init__(self, policy, obs_dim: int, params=None, metadata: dict | None = None,
                 name: str = "adaptive_recurrent_policy"):
        super().__init__(name=name)
        values = policy.trainable_variables if params is None else params
        self.params = [tf.Variable(tf.convert_to_tensor(p), trainable=False, name=f"param_{i}")
                       for i, p in enumerate(values)]
        self.non_trainable = [tf.Variable(tf.convert_to_tensor(v), trainable=False,
                                          name=f"state_var_{i}")
                              for i, v in enumerate(policy.non_trainable_variables)]
        apply = RecurrentApply(policy, non_trainable=self.non_trainable)
        state_size, dist = int(policy.state_size), policy.distribution
        num_actions, act_dim = policy.num_actions, policy.act_dim
        self.state_size, self.distribution, self.obs_dim = state_size, dist, int(obs_dim)
        self._info = {"cell": policy.cell_type, "units": int(policy.units),
                      "num_actions": num_actions, "act_dim": act_dim, **(metadata or {})}
        categorical = dist == "categorical"
        prev_spec = (tf.TensorSpec([None], tf.int32, name="prev_action") if categorical
                     else tf.TensorSpec([None, act_dim], tf.float32, name="prev_action"))

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")])
        def get_initial_state(batch_size):
            check = tf.debugging.assert_non_negative(batch_size, message="batch_size must be >= 0")
            with tf.control_dependencies([check]):
                return {"state": tf.zeros(tf.stack([batch_size, state_size]), tf.float32)}

        @tf.function(input_signature=[
            tf.TensorSpec([None, obs_dim], tf.float32, name="observation"), prev_spec,
            tf.TensorSpec([None], tf.float32, name="prev_reward"),
            tf.TensorSpec([None], tf.float32, name="done"),
            tf.TensorSpec([None, None], tf.float32, name="state")])
        def action(observation, prev_action, prev_reward, done, state):
            batch = tf.shape(observation)[0]
            checks = [
                tf.debugging.assert_equal(tf.shape(state)[1], state_size, message=(
                    f"state must be [batch, {state_size}] (from get_initial_state or the previous "
                    "action call)")),
                tf.debugging.assert_equal(tf.shape(state)[0], batch, message=(
                    "state must have the same batch size as observation")),
                tf.debugging.assert_equal(tf.shape(prev_action)[0], batch, message=(
                    "prev_action must have the same batch size as observation")),
                tf.debugging.assert_equal(tf.shape(prev_reward)[0], batch, message=(
                    "prev_reward must have the same batch size as observation")),
                tf.debugging.assert_equal(tf.shape(done)[0], batch, message=(
                    "done must have the same batch size as observation")),
            ]
            if categorical:
                checks += [
                    tf.debugging.assert_greater_equal(prev_action, -1, message=(
                        f"prev_action must be in [-1, {num_actions}) (-1: first step of a trial)")),
                    tf.debugging.assert_less(prev_action, num_actions, message=(
                        f"prev_action must be in [-1, {num_actions}) (-1: first step of a trial)")),
                ]
            with tf.control_dependencies(checks):
                observation = tf.debugging.check_numerics(observation, "observation must be finite")
                prev_reward = tf.debugging.check_numerics(prev_reward, "prev_reward must be finite")
                done = tf.debugging.check_numerics(done, "done must be finite")
                state = tf.debugging.check_numerics(state, "state must be finite")
                if not categorical:
                    prev_action = tf.debugging.check_numerics(prev_action,
                                                              "prev_action must be finite")
            x = rl2_input(observation, prev_action, prev_reward, done, num_actions)
            params = [tf.convert_to_tensor(p) for p in self.params]
            head, value, next_state = apply.step(params, x, tf.ensure_shape(state,
                                                                            [None, state_size]))
            out = {"value": value, "state": next_state}
            if categorical:
                out["action"] = tf.argmax(head, axis=-1, output_type=tf.int32)
                out["logits"] = head
                out["sampled_action"] = tf.random.categorical(head, 1, dtype=tf.int32)[:, 0]
            else:
                mean, log_std = split_gaussian(head)
                out.update(action=mean, mean=mean, log_std=log_std,
                           sampled_action=mean + tf.exp(log_std) * tf.random.normal(tf.shape(mean)))
            # Finite but huge inputs (or weights) can overflow: refuse to answer rather than act on
            # inf/NaN (the state is fed back, so a non-finite one would poison the whole trial).
            return {k: tf.debugging.check_numerics(v, f"{k} is not finite: inputs (observation, "
                                                      "prev_reward or state) too large")
                    if v.dtype.is_floating else v for k, v in out.items()}

        self.get_initial_state = get_initial_state
        self.action = action

    def signatures(self) -> dict:
        # serving_default = action: TF Serving routes requests without a signature_name to it.
        return {"serving_default": self.action, "get_initial_state": self.get_initial_state,
                "action": self.action}

    def metadata(self) -> dict:
        return {"kind": "AdaptiveRecurrentPolicy", "metarl_tf_version": __version__,
                "distribution": self.distribution, "observation_dim": self.obs_dim,
                "state_size": self.state_size, "signatures": list(SIGNATURE_KEYS), **self._info}

    def save(self, path: str, extra_metadata: dict | None = None) -> None:
        """Writes the SavedModel (tag ``serve``) plus ``assets.extra/metarl_tf.json`` to ``path``."""
        save_with_metadata(self, path, {**self.metadata(), **(extra_metadata or {})})


def export_rl2_learner(learner, base: str, name: str, version: int | None = None,
                       max_num_steps: int = 100, extra_metadata: dict | None = None) -> str:
    """Exports an ``RL2Learner``'s policy as an ``AdaptiveRecurrentPolicy`` (``metarl export``).

    ``max_num_steps`` is accepted for the exporters' common call and unused (RL² takes no
    gradient step). Returns the version directory written.
    """
    del max_num_steps
    cfg = learner.config
    info = {"episodes_per_trial": cfg.episodes_per_trial, "horizon": learner.horizon,
            "task_family": type(learner.tasks).__name__}
    module = AdaptiveRecurrentPolicy(learner.policy, learner.obs_dim, metadata=info)
    return write_versioned(base, name, lambda d: module.save(d, extra_metadata), version=version)
