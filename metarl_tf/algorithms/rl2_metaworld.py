"""RL² as Meta-World's ``metaworld.evaluation.MetaLearningAgent``: adaptation lives in the state.

Meta-World scores meta-RL with its own loop (``metaworld.evaluation.metalearning_evaluation``)::

    for each evaluation round:
        envs.call("sample_tasks"); agent.init()                 # a new test goal per sub-env
        repeat adaptation_steps times:
            obs = envs.reset()
            run adaptation_episodes episodes per sub-env:
                actions, aux = agent.adapt_action(obs); ...; agent.step(Timestep(...))
            agent.adapt()
        evaluation(agent, envs, evaluation_episodes):           # terminate-on-success on
            obs = envs.reset(); agent.reset(all)
            loop: obs = envs.step(agent.eval_action(obs)); agent.reset(dones)

``RL2MetaWorldAgent`` runs a trained ``RL2Learner``'s recurrent policy through that loop with one
RL² *trial* per sub-environment: ``init`` starts the trial (state zero, no previous action, reward
or done, exactly as ``RL2Learner.collect_trials_gym`` starts one), every step feeds the policy
``x_t = rl2_input(o_t, a_t-1, r_t-1, d_t-1)`` (the learner's own input) and carries the state;
``adapt`` takes NO gradient step and keeps the state (what the policy learned about the goal is
in it); the evaluation episodes continue the same trial. ``reset(env_mask)`` is an episode
boundary, not a new trial: it sets the done flag of those sub-environments, the state is kept.

The previous action fed to the policy is the sampled (unclipped) one, as in training; the action
returned to Meta-World is clipped to its action space ``[-1, 1]`` (Meta-World clips it anyway).

**Rewards while evaluating.** ``eval_action`` receives observations only, so Meta-World's
evaluation phase gives the agent no rewards. Two ways to feed the policy the reward it was trained
with:

* build the vector env with Meta-World's ``recurrent_info_in_obs=True`` (its
  ``RNNBasedMetaRLWrapper`` appends the previous action, reward and done flag to the observation)
  and ``normalize_reward_in_recurrent_info=False`` (else pass ``recurrent_reward_scale=10.0``, its
  divisor). The agent then accepts observations of width ``39 + 4 + 2``, acts on the first 39 and
  reads the previous reward from the appended slot (a step whose episode ended gets the reset
  observation, whose slots are zero: that one reward is unknown and fed as 0);
* a plain vector env: every evaluation-phase reward is unknown and fed as 0.

``unknown_reward_steps`` / ``eval_steps`` count how many evaluation steps went without the reward.
During adaptation ``step`` gives the true reward and done flag whatever the env.

Example::

    envs = gymnasium.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=10,
                              seed=0, max_episode_steps=100, recurrent_info_in_obs=True,
                              normalize_reward_in_recurrent_info=False)
    agent = RL2MetaWorldAgent(learner, num_envs=10)
    success, mean_return, per_task = metalearning_evaluation(
        agent, envs, num_evals=5, adaptation_episodes=2, evaluation_episodes=10)
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from metarl_tf.networks.recurrent import rl2_input


class RL2MetaWorldAgent:
    """A trained ``RL2Learner`` (Gaussian head) as ``metaworld.evaluation.MetaLearningAgent``.

    Args:
      learner: an ``RL2Learner`` whose policy has a Gaussian head (Meta-World's actions are
        continuous) and fits the environments' observations.
      num_envs: sub-environments of the evaluation vector env (its ``meta_batch_size``).
      seed: seeds the action noise (round ``k`` of ``init`` uses ``(seed, k)``).
      deterministic_eval: act with the policy mean in ``eval_action`` (else sample);
        ``adapt_action`` always samples (the policy explores as in training).
      recurrent_reward_scale: the divisor Meta-World's ``RNNBasedMetaRLWrapper`` applied to the
        reward it appends (1.0 with ``normalize_reward_in_recurrent_info=False``, 10.0 with its
        default); only used for observations that carry the recurrent info.
    """

    def __init__(self, learner, num_envs: int, seed: int = 0, deterministic_eval: bool = True,
                 recurrent_reward_scale: float = 1.0):
        for name in ("apply", "policy", "distribution", "obs_dim", "_sample", "_policy_step_fn"):
            if not hasattr(learner, name):
                raise TypeError(f"`learner` must be an RL2Learner (missing `{name}`), got "
                                f"{type(learner).__name__}")
        if learner.distribution != "gaussian":
            raise ValueError(f"`learner` must have a Gaussian policy head for Meta-World's "
                             f"continuous actions, got a {learner.distribution!r} head")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) \
                or num_envs < 1:
            raise ValueError(f"`num_envs` must be an integer >= 1, got {num_envs!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an integer, got {seed!r}")
        scale = recurrent_reward_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"`recurrent_reward_scale` must be a finite number > 0, got "
                             f"{recurrent_reward_scale!r}")
        self.learner, self.num_envs, self.seed = learner, int(num_envs), int(seed)
        self.deterministic_eval = bool(deterministic_eval)
        self.recurrent_reward_scale = float(scale)
        self.obs_dim = int(learner.obs_dim)
        self.act_dim = int(learner.policy.act_dim)
        self.recurrent_obs_dim = self.obs_dim + self.act_dim + 2  # Meta-World's wrapper
        self._greedy_fn = tf.function(self._greedy_step)
        self._round = 0
        self.adapt_calls = 0
        self.state = None   # [num_envs, state_size] numpy, the adaptation
        self._pending = None

    # -- MetaLearningAgent ----------------------------------------------------------------------
    def init(self) -> None:
        """New tasks: a new trial per sub-environment (zero state, no previous step)."""
        e = self.num_envs
        self.state = np.zeros((e, self.learner.apply.state_size), np.float32)
        self.prev_action = np.zeros((e, self.act_dim), np.float32)
        self.prev_reward = np.zeros(e, np.float32)
        self.prev_done = np.zeros(e, np.float32)
        self._pending = None
        self._boundary = np.zeros(e, bool)
        self._round += 1
        self._calls = 0
        self.steps_in_trial = 0
        self.eval_steps = 0
        self.unknown_reward_steps = 0

    def adapt_action(self, observations):
        """Exploration actions ``[num_envs, act_dim]`` (sampled, clipped to ``[-1, 1]``) and aux
        ``{"log_prob", "value"}`` of the sampling policy."""
        self._check_init()
        if self._pending is not None:
            if self._pending["phase"] == "adapt":
                raise RuntimeError("RL2MetaWorldAgent: adapt_action called twice without step(); "
                                   "pass each step's Timestep to step() (metalearning_evaluation "
                                   "does)")
            self._commit_unobserved(observations)
        obs, _ = self._split_obs(observations)
        action, log_prob, value, nxt = self.learner._policy_step_fn(
            self.learner._params(), self._input(obs), tf.constant(self.state), self._step_seed())
        action = action.numpy()
        clipped = np.clip(action, -1.0, 1.0).astype(np.float64)
        self._pending = {"phase": "adapt", "action": action, "clipped": clipped,
                         "state": nxt.numpy()}
        return clipped, {"log_prob": log_prob.numpy(), "value": value.numpy()}

    def step(self, timestep) -> None:
        """Feeds the step's reward and done flag (a ``metaworld.evaluation.Timestep``) to the
        trial."""
        self._check_init()
        if self._pending is None or self._pending["phase"] != "adapt":
            raise RuntimeError("RL2MetaWorldAgent: step() must follow adapt_action() (one "
                               "Timestep per adapt_action)")
        e = self.num_envs
        reward = self._field(timestep.reward, "reward", (e,))
        terminated = self._field(timestep.terminated, "terminated", (e,))
        truncated = self._field(timestep.truncated, "truncated", (e,))
        action = self._field(timestep.action, "action", (e, self.act_dim))
        if not np.allclose(action, self._pending["clipped"], rtol=1e-5, atol=1e-6):
            raise ValueError("`timestep.action` is not the action adapt_action returned for this "
                             "step")
        self._commit(reward, np.logical_or(terminated, truncated))

    def adapt(self) -> None:
        """No gradient step: the adaptation is the recurrent state, which is kept."""
        self._check_init()
        if self._pending is not None and self._pending["phase"] == "adapt":
            raise RuntimeError("RL2MetaWorldAgent: adapt() called between adapt_action() and "
                               "step()")
        self.adapt_calls += 1

    def eval_action(self, observations):
        """Actions of the policy in its current state (its mean unless
        ``deterministic_eval=False``), clipped to ``[-1, 1]``; the trial goes on."""
        self._check_init()
        if self._pending is not None:
            if self._pending["phase"] == "adapt":
                raise RuntimeError("RL2MetaWorldAgent: eval_action() called between "
                                   "adapt_action() and step()")
            self._commit_unobserved(observations)
        obs, _ = self._split_obs(observations)
        x, h, seed = self._input(obs), tf.constant(self.state), self._step_seed()
        if self.deterministic_eval:
            action, nxt = self._greedy_fn(self.learner._params(), x, h)
        else:
            action, _, _, nxt = self.learner._policy_step_fn(self.learner._params(), x, h, seed)
        action = action.numpy()
        clipped = np.clip(action, -1.0, 1.0).astype(np.float64)
        self._pending = {"phase": "eval", "action": action, "clipped": clipped,
                         "state": nxt.numpy()}
        return clipped

    def reset(self, env_mask) -> None:
        """Episode boundaries of the sub-environments in ``env_mask``: the previous step ended an
        episode (done flag 1 at the next step). The state is kept: the trial goes on."""
        self._check_init()
        mask = np.asarray(env_mask)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"`env_mask` must have shape ({self.num_envs},), got {mask.shape}")
        mask = mask.astype(bool)
        if self._pending is None:
            self.prev_done[mask] = 1.0
        else:
            self._boundary |= mask

    # -- helpers --------------------------------------------------------------------------------
    def _greedy_step(self, params, x, state):
        head, _, nxt = self.learner.apply.step(params, x, state)
        return self.learner._sample(head, None, greedy=True), nxt

    def _input(self, obs):
        return rl2_input(tf.constant(obs), tf.constant(self.prev_action),
                         tf.constant(self.prev_reward), tf.constant(self.prev_done), None)

    def _step_seed(self):
        self._calls += 1
        base = tf.constant([self.seed, self._round], tf.int64)
        return tf.random.experimental.stateless_fold_in(base, self._calls, alg="philox")

    def _commit(self, reward, done):
        p = self._pending
        self.state, self.prev_action = p["state"], p["action"]
        self.prev_reward = np.asarray(reward, np.float32)
        self.prev_done = np.logical_or(done, self._boundary).astype(np.float32)
        self._boundary = np.zeros(self.num_envs, bool)
        self._pending = None
        self.steps_in_trial += 1

    def _commit_unobserved(self, observations):
        """Closes an evaluation step: its reward from Meta-World's recurrent info if the new
        observations carry it (0 where unknown), its done flag from ``reset``."""
        _, info = self._split_obs(observations)
        reward = np.zeros(self.num_envs, np.float32)
        known = np.zeros(self.num_envs, bool)
        if info is not None:
            # A sub-env whose episode ended shows its reset observation (all slots zero).
            known = ~self._boundary & np.any(info != 0, axis=1)
            reward[known] = info[known, self.act_dim] * self.recurrent_reward_scale
        self.eval_steps += 1
        self.unknown_reward_steps += int((~known).sum())
        self._commit(reward, np.zeros(self.num_envs, bool))

    def _split_obs(self, observations):
        obs = np.asarray(observations, np.float32)
        if obs.ndim != 2 or obs.shape[0] != self.num_envs \
                or obs.shape[1] not in (self.obs_dim, self.recurrent_obs_dim):
            raise ValueError(f"`observations` must have shape ({self.num_envs}, {self.obs_dim}) "
                             f"or ({self.num_envs}, {self.recurrent_obs_dim}) (Meta-World's "
                             f"recurrent_info_in_obs), got {obs.shape}")
        if not np.isfinite(obs).all():
            raise ValueError("`observations` hold NaN or inf")
        info = obs[:, self.obs_dim:] if obs.shape[1] == self.recurrent_obs_dim else None
        return obs[:, :self.obs_dim], info

    def _field(self, value, name, shape):
        arr = np.asarray(value, np.float32)
        if arr.shape != shape:
            raise ValueError(f"`timestep.{name}` must have shape {shape}, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"`timestep.{name}` holds NaN or inf")
        return arr

    def _check_init(self):
        if self.state is None:
            raise RuntimeError("RL2MetaWorldAgent: call init() before acting (Meta-World's "
                               "metalearning_evaluation does)")
