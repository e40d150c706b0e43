"""``MetaDQNLearner``: the meta-training loop, and ``FineTuneDQNLearner``, the fine-tuning baseline.

One meta-iteration, with a fixed pool of ``N`` training tasks, each with its own replay buffer and
a *random buffer* of uniformly-random-policy transitions (support sets of ``support_size`` are drawn
from it: at test time the agent adapts from such transitions)::

    every ACT_REFRESH_EVERY iterations, for every pool task:  z_i = adapt(z_0; support_i)
    step every pool task's environment with epsilon-greedy Q(s, .; theta, z_i); append to replay_i
    meta-batch B of T pool tasks:
        z_i = adapt(z_0; support_i)                          (differentiable in theta, z_0, alpha)
        L   = mean_i TD_huber(theta, z_i; query_i ~ replay_i + random_i, target network theta^-)
              (+ the head's error of z_i on query_i, + task_loss_weight * the task decoder's)
        (theta, z_0, alpha, head, decoder) <- Adam(clip(grad L))
    theta^- <- theta every ``target_update_period`` iterations (or Polyak)

``adapt`` is ``losses.adapt_embedding``. Every environment is a batched TF one
(``tasks.tf_env()``), so acting, replay, adaptation and the update are one compiled function.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.evaluation import ci95
from metarl_tf.algorithms import dqn
from metarl_tf.algorithms.dqn import (collect_support, fold_seed, greedy_returns,
                                      many_iterations, random_policy, train_in_executions)
from metarl_tf.algorithms.meta_dqn import config as C  # the fixed settings
from metarl_tf.algorithms.meta_dqn.config import MetaDQNConfig
from metarl_tf.algorithms.meta_dqn.losses import (adapt_embedding, embedding_rule, finetune,
                                                  head_loss, inner_loss, outer_td_loss)
from metarl_tf.networks.q_network import TaskConditionedQNetwork, q_values
from metarl_tf.rollouts.replay import LoopState, TaskReplayBuffer, Transitions, collect, init_loop

ADAPTATIONS = ("z", "finetune")


class MetaParams(NamedTuple):
    """What the outer loop learns, by role (variables in the learner, tensors in its step); in
    this order they are the optimizer's variables."""

    network: Sequence  # the Q-network's weights (TaskConditionedQNetwork.trainable_variables)
    z_init: object  # z_0 [z_dim]
    inner_rates: object  # the inner rates on z: [z_dim], or [inner_steps, z_dim] per step
    head: Sequence  # the model or reward head's weights; () with the TD inner loss
    task_decoder: Sequence  # (W [z_dim + 1, task_dim],) with task_loss_weight > 0, else ()


def reward_head_init(obs_dim: int, z_dim: int, seed: int = 0) -> list:
    """Initial ``[P, (c,)]`` of the ``"next_logistic"`` reward head: ``P`` ``[obs_dim + 1,
    z_dim]`` Glorot uniform (a zero ``P`` would leave z no gradient), the logit offset ``c = 0``."""
    init = keras.initializers.GlorotUniform(seed=seed)
    return [tf.convert_to_tensor(init((obs_dim + 1, z_dim)), tf.float32), tf.constant([0.0])]


def check_transitions(observations, actions, rewards, next_observations, dones, obs_dim: int,
                      num_actions: int, unit_rewards: bool = False) -> Transitions:
    """One task's transitions as a ``[1, K]`` ``Transitions`` batch, or a ValueError naming the bad
    input (lengths that disagree, actions out of range, NaN/Inf, dones other than 0/1, and with
    ``unit_rewards`` rewards outside [0, 1])."""
    obs = np.asarray(observations, np.float32)
    nxt = np.asarray(next_observations, np.float32)
    act = np.asarray(actions)
    rew = np.asarray(rewards, np.float32)
    done = np.asarray(dones, np.float32)
    if rew.ndim != 1 or len(rew) == 0:
        raise ValueError(f"`rewards` must be a non-empty vector [K], got shape {rew.shape}")
    k = len(rew)
    for name, arr, shape in (("observations", obs, (k, obs_dim)), ("actions", act, (k,)),
                             ("next_observations", nxt, (k, obs_dim)), ("dones", done, (k,))):
        if arr.shape != shape:
            raise ValueError(f"`{name}` must have shape {list(shape)} (one entry per transition, "
                             f"like `rewards`), got {list(arr.shape)}")
    for name, arr in (("observations", obs), ("rewards", rew), ("next_observations", nxt),
                      ("dones", done)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must be finite, got NaN or Inf")
    if not np.issubdtype(act.dtype, np.integer) or np.any(act < 0) or np.any(act >= num_actions):
        raise ValueError(f"`actions` must be integers in [0, {num_actions}), got "
                         f"{np.unique(act)[:10].tolist()}")
    if not np.all((done == 0) | (done == 1)):
        raise ValueError("`dones` must hold only 0 and 1")
    if unit_rewards and np.any((rew < 0) | (rew > 1)):
        raise ValueError("`rewards` must lie in [0, 1] for the next_logistic reward head, got "
                         f"values in [{rew.min()}, {rew.max()}]")
    t = lambda x, dt=tf.float32: tf.constant(x[None], dt)  # noqa: E731
    return Transitions(t(obs), t(act.astype(np.int32), tf.int32), t(rew), t(nxt), t(done), t(done))



class MetaDQNLearner:
    """Meta-trains a ``TaskConditionedQNetwork`` and its task-embedding inference on a family.

    Args:
      network: the Q-network (its ``z_dim`` must equal ``config.z_dim``).
      tasks: a discrete-action family (``CartPoleDirTasks``, ``GridWorldTasks``,
        ``MountainCarLRTasks``): ``sample``, ``tf_env``, ``horizon``, ``obs_dim``, ``num_actions``.
      config: ``MetaDQNConfig``.
      seed: base seed (pool tasks, environments, sampling).

    The loop ``training.run`` drives, and what a deployment does with the result::

        learner = MetaDQNLearner(TaskConditionedQNetwork(4, 2, z_dim=8), CartPoleDirTasks(),
                                 MetaDQNConfig())
        while learner.step < 20000:
            metrics = learner.train(50)
        curve = learner.evaluate(num_tasks=20, num_steps=3)    # returns after 0..3 steps on z
        z = learner.adapt(obs, actions, rewards, next_obs, dones)   # one task's transitions
        action = learner.q_values(obs_now, z).argmax(-1)
    """

    evaluation = "z"  # what evaluate() adapts by default: z ("finetune": the whole network)

    def __init__(self, network: TaskConditionedQNetwork, tasks, config: MetaDQNConfig,
                 seed: int = 0):
        if not isinstance(config, MetaDQNConfig):
            raise TypeError(f"`config` must be a MetaDQNConfig, got {type(config).__name__}")
        if not isinstance(network, TaskConditionedQNetwork):
            raise TypeError("`network` must be a TaskConditionedQNetwork, got "
                            f"{type(network).__name__}")
        if network.z_dim != config.z_dim:
            raise ValueError(f"`network.z_dim` ({network.z_dim}) must equal `z_dim` "
                             f"({config.z_dim})")
        if network.obs_dim != tasks.obs_dim or network.num_actions != tasks.num_actions:
            raise ValueError(f"the network ({network.obs_dim} observations, {network.num_actions} "
                             f"actions) does not fit the tasks ({tasks.obs_dim}, "
                             f"{tasks.num_actions})")
        cfg = self.config = config
        self.network, self.tasks, self.seed = network, tasks, int(seed)
        self.activation = network.activation_name
        self.env = tasks.tf_env()
        self.horizon = int(tasks.horizon)
        self.num_actions = int(tasks.num_actions)
        if cfg.per_step_inner_lr:
            start = cfg.inner_lr * cfg.inner_lr_decay ** np.arange(cfg.inner_steps)
            start = np.repeat(start[:, None], cfg.z_dim, axis=1).astype(np.float32)
        else:
            start = np.full([cfg.z_dim], cfg.inner_lr, np.float32)
        # the head z adapts on: the one-step model (r, s' - s) per action on s (an MLP with the
        # network's widths), or the logistic reward head [P, (c,)]
        self.head_network = None
        head: list = []
        if cfg.inner_loss == "model":
            obs, a = network.obs_dim, network.num_actions
            self.head_network = TaskConditionedQNetwork(
                obs, a * (obs + 1), cfg.z_dim, tuple(network.hidden), network.activation_name,
                seed=network.seed + 1000, name="model_head")
            head = list(self.head_network.trainable_variables)
        elif cfg.inner_loss == "reward":
            head = [tf.Variable(p, name=f"reward_head_{i}") for i, p in
                    enumerate(reward_head_init(network.obs_dim, cfg.z_dim, network.seed + 1000))]
        decoder = []
        if cfg.task_loss_weight > 0:  # the decoder [z, 1] -> standardised task parameters
            init = keras.initializers.GlorotUniform(seed=network.seed + 2000)
            decoder = [tf.Variable(init((cfg.z_dim + 1, int(tasks.task_dim))),
                                   name="task_decoder")]
        self.meta = MetaParams(network=list(network.trainable_variables),
                               z_init=tf.Variable(tf.zeros([cfg.z_dim]), name="z_init"),
                               inner_rates=tf.Variable(start, name="inner_rates"),
                               head=head, task_decoder=decoder)
        self.target = [tf.Variable(v, trainable=False, name=f"target_{i}")
                       for i, v in enumerate(self.meta.network)]
        self.optimizer = keras.optimizers.Adam(cfg.learning_rate, global_clipnorm=C.MAX_GRAD_NORM)
        self.optimizer.build(self.meta_variables)
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.env_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_steps")
        self._base_seed = tf.constant([self.seed, 7], tf.int64)
        n = cfg.num_train_tasks
        self.pool = tf.Variable(tasks.sample(n, self.seed, "train"), trainable=False, name="pool")
        pool = self.pool.numpy()
        self._task_mean = tf.constant(pool.mean(0), tf.float32)
        self._task_std = tf.constant(np.maximum(pool.std(0), 1e-6), tf.float32)
        self.replay = TaskReplayBuffer(n, cfg.replay_capacity, tasks.obs_dim, name="replay")
        self.random_buffer = TaskReplayBuffer(n, cfg.random_buffer_size, tasks.obs_dim,
                                              name="random")
        loop = init_loop(self.env, self.pool, fold_seed(self._base_seed, 1))
        self.loop = [tf.Variable(x, trainable=False, name=f"loop_{i}") for i, x in enumerate(loop)]
        self.z_act = tf.Variable(tf.zeros([n, cfg.z_dim]), trainable=False, name="z_act")
        self._train_fn = tf.function(lambda n: many_iterations(self._iteration, n),
                                     jit_compile=cfg.jit_compile)
        self._eval_fns: dict = {}
        self._prefill()

    # -- state ----------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    @property
    def meta_variables(self) -> list:
        """Every meta-learned variable, flat, in the optimizer's order (``MetaParams``')."""
        return tf.nest.flatten(self.meta)

    def checkpoint_items(self) -> dict:
        """What a checkpoint holds, by name (the names of earlier releases, so that their
        checkpoints restore)."""
        items = {"network": self.network, "z_init": self.meta.z_init,
                 "inner_rates": self.meta.inner_rates, "optimizer": self.optimizer,
                 "step": self.step_counter, "env_steps": self.env_steps,
                 "target": tf.train.Checkpoint(**{f"v{i}": v for i, v in enumerate(self.target)})}
        if self.head_network is not None:
            items["reward_network"] = self.head_network
        elif self.meta.head:
            items["reward_head"] = tf.train.Checkpoint(
                **{f"v{i}": v for i, v in enumerate(self.meta.head)})
        if self.meta.task_decoder:
            items["task_decoder"] = self.meta.task_decoder[0]
        return items

    def update_rule(self) -> adaptation.UpdateRule:
        """The inner update of z with the learned rates (what the export carries)."""
        return embedding_rule(self.meta.inner_rates)

    # -- adaptation: the public surface ---------------------------------------------------------
    def adapt_batch(self, support: Transitions, num_steps: int | None = None,
                    theta: MetaParams | None = None, first_order: bool = True,
                    keep_trajectory: bool = False) -> adaptation.Adapted:
        """``adapt_embedding`` with this learner's inner loss on ``support`` ``[T, K]``, from z_0,
        with the learned rates (``theta``: other values of ``meta``, e.g. the tensors the
        meta-gradient is taken with respect to; default the current ones)."""
        cfg = self.config
        if theta is None:
            theta = tf.nest.map_structure(tf.convert_to_tensor, self.meta)
        return adapt_embedding(
            theta.network, theta.z_init, support, embedding_rule(theta.inner_rates),
            cfg.inner_steps if num_steps is None else num_steps, cfg.discount,
            inner_loss_kind=cfg.inner_loss, head=theta.head,
            normalize_grad=cfg.normalize_inner_grad, activation=self.activation,
            huber_delta=C.HUBER_DELTA, first_order=first_order, keep_trajectory=keep_trajectory)

    def adapt(self, observations, actions, rewards, next_observations, dones,
              num_steps: int | None = None) -> np.ndarray:
        """z ``[z_dim]`` adapted on one task's transitions (what the exported ``adapt`` computes).

        Arrays: ``observations`` / ``next_observations`` ``[K, obs_dim]``, ``actions`` int ``[K]``,
        ``rewards`` ``[K]``, ``dones`` ``[K]`` (1 = terminal). Bad input raises ValueError naming it.
        """
        num_steps = self.config.inner_steps if num_steps is None else num_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"`num_steps` must be an integer >= 0, got {num_steps!r}")
        batch = check_transitions(observations, actions, rewards, next_observations, dones,
                                  self.network.obs_dim, self.num_actions,
                                  unit_rewards=self.config.inner_loss == "reward")
        return self.adapt_batch(batch, num_steps).params[0][0].numpy()

    def q_values(self, observation, z=None) -> np.ndarray:
        """``[N, num_actions]`` Q-values for ``[N, obs_dim]`` observations and ``z`` (default z_0)."""
        z = self.meta.z_init if z is None else tf.constant(np.asarray(z, np.float32))
        obs = tf.constant(np.asarray(observation, np.float32))
        return q_values([tf.convert_to_tensor(v) for v in self.meta.network], obs[None],
                        tf.convert_to_tensor(z)[None], self.activation)[0].numpy()

    # -- collection -----------------------------------------------------------------------------
    @tf.function
    def _prefill(self):
        cfg = self.config
        support = collect_support(self.env, self.pool, cfg.random_buffer_size, self.horizon,
                                  self.num_actions, fold_seed(self._base_seed, 2))
        self.random_buffer.add(Transitions(
            *[tf.transpose(x, [1, 0] + list(range(2, len(x.shape)))) for x in support]))
        loop, tr, _ = collect(self.env, self.pool, LoopState(*self.loop),
                              random_policy(self.num_actions), C.PREFILL_STEPS, self.horizon,
                              fold_seed(self._base_seed, 3))
        self.replay.add(tr)
        for var, value in zip(self.loop, loop):
            var.assign(value)
        self.env_steps.assign_add(C.PREFILL_STEPS * cfg.num_train_tasks)

    def _support_sample(self, seed, tasks=None) -> Transitions:
        """A support set per task (every pool task, or ``tasks``) from the random buffer."""
        size = self.config.support_size
        if self.config.support_sampling == "window":
            return self.random_buffer.sample_window(seed, size, tasks)
        return self.random_buffer.sample(seed, size, tasks=tasks)

    # -- training -------------------------------------------------------------------------------
    def train(self, steps: int) -> dict[str, float]:
        """Runs ``steps`` meta-iterations; returns the last one's metrics (Python floats)."""
        return train_in_executions(self._train_fn, steps, self.config.steps_per_execution)

    def _act(self, seed, step):
        """One epsilon-greedy environment step in every pool task, with its adapted z."""
        cfg = self.config
        params = [tf.convert_to_tensor(v) for v in self.meta.network]
        if tf.equal(tf.math.floormod(step, C.ACT_REFRESH_EVERY), 0):
            acting_support = self._support_sample(fold_seed(seed, 5))
            self.z_act.assign(tf.stop_gradient(self.adapt_batch(acting_support).params[0]))
        z_act = tf.convert_to_tensor(self.z_act)
        epsilon = dqn.linear_epsilon(step, C.EPSILON_START, C.EPSILON_END, cfg.epsilon_decay_steps)
        policy = lambda obs, s: dqn.epsilon_greedy(  # noqa: E731
            q_values(params, obs[:, None], z_act, self.activation)[:, 0], epsilon, s)
        loop, tr, (ret_sum, ret_count) = collect(self.env, self.pool, LoopState(*self.loop),
                                                 policy, 1, self.horizon, fold_seed(seed, 0))
        self.replay.add(tr)
        for var, value in zip(self.loop, loop):
            var.assign(value)
        self.env_steps.assign_add(cfg.num_train_tasks)
        return epsilon, tf.math.divide_no_nan(ret_sum, ret_count)

    def _query(self, seed, tasks) -> Transitions:
        """The outer loss's transitions of the meta-batch ``tasks``: QUERY_BATCH_SIZE per task,
        a QUERY_RANDOM_FRACTION of them from the random buffer, the rest from replay."""
        n_step = self.config.n_step
        num_random = int(round(C.QUERY_RANDOM_FRACTION * C.QUERY_BATCH_SIZE))
        parts = []
        if num_random < C.QUERY_BATCH_SIZE:
            parts.append(self.replay.sample(fold_seed(seed, 2), C.QUERY_BATCH_SIZE - num_random,
                                            n_step, tasks))
        if num_random:
            parts.append(self.random_buffer.sample(fold_seed(seed, 4), num_random, n_step, tasks))
        return Transitions(*[tf.concat(f, axis=1) for f in zip(*parts)])

    def _outer_loss(self, theta: MetaParams, target, support, query, tasks):
        """The meta-loss of one meta-batch and its parts (td, head error, task error) for the
        final z, and the adaptation (for the support-loss metrics)."""
        cfg = self.config
        adapted = self.adapt_batch(support, theta=theta, first_order=False,
                                   keep_trajectory=cfg.inner_steps > 0)
        # the z of the last outer_loss_steps steps (the final z last), or z_0 with no step
        scored = ([t[0] for t in adapted.trajectory[-cfg.outer_loss_steps:]]
                  if cfg.inner_steps else adapted.params)
        first = query if cfg.n_step == 1 else Transitions(*[x[:, :, 0] for x in query])
        parts = []  # (td, head_err, task_err) of each scored z
        for z in scored:
            td = tf.reduce_mean(outer_td_loss(theta.network, target, z, query, cfg.discount,
                                              cfg.n_step, C.HUBER_DELTA, self.activation))
            head_err = task_err = tf.constant(0.0)
            if theta.head:  # the adapted z must also predict the query through the head
                head_err = tf.reduce_mean(head_loss(cfg.inner_loss, theta.head, z, first,
                                                    self.activation))
            if theta.task_decoder:  # privileged: z must also encode the task
                zt = tf.concat([z, tf.ones_like(z[:, :1])], axis=-1)
                task = (tf.gather(tf.convert_to_tensor(self.pool), tasks)
                        - self._task_mean) / self._task_std
                task_err = tf.reduce_mean(tf.square(tf.matmul(zt, theta.task_decoder[0]) - task))
            parts.append((td, head_err, task_err))
        loss = tf.add_n([td + h + cfg.task_loss_weight * e
                         for td, h, e in parts]) / len(parts)
        return loss, parts[-1], adapted, z

    def _iteration(self):
        cfg = self.config
        step = self.step_counter
        seed = fold_seed(self._base_seed, 4, step)
        # 1. act in every pool task
        epsilon, episode_return = self._act(seed, step)
        # 2. meta-update on a meta-batch of pool tasks
        order = tf.argsort(tf.random.stateless_uniform([cfg.num_train_tasks], fold_seed(seed, 1),
                                                        alg="philox"))
        tasks = order[:cfg.meta_batch_size]
        support = self._support_sample(fold_seed(seed, 3), tasks)
        query = self._query(seed, tasks)
        target = [tf.convert_to_tensor(v) for v in self.target]
        with tf.GradientTape() as tape:
            flat = [tf.convert_to_tensor(v) for v in self.meta_variables]
            tape.watch(flat)
            theta = tf.nest.pack_sequence_as(self.meta, flat)
            loss, (td, head_err, task_err), adapted, z = self._outer_loss(theta, target, support,
                                                                          query, tasks)
        grads = tape.gradient(loss, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if not cfg.learn_z_init:  # z_0 stays at 0
            frozen = len(self.meta.network)
            grads[frozen] = tf.zeros_like(grads[frozen])
        self.optimizer.apply_gradients(zip(grads, self.meta_variables))
        # 3. target network
        online = [tf.convert_to_tensor(v) for v in self.meta.network]
        if cfg.target_update == "polyak":
            new_target = dqn.polyak_update(target, online, C.POLYAK_TAU)
        else:
            new_target = dqn.periodic_update(target, online, step + 1, cfg.target_update_period)
        for var, value in zip(self.target, new_target):
            var.assign(value)
        self.step_counter.assign_add(1)
        support_after = tf.reduce_mean(inner_loss(
            theta.network, z, support, cfg.discount, cfg.inner_loss, theta.head, self.activation,
            C.HUBER_DELTA))
        support_before = (tf.reduce_mean(adapted.support_loss) if adapted.support_loss is not None
                          else support_after)
        extra = {"reward_loss": head_err} if theta.head else {}
        if theta.task_decoder:
            extra["task_loss"] = task_err
        return {"td_loss": td, **extra, "support_loss_before": support_before,
                "support_loss_after": support_after, "epsilon": epsilon,
                "episode_return": episode_return,
                "env_steps": tf.cast(self.env_steps, tf.float32)}

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, num_tasks: int = 20, num_steps: int | None = None, seed: int | None = None,
                 tasks=None, support_size: int | None = None, episodes: int = C.EVAL_EPISODES,
                 adaptation_mode: str | None = None, finetune_lr: float = C.FINETUNE_LR) -> dict:
        """Greedy return on held-out tasks after adapting from random-policy transitions.

        For each task: ``support_size`` transitions of a uniformly random policy, then 0 ..
        ``num_steps`` inner steps (on z, or on the whole network by SGD at ``finetune_lr`` when
        ``adaptation_mode`` is ``"finetune"``; default: the learner's ``evaluation``), then
        ``episodes`` greedy episodes per step count.

        Returns:
          ``{"returns": [R_0 .. R_num_steps], "ci95": [...], "num_tasks", "support_size",
          "per_task": [[...] per step count], "success": [...], "support_rewarded": [...]}``;
          ``success`` is the fraction of tasks whose every greedy episode had a positive return
          (the grid-world reached its goal); ``support_rewarded`` counts each task's support
          transitions with a nonzero reward (0: the support says nothing about a sparse goal).
        """
        cfg = self.config
        num_steps = cfg.inner_steps if num_steps is None else num_steps
        seed = self.seed if seed is None else int(seed)
        support_size = cfg.support_size if support_size is None else support_size
        mode = self.evaluation if adaptation_mode is None else adaptation_mode
        for name, value, low in (("num_steps", num_steps, 0), ("support_size", support_size, 1),
                                 ("episodes", episodes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
        if mode not in ADAPTATIONS:
            raise ValueError(f"`adaptation_mode` must be one of {ADAPTATIONS}, got {mode!r}")
        if tasks is None:
            if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
                raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
            tasks = self.tasks.sample(num_tasks, seed, "test")
        tasks = tf.constant(np.asarray(tasks, np.float32))
        key = (int(tasks.shape[0]), num_steps, support_size, episodes, mode)
        if key not in self._eval_fns:
            self._eval_fns[key] = tf.function(
                lambda t, s, lr: self._eval_graph(t, s, num_steps, support_size, episodes, mode,
                                                  lr))
        rows, rewarded = self._eval_fns[key](tasks, tf.constant([seed, 11], tf.int64),
                                             tf.constant(finetune_lr, tf.float32))
        rows = rows.numpy()
        return {"returns": [float(r.mean()) for r in rows], "ci95": [ci95(r) for r in rows],
                "success": [float(np.mean(r > 0)) for r in rows], "per_task": rows.tolist(),
                "support_rewarded": rewarded.numpy().tolist(),
                "num_tasks": int(tasks.shape[0]), "support_size": support_size,
                "adaptation": mode}

    def _eval_graph(self, tasks, seed, num_steps, support_size, episodes, mode, lr):
        cfg = self.config
        theta = tf.nest.map_structure(tf.convert_to_tensor, self.meta)
        params = theta.network
        support = collect_support(self.env, tasks, support_size, self.horizon, self.num_actions,
                                  fold_seed(seed, 0))
        rows = []
        for k in range(num_steps + 1):
            if mode == "z":
                z = self.adapt_batch(support, k, theta).params[0]
                weights = params
            else:
                weights, z = finetune(params, self.meta.z_init, support, lr, k, cfg.discount,
                                      C.HUBER_DELTA, self.activation)
            q_fn = lambda obs, w=weights, z=z: q_values(w, obs, z, self.activation)  # noqa: E731
            rows.append(greedy_returns(self.env, tasks, q_fn, self.horizon, episodes,
                                       fold_seed(seed, 1)))
        rewarded = tf.reduce_sum(tf.cast(tf.not_equal(support.reward, 0.0), tf.int32), axis=1)
        return tf.stack(rows), rewarded


class FineTuneDQNLearner(MetaDQNLearner):
    """The fine-tuning baseline (algorithm ``finetune-dqn``): trained as ``MetaDQNLearner``
    (with ``inner_steps`` 0: one task-agnostic double DQN on all the pool's tasks), evaluated by
    fine-tuning the whole network by SGD on each held-out task's random-policy transitions."""

    evaluation = "finetune"
