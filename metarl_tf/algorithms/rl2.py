"""RL²: fast reinforcement learning via slow reinforcement learning, trained with PPO over trials.

Duan et al. 2016 (arXiv:1611.02779). The learning algorithm is the hidden state of a recurrent
policy (``metarl_tf.networks.recurrent``): a *trial* is ``n`` episodes on one sampled task, the
state is kept across its episode boundaries and reset between trials, and the outer ("slow")
learner maximises the total reward of a trial. No gradient step happens at test time.

One PPO iteration (Schulman et al. 2017, arXiv:1707.06347) over ``B`` trials of ``T = n * H``
steps::

    rollout   x_t = (o_t, a_t-1, r_t-1, d_t-1),  (pi_t, v_t, h_t+1) = policy(x_t, h_t),  h_0 = 0
    GAE       over the whole trial: episode ends are NOT terminal (the trial is the RL² episode);
              only the trial end is (v_T = 0):
                  delta_t = r_t + gamma v_t+1 - v_t,   A_t = delta_t + gamma lambda A_t+1
              (``metarl_tf.rollouts.returns.gae`` with a mask of ones), R_t = A_t + v_t
    update    ``num_epochs`` passes over ``num_minibatches`` minibatches of trials (or of chunks,
              see below), Adam on
                  L = -E[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)]
                      + c_v E[(V(x_t) - R_t)^2] / 2 - c_H E[H[pi(. | x_t)]]
              with rho_t = pi(a_t | x_t) / pi_old(a_t | x_t)                          (ppo_loss)
    BPTT      full trial (``bptt_chunk = 0``) from h_0 = 0, or truncated: the trial is cut into
              chunks of ``bptt_chunk`` steps, each re-run from the state the rollout had at its
              start (carried, not differentiated through)

Two sampling paths, one update:

* **in graph** (Bernoulli bandits, tabular MDPs): the pure-TF environments ``BanditTF`` /
  ``TabularMDPTF`` are stepped inside the same ``tf.function`` as the update, so a whole iteration
  -- task sampling, rollout, GAE, all epochs of PPO -- is one compiled graph call, in which each
  PPO minibatch step (loss, BPTT gradient, Adam) is an XLA cluster (``jit_minibatch``;
  ``jit_compile`` makes the whole iteration one XLA function instead, measured far slower on
  CPU);
* **gymnasium**: any task family with ``sample`` and ``make_env`` (PointNav, Meta-World ML1, and
  the bandit / MDP gymnasium environments) through a ``SyncVectorEnv`` of ``TaskEnv`` wrappers
  (``metarl_tf.rollouts.sampler``) with same-step autoreset, one trial per sub-environment; the
  policy step is compiled, the environments step in Python.

Example::

    tasks = BernoulliBanditTasks(num_arms=5)
    cfg = RL2Config(episodes_per_trial=10)
    policy = rl2_policy_for(tasks, units=64)
    learner = RL2Learner(policy, tasks, cfg)
    learner.train(100)                         # {'trial_return': ..., 'policy_loss': ..., ...}
    learner.evaluate(num_tasks=1000)           # {'trial_return': ..., 'returns': per-episode, ...}
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import NamedTuple

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from metarl_tf._checks import check_bool, check_float, check_int
from metarl_tf.evaluation import ci95
from metarl_tf.networks.policies import (categorical_entropy, categorical_log_prob,
                                         categorical_sample, gaussian_entropy, gaussian_log_prob,
                                         gaussian_sample, split_gaussian)
from metarl_tf.networks.recurrent import (CELLS, RecurrentApply, recurrent_policy, rl2_input,
                                          rl2_input_dim)
from metarl_tf.rollouts.returns import gae
from metarl_tf.rollouts.sampler import TaskEnv


@dataclasses.dataclass(frozen=True)
class RL2Config:
    """PPO over trials. Defaults follow lucaslingle/pytorch_rl2 (``PAPERS.md`` section 4) except
    where noted."""

    episodes_per_trial: int = 10  # n, episodes per trial on one task (RL² bandits/MDPs: 10..500).
    horizon: int = 0  # Steps per episode; 0 = the task family's (bandit 1, MDP 10, PointNav 100).
    num_arms: int = 5  # Bandits only: k, the number of arms (RL² paper: 5, 10, 50).
    cell: str = "gru"  # Recurrent cell of the policy built by the pipeline: "gru" or "lstm".
    separate_value: bool = False  # Pipeline-built policy: the value gets its own cell (pytorch_rl2's
    # separate value network; on tabular MDPs it learns where the shared cell stays at random:
    # docs/algorithms/rl2.md). False keeps one cell for policy and value.
    meta_batch_size: int = 500  # B, trials (tasks) per PPO iteration.
    discount: float = 0.99  # gamma, per step across the whole trial.
    gae_lambda: float = 0.3  # GAE lambda (pytorch_rl2: 0.3).
    clip: float = 0.1  # PPO clip epsilon (pytorch_rl2: 0.10).
    value_coef: float = 0.5  # c_v, weight of the value loss.
    entropy_coef: float = 0.01  # c_H, weight of the entropy bonus (pytorch_rl2: 0.01).
    num_epochs: int = 8  # PPO epochs per iteration (pytorch_rl2: 8).
    num_minibatches: int = 4  # Minibatches per epoch (of trials, or of chunks with bptt_chunk).
    learning_rate: float = 1e-3  # Adam step size (pytorch_rl2: 2e-4 with 240k steps/update).
    adam_epsilon: float = 1e-5  # Adam epsilon (pytorch_rl2: 1e-5).
    max_grad_norm: float = 0.0  # Clip the gradient's global norm to this; 0 = no clipping.
    bptt_chunk: int = 0  # Truncated BPTT length in steps (must divide n * horizon); 0 = full trial.
    normalize_advantages: bool = False  # Standardize advantages per minibatch (pytorch_rl2: off).
    in_graph: bool = True  # Bandits / MDPs: step the pure-TF environments inside the compiled step.
    jit_minibatch: bool = True  # XLA-compile each PPO minibatch step (loss, BPTT gradient, Adam)
    # as a cluster inside the graph-mode iteration (2x faster on CPU; docs/algorithms/rl2.md).
    jit_compile: bool = False  # XLA-compile whole steps instead (one cluster for the iteration:
    # measured 30x slower on CPU, the BPTT scan's gradient inside XLA's epoch loop); overrides
    # jit_minibatch.

    def __post_init__(self):
        check_int(self, "episodes_per_trial", minimum=1)
        check_int(self, "horizon", minimum=0)
        check_int(self, "num_arms", minimum=2)
        if self.cell not in CELLS:
            raise ValueError(f"`cell` must be one of {CELLS}, got {self.cell!r}")
        for name in ("meta_batch_size", "num_epochs", "num_minibatches"):
            check_int(self, name)
        check_int(self, "bptt_chunk", minimum=0)
        check_float(self, "discount", 0.0, 1.0, low_inclusive=True)
        check_float(self, "gae_lambda", 0.0, 1.0, low_inclusive=True)
        check_float(self, "clip", 0.0, 1.0)
        check_float(self, "value_coef", 0.0, low_inclusive=True)
        check_float(self, "entropy_coef", 0.0, low_inclusive=True)
        check_float(self, "learning_rate")
        check_float(self, "adam_epsilon")
        check_float(self, "max_grad_norm", 0.0, low_inclusive=True)
        for name in ("separate_value", "normalize_advantages", "in_graph", "jit_minibatch",
                     "jit_compile"):
            check_bool(self, name)


class TrialBatch(NamedTuple):
    """``B`` trials of ``T`` steps (batch-major, time second).

    Attributes:
      inputs: ``[B, T, input_dim]`` the policy inputs ``x_t`` (``rl2_input``).
      actions: ``[B, T]`` int32 (categorical) or ``[B, T, act_dim]`` float32.
      log_probs: ``[B, T]`` log pi_old(a_t | x_t) of the sampling policy.
      values: ``[B, T]`` v_t of the sampling policy.
      rewards: ``[B, T]``.
      dones: ``[B, T]`` float32, 1 where step ``t`` ended an episode.
      states: ``[B, T, state_size]`` the recurrent state before step ``t`` (h_t).
    """

    inputs: tf.Tensor
    actions: tf.Tensor
    log_probs: tf.Tensor
    values: tf.Tensor
    rewards: tf.Tensor
    dones: tf.Tensor
    states: tf.Tensor


def ppo_loss(log_probs, old_log_probs, advantages, values, returns, entropy, clip: float,
             value_coef: float, entropy_coef: float) -> dict:
    """The PPO objective on a batch of steps (every tensor the same shape; means over all entries).

    ::

        rho_t   = exp(log_probs_t - old_log_probs_t)
        L_clip  = -mean(min(rho_t A_t, clip(rho_t, 1 - clip, 1 + clip) A_t))
        L_v     = mean((values_t - returns_t)^2) / 2
        L       = L_clip + value_coef L_v - entropy_coef mean(entropy_t)

    Returns:
      ``{"loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}``;
      ``approx_kl = mean(old_log_probs - log_probs)``.
    """
    ratio = tf.exp(log_probs - old_log_probs)
    clipped = tf.clip_by_value(ratio, 1.0 - clip, 1.0 + clip)
    policy_loss = -tf.reduce_mean(tf.minimum(ratio * advantages, clipped * advantages))
    value_loss = 0.5 * tf.reduce_mean(tf.square(values - returns))
    mean_entropy = tf.reduce_mean(entropy)
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    return {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss,
            "entropy": mean_entropy, "approx_kl": tf.reduce_mean(old_log_probs - log_probs),
            "clip_fraction": tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32))}


def trial_advantages(rewards, values, discount, lam) -> tuple[tf.Tensor, tf.Tensor]:
    """GAE over whole trials ``[B, T]``: episode boundaries inside a trial are not terminal.

    Returns ``(advantages, returns = advantages + values)``; only the trial end bootstraps zero.
    """
    mask = tf.ones_like(rewards)
    adv = gae(rewards, values, mask, discount, lam)
    return adv, adv + values


def rl2_policy_for(tasks, units: int = 256, cell: str = "gru", hidden=(), activation="tanh",
                   seed: int = 0, separate_value: bool = False) -> keras.Model:
    """The ``recurrent_policy`` whose input and head fit ``tasks``' observations and actions.

    ``separate_value=True`` gives the value its own cell (pytorch_rl2's separate value network);
    on the tabular MDPs it learned much faster than the shared cell (``docs/algorithms/rl2.md``).
    """
    obs_dim, num_actions, act_dim = _spaces(tasks)
    size = num_actions if num_actions is not None else act_dim
    return recurrent_policy(rl2_input_dim(obs_dim, size), num_actions=num_actions, act_dim=act_dim,
                            units=units, cell=cell, hidden=hidden, activation=activation, seed=seed,
                            separate_value=separate_value)


def has_trial_env(tasks) -> bool:
    """Whether ``tasks`` has a pure-TF trial environment (``tf_env()`` whose class sets
    ``supports_trials``: ``reset(task)``, ``observe(state)``, ``step(state, action, seed) ->
    (state, reward, done)`` starting the next episode by itself) and ``sample_tf``."""
    tf_env = getattr(tasks, "tf_env", None)
    return (callable(tf_env) and callable(getattr(tasks, "sample_tf", None))
            and getattr(tf_env(), "supports_trials", False))


def _spaces(tasks) -> tuple[int, int | None, int | None]:
    """``(obs_dim, num_actions or None, act_dim or None)`` of a task family."""
    if has_trial_env(tasks):
        return int(tasks.obs_dim), int(tasks.num_actions), None
    env = tasks.make_env()
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        space = env.action_space
        if isinstance(space, gymnasium.spaces.Discrete):
            return obs_dim, int(space.n), None
        return obs_dim, None, int(np.prod(space.shape))
    finally:
        env.close()



class RL2Learner:
    """Meta-trains a recurrent policy with PPO over trials (RL²).

    Args:
      policy: a ``recurrent_policy`` model (``rl2_policy_for(tasks, ...)``).
      tasks: ``BernoulliBanditTasks`` / ``TabularMDPTasks`` or any family with a pure-TF trial
        environment (``has_trial_env``; in graph unless ``config.in_graph`` is False), or any
        family with ``sample(num_tasks, seed, split)`` and ``make_env()`` (gymnasium).
      config: an ``RL2Config``.
      seed: base seed; iteration ``i`` draws its tasks and noise from ``(seed, i)``.
    """

    config_type = RL2Config

    def __init__(self, policy: keras.Model, tasks, config: RL2Config, seed: int = 0):
        if not isinstance(config, RL2Config):
            raise TypeError(f"`config` must be an RL2Config, got {type(config).__name__}")
        if not isinstance(policy, keras.Model) or not hasattr(policy, "state_size"):
            raise TypeError("`policy` must be a recurrent_policy model")
        self.config, self.tasks, self.seed, self.policy = config, tasks, int(seed), policy
        self.apply = RecurrentApply(policy)
        self.distribution = policy.distribution
        self.num_actions = policy.num_actions
        obs_dim, num_actions, act_dim = _spaces(tasks)
        self.obs_dim = obs_dim
        size = num_actions if num_actions is not None else act_dim
        if rl2_input_dim(obs_dim, size) != policy.input_dim or num_actions != policy.num_actions:
            raise ValueError(f"`policy` does not fit the task family: it takes {policy.input_dim} "
                             f"inputs, the tasks need {rl2_input_dim(obs_dim, size)}")
        self.horizon = config.horizon or int(getattr(tasks, "horizon", 1))
        self.trial_steps = config.episodes_per_trial * self.horizon
        if config.bptt_chunk and self.trial_steps % config.bptt_chunk:
            raise ValueError(f"`bptt_chunk` ({config.bptt_chunk}) must divide the trial length "
                             f"episodes_per_trial * horizon = {self.trial_steps}")
        self.in_graph = config.in_graph and has_trial_env(tasks)
        if has_trial_env(tasks) and config.horizon not in (0, tasks.horizon):
            raise ValueError(f"`horizon` must be 0 or the task family's episode length "
                             f"({tasks.horizon}) for {type(tasks).__name__}")
        self.tf_env = tasks.tf_env() if self.in_graph else None
        self.optimizer = keras.optimizers.Adam(config.learning_rate, epsilon=config.adam_epsilon)
        self.optimizer.build(policy.trainable_variables)
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        jit = config.jit_compile
        self._iteration_fn = tf.function(self._ingraph_iteration, jit_compile=jit)
        # An XLA cluster nested in the graph-mode update (compiled once per minibatch shape).
        self._minibatch_fn = (tf.function(self._minibatch_step, jit_compile=True)
                              if config.jit_minibatch and not jit else self._minibatch_step)
        self._update_fn = tf.function(self._update, jit_compile=jit)
        self._policy_step_fn = tf.function(self._policy_step, jit_compile=jit)
        self._eval_fns = {}
        self._vector_envs = {}

    # -- public surface ---------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    def checkpoint_items(self) -> dict:
        return {"policy": self.policy, "optimizer": self.optimizer, "step": self.step_counter}

    def train(self, iterations: int) -> dict[str, float]:
        """Runs ``iterations`` PPO iterations; returns the last one's metrics.

        Metrics: ``trial_return`` (mean total reward of the iteration's trials), ``loss``,
        ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction`` (means over
        the last epoch's minibatches).
        """
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"`iterations` must be an integer >= 1, got {iterations!r}")
        out = {}
        for _ in range(iterations):
            if self.in_graph:
                out = self._iteration_fn()
            else:
                out = self._gym_iteration()
        return {k: float(v) for k, v in out.items()}

    # -- the policy -------------------------------------------------------------------------------
    def _params(self) -> list:
        return [tf.convert_to_tensor(v) for v in self.policy.trainable_variables]

    def _log_prob_entropy(self, heads, actions):
        if self.distribution == "categorical":
            return categorical_log_prob(heads, actions), categorical_entropy(heads)
        mean, log_std = split_gaussian(heads)
        return gaussian_log_prob(mean, log_std, actions), gaussian_entropy(log_std)

    def _sample(self, head, seed, greedy: bool = False):
        if self.distribution == "categorical":
            if greedy:
                return tf.argmax(head, axis=-1, output_type=tf.int32)
            return categorical_sample(head, seed)
        mean, log_std = split_gaussian(head)
        return mean if greedy else gaussian_sample(mean, log_std, seed)

    def _policy_step(self, params, x, state, seed):
        head, value, nxt = self.apply.step(params, x, state)
        action = self._sample(head, seed)
        log_prob, _ = self._log_prob_entropy(head, action)
        return action, log_prob, value, nxt

    def _prev_action_zeros(self, batch):
        if self.distribution == "categorical":
            return -tf.ones([batch], tf.int32)  # one-hot of -1: all zeros
        return tf.zeros([batch, self.policy.act_dim], tf.float32)

    # -- the in-graph path ------------------------------------------------------------------------
    def _iteration_seed(self):
        base = tf.constant([self.seed, 0], tf.int64)
        return tf.random.experimental.stateless_fold_in(base, self.step_counter, alg="philox")

    def _rollout_tf(self, params, task, seed, batch: int, greedy: bool = False):
        """One trial on each of ``batch`` tasks, in graph: ``TrialBatch``."""
        env = self.tf_env
        steps = self.trial_steps
        step_seeds = tf.random.experimental.stateless_split(seed, steps * 2, alg="philox")
        step_seeds = tf.reshape(step_seeds, [steps, 2, 2])
        env_state = env.reset(task)
        init = (env_state, self.apply.initial_state(batch), self._prev_action_zeros(batch),
                tf.zeros([batch]), tf.zeros([batch]))

        act_dtype = tf.int32 if self.distribution == "categorical" else tf.float32
        dtypes = (tf.float32, act_dtype, tf.float32, tf.float32, tf.float32, tf.float32,
                  tf.float32)
        arrays = tuple(tf.TensorArray(d, size=steps) for d in dtypes)

        def body(t, carry, arrays):
            env_state, h, prev_a, prev_r, prev_d = carry
            x = rl2_input(env.observe(env_state), prev_a, prev_r, prev_d, self.num_actions)
            head, value, nxt = self.apply.step(params, x, h)
            action = self._sample(head, step_seeds[t, 0], greedy)
            log_prob, _ = self._log_prob_entropy(head, action)
            env_state, reward, done = env.step(env_state, action, step_seeds[t, 1])
            done = tf.cast(done, tf.float32)
            outs = (x, action, log_prob, value, reward, done, h)
            arrays = tuple(a.write(t, o) for a, o in zip(arrays, outs))
            return t + 1, (env_state, nxt, action, reward, done), arrays

        _, _, arrays = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), init, arrays))
        outs = [a.stack() for a in arrays]  # [T, B, ...]
        outs = [tf.transpose(o, [1, 0] + list(range(2, len(o.shape)))) for o in outs]
        return TrialBatch(*outs)

    def _ingraph_iteration(self):
        cfg = self.config
        seed = self._iteration_seed()
        seeds = tf.random.experimental.stateless_split(seed, 3, alg="philox")
        task = self.tasks.sample_tf(seeds[0], cfg.meta_batch_size, "train")
        batch = self._rollout_tf(self._params(), task, seeds[1], cfg.meta_batch_size)
        metrics = self._update(batch, seeds[2])
        return metrics

    # -- the update (shared by both paths) ------------------------------------------------------
    def _chunks(self, batch: TrialBatch, advantages, returns):
        """Trials -> BPTT units ``[U, L, ...]`` with their start states (``U = B`` for full BPTT)."""
        cfg = self.config
        length = cfg.bptt_chunk or self.trial_steps
        parts = self.trial_steps // length

        def cut(x):
            shape = tf.shape(x)
            return tf.reshape(x, tf.concat([[shape[0] * parts, length], shape[2:]], axis=0))

        starts = batch.states[:, ::length]  # [B, parts, S]: the carried state at each chunk start
        starts = tf.reshape(starts, [-1, self.apply.state_size])
        fields = (batch.inputs, batch.actions, batch.log_probs, advantages, returns)
        return [cut(f) for f in fields] + [tf.stop_gradient(starts)]

    def _loss(self, params, inputs, actions, old_log_probs, advantages, returns, start_states):
        cfg = self.config
        heads, values, _, _ = self.apply.unroll(params, inputs, start_states)
        log_probs, entropy = self._log_prob_entropy(heads, actions)
        if cfg.normalize_advantages:
            mean, var = tf.nn.moments(advantages, axes=[0, 1])
            advantages = (advantages - mean) / (tf.sqrt(var) + 1e-8)
        return ppo_loss(log_probs, old_log_probs, advantages, values, returns, entropy, cfg.clip,
                        cfg.value_coef, cfg.entropy_coef)

    _METRIC_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")

    def _minibatch_step(self, inputs, actions, old_log_probs, advantages, returns, start_states):
        """One Adam step on the PPO loss of a minibatch of BPTT units; its metrics stacked."""
        variables = self.policy.trainable_variables
        with tf.GradientTape() as tape:
            out = self._loss([tf.convert_to_tensor(v) for v in variables], inputs, actions,
                             old_log_probs, advantages, returns, start_states)
        grads = tape.gradient(out["loss"], variables)
        if self.config.max_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.config.max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        return tf.stack([out[k] for k in self._METRIC_KEYS])

    def _update(self, batch: TrialBatch, seed):
        cfg = self.config
        advantages, returns = trial_advantages(batch.rewards, batch.values, cfg.discount,
                                               cfg.gae_lambda)
        units = self._chunks(batch, advantages, returns)
        static_units = units[0].shape[0]
        num_units = static_units if static_units is not None else tf.shape(units[0])[0]
        mb_size = num_units // cfg.num_minibatches
        keys = self._METRIC_KEYS
        epoch_seeds = tf.random.experimental.stateless_split(seed, cfg.num_epochs, alg="philox")

        sums = tf.zeros([len(keys)])
        for epoch in tf.range(cfg.num_epochs):
            perm = tf.argsort(tf.random.stateless_uniform([num_units], epoch_seeds[epoch],
                                                          alg="philox"))
            sums = tf.zeros([len(keys)])
            # [num_minibatches, mb_size]: each minibatch has a static size when the batch has
            # one, so the XLA minibatch step compiles once for it
            perm = tf.reshape(perm[:cfg.num_minibatches * mb_size], [cfg.num_minibatches, -1])
            for m in tf.range(cfg.num_minibatches):
                idx = perm[m]
                sums += self._minibatch_fn(*[tf.gather(u, idx) for u in units])
        self.step_counter.assign_add(1)
        stats = sums / cfg.num_minibatches
        out = {k: stats[i] for i, k in enumerate(keys)}
        out["trial_return"] = tf.reduce_mean(tf.reduce_sum(batch.rewards, axis=1))
        return out

    # -- the gymnasium path -----------------------------------------------------------------------
    def _vector_env(self, num_envs: int, split: str):
        key = (num_envs, split)
        if key not in self._vector_envs:
            make = self.tasks.make_env
            if "split" in inspect.signature(make).parameters:
                fn = lambda: make(split=split)  # noqa: E731
            else:
                fn = make
            self._vector_envs[key] = gymnasium.vector.SyncVectorEnv(
                [lambda: TaskEnv(fn()) for _ in range(num_envs)],
                autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
        return self._vector_envs[key]

    def collect_trials_gym(self, tasks, seed: int, split: str = "train",
                           greedy: bool = False) -> TrialBatch:
        """One trial of ``n * horizon`` steps per task on gymnasium sub-environments.

        Each sub-environment keeps its task for the whole trial; an episode that ends (terminated
        or truncated, e.g. by the ``TimeLimit``) is reset in the same step (same-step autoreset),
        so the next observation is the new episode's first one and the hidden state carries on.
        """
        tasks = list(tasks)
        envs = self._vector_env(len(tasks), split)
        envs.set_attr("task", tasks)
        obs, _ = envs.reset(seed=int(seed))
        batch = len(tasks)
        params = self._params()
        h = self.apply.initial_state(batch)
        prev_a, prev_r = self._prev_action_zeros(batch), tf.zeros([batch])
        prev_d = tf.zeros([batch])
        base = tf.constant([int(seed), 1], tf.int64)
        records = []
        for t in range(self.trial_steps):
            x = rl2_input(tf.constant(np.asarray(obs, np.float32).reshape(batch, -1)), prev_a,
                          prev_r, prev_d, self.num_actions)
            step_seed = tf.random.experimental.stateless_fold_in(base, t, alg="philox")
            if greedy:
                head, value, nxt = self.apply.step(params, x, h)
                action = self._sample(head, step_seed, greedy=True)
                log_prob = self._log_prob_entropy(head, action)[0]
            else:
                action, log_prob, value, nxt = self._policy_step_fn(params, x, h, step_seed)
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            reward = np.asarray(reward, np.float32)
            if not np.all(np.isfinite(reward)):
                raise ValueError(f"non-finite reward at trial step {t}: {reward}")
            done = np.logical_or(terminated, truncated).astype(np.float32)
            records.append((x, action, log_prob, value, reward, done, h))
            h, prev_a, prev_r, prev_d = nxt, action, tf.constant(reward), tf.constant(done)
        cols = list(zip(*records))
        return TrialBatch(*[tf.stack([tf.convert_to_tensor(c) for c in col], axis=1)
                            for col in cols])

    def _gym_iteration(self):
        cfg = self.config
        i = self.step
        tasks = self.tasks.sample(cfg.meta_batch_size, self.seed * 100003 + i, "train")
        batch = self.collect_trials_gym(tasks, seed=self.seed * 100003 + i)
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, 2], tf.int64), i, alg="philox")
        return self._update_fn(batch, seed)

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, num_tasks: int = 1000, num_steps: int | None = None,
                 seed: int | None = None, greedy: bool = False, tasks=None) -> dict:
        """One trial on each of ``num_tasks`` held-out (test-split) tasks, no gradient step.

        Args:
          num_tasks: held-out tasks.
          num_steps: unused (RL² adapts in its state, over the episodes of the trial); accepted
            for the run loop's common call.
          seed: evaluation seed (default: the learner's).
          greedy: take the most likely action instead of sampling.
          tasks: explicit held-out tasks instead of ``num_tasks`` fresh ones (a ``[M, k]`` array of
            arm means, a list of ``MDPTask``, or what the family's ``make_env`` accepts), e.g. the
            tasks a benchmark also gives its baselines.

        Returns:
          ``{"returns": [R_1, ..., R_n], "ci95": [...], "trial_return": float,
          "trial_return_ci95": float, "num_tasks": ..., "episodes_per_trial": n}``; ``R_k`` is the
          mean return of the k-th episode of the trial over tasks (the RL² adaptation curve).
        """
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
        seed = self.seed if seed is None else int(seed)
        if tasks is None:
            tasks = self.tasks.sample(num_tasks, seed, "test")
        tasks = list(tasks)
        if self.in_graph:
            if callable(getattr(self.tasks, "stack", None)):
                batched = self.tasks.stack(tasks)
            else:
                batched = tf.constant(np.stack(tasks), tf.float32)
            key = (len(tasks), greedy)
            if key not in self._eval_fns:
                n = len(tasks)

                def run(task, s):
                    b = self._rollout_tf(self._params(), task, s, n, greedy=greedy)
                    return b.rewards, b.dones
                self._eval_fns[key] = tf.function(run, jit_compile=self.config.jit_compile)
            rewards, dones = self._eval_fns[key](batched, tf.constant([seed, 7], tf.int64))
        else:
            b = self.collect_trials_gym(tasks, seed=seed, split="test", greedy=greedy)
            rewards, dones = b.rewards, b.dones
        return trial_summary(rewards.numpy(), dones.numpy(), self.config.episodes_per_trial)


def trial_summary(rewards: np.ndarray, dones: np.ndarray, episodes_per_trial: int) -> dict:
    """Per-episode and total returns of trials ``[B, T]`` (episodes split at the done flags)."""
    totals = rewards.sum(axis=1)
    episode = np.concatenate([np.zeros_like(dones[:, :1]), np.cumsum(dones, axis=1)[:, :-1]], 1)
    per_episode = np.stack([(rewards * (episode == k)).sum(axis=1)
                            for k in range(episodes_per_trial)], axis=1)
    return {"returns": [float(v) for v in per_episode.mean(axis=0)],
            "ci95": [ci95(per_episode[:, k]) for k in range(episodes_per_trial)],
            "trial_return": float(totals.mean()), "trial_return_ci95": ci95(totals),
            "num_tasks": int(rewards.shape[0]), "episodes_per_trial": int(episodes_per_trial)}
