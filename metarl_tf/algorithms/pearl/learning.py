"""PEARLLearner: off-policy meta-RL by posterior sampling over a probabilistic task latent.

PEARL (Rakelly, Zhou, Quillen, Finn & Levine 2019, arXiv:1903.08254; reference code
katerakelly/oyster). A pool of training tasks, each with two buffers: an RL buffer (all its data)
and an encoder buffer (its recent data collected with z from the prior). One iteration::

    (first iteration only) every training task: num_initial_steps with z ~ N(0, I) -> both buffers
    for num_tasks_sample training tasks:
        clear the task's encoder buffer
        num_steps_prior with z ~ N(0, I), resampled each episode       -> encoder + RL buffers
        num_steps_posterior with z ~ q(z | c), c ~ encoder buffer      -> encoder + RL buffers
        num_extra_rl_steps_posterior with z ~ q(z | c)                 -> RL buffer only
    num_train_steps_per_itr gradient steps, each on meta_batch_size distinct training tasks:
        c ~ encoder buffer (embedding_batch_size), (s, a, r, s', d) ~ RL buffer (batch_size)
        z ~ q(z | c) = product of the encoder's Gaussian factors (reparameterised)
        critics + encoder  <- Adam(grad [L_Q + kl_lambda sum_tasks KL(q(z|c) || N(0, I))])
        actor              <- Adam(grad L_pi)      (z stopped: the encoder learns from L_Q only)
        targets            <- Polyak(tau)

(``losses.py`` writes the losses out.) Environments are the gymnasium task families, stepped
``num_envs`` at a time through ``metarl_tf.rollouts.make_vector_env``; the gradient steps run
``train_steps_per_call`` at a time in one compiled ``tf.while_loop``.

Randomness is keyed on the counters (iteration, gradient step) with stateless seeds, and every
piece of state (weights, optimiser slots, targets, both buffers, counters) is a variable in
``checkpoint_items``, so a restored learner continues exactly as the uninterrupted one.

``evaluate`` runs oyster's test protocol on held-out tasks: exploration episodes with posterior
sampling (the first from the prior), and after each, a deterministic episode with the posterior
mean of all the context gathered so far.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from metarl_tf.algorithms.pearl import losses
from metarl_tf.evaluation import ci95
from metarl_tf.algorithms.pearl.buffers import Batch, TaskBuffers
from metarl_tf.algorithms.pearl.config import PEARLConfig
from metarl_tf.algorithms.pearl.networks import (PEARLNetworks, actor_outputs, context_rows,
                                                 encode, q_apply, sample_action, to_env_action)
from metarl_tf.rollouts.sampler import make_vector_env


def _variables(model: keras.Model, name: str) -> list[tf.Variable]:
    return [tf.Variable(tf.convert_to_tensor(v), name=f"{name}_{i}")
            for i, v in enumerate(model.trainable_variables)]


class _Group(tf.Module):
    """A named list of variables (tracked for checkpoints and the non-finite guard)."""

    def __init__(self, values, name):
        super().__init__(name=name)
        self.values = list(values)



class PEARLLearner:
    """Meta-trains a PEARL agent on a task family (see the module docstring).

    Args:
      networks: ``make_networks(...)`` sized for the family (the learner copies their weights).
      tasks: the task family (``sample(n, seed, split)``, ``make_env()``, ``horizon``).
      config: ``PEARLConfig``.
      seed: base seed of the training tasks, the collection and the gradient steps.
    """

    def __init__(self, networks: PEARLNetworks, tasks, config: PEARLConfig | None = None,
                 seed: int = 0):
        cfg = self.config = config or PEARLConfig()
        if networks.latent_dim != cfg.latent_dim:
            raise ValueError(f"the networks have latent_dim {networks.latent_dim}, the config "
                             f"{cfg.latent_dim}")
        self.networks, self.tasks, self.seed = networks, tasks, int(seed)
        self.horizon = int(tasks.horizon)
        self.train_tasks = tasks.sample(cfg.num_train_tasks, self.seed, "train")
        n = networks
        self.activation = n.activation
        self.encoder = _variables(n.encoder, "encoder")
        self.actor = _variables(n.actor, "actor")
        self.q1, self.q2 = _variables(n.q1, "q1"), _variables(n.q2, "q2")
        self.target_q1 = [tf.Variable(v, trainable=False, name=f"target_q1_{i}")
                          for i, v in enumerate(self.q1)]
        self.target_q2 = [tf.Variable(v, trainable=False, name=f"target_q2_{i}")
                          for i, v in enumerate(self.q2)]
        self.log_alpha = tf.Variable(math.log(cfg.alpha), name="log_alpha")
        self.target_entropy = (-float(n.act_dim) if cfg.target_entropy is None
                               else float(cfg.target_entropy))
        self.actor_opt = keras.optimizers.Adam(cfg.policy_lr)
        self.critic_opt = keras.optimizers.Adam(cfg.qf_lr)
        self.encoder_opt = keras.optimizers.Adam(cfg.context_lr)
        self.alpha_opt = keras.optimizers.Adam(cfg.alpha_lr)
        self.actor_opt.build(self.actor)
        self.critic_opt.build(self.q1 + self.q2)
        self.encoder_opt.build(self.encoder)
        self.alpha_opt.build([self.log_alpha])
        h = self.horizon
        self.rl_buffer = TaskBuffers(cfg.num_train_tasks, cfg.replay_capacity, n.obs_dim,
                                     n.act_dim, name="rl_buffer")
        enc_capacity = h * max(self._episodes(cfg.num_initial_steps),
                               self._episodes(cfg.num_steps_prior)
                               + self._episodes(cfg.num_steps_posterior))
        self.enc_buffer = TaskBuffers(cfg.num_train_tasks, enc_capacity, n.obs_dim, n.act_dim,
                                      name="encoder_buffer")
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.grad_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="grad_steps")
        self.env_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_steps")
        self.initialized = tf.Variable(False, trainable=False, name="initialized")
        self.low, self.high = n.action_low, n.action_high
        self._env = None
        ctx = n.context_dim
        self._posterior_fn = tf.function(
            lambda c, m: encode(self.encoder, c, m, n.latent_dim, n.information_bottleneck,
                                self.activation),
            input_signature=[tf.TensorSpec([None, None, ctx], tf.float32),
                             tf.TensorSpec([None, None], tf.float32)])
        self._act_fns = {
            det: tf.function(lambda o, z, s, det=det: self._act(o, z, s, det), input_signature=[
                tf.TensorSpec([None, n.obs_dim], tf.float32),
                tf.TensorSpec([None, n.latent_dim], tf.float32),
                tf.TensorSpec([2], tf.int64)]) for det in (False, True)}
        self._context_fn = tf.function(
            lambda t, s: self._sample_context(t, s),
            input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)])
        self._train_fn = tf.function(self._train_steps, jit_compile=cfg.jit_compile,
                                     input_signature=[tf.TensorSpec([], tf.int32)])

    # -- bookkeeping ------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    def _episodes(self, num_steps: int) -> int:
        """Episodes that give ``num_steps`` transitions (oyster collects by transition count;
        here whole episodes, so ``ceil(num_steps / horizon)`` of them)."""
        return -(-num_steps // self.horizon)

    def checkpoint_items(self) -> dict:
        """Everything a resume needs: weights, targets, optimisers, both buffers, counters."""
        return {"encoder": _Group(self.encoder, "encoder"), "actor": _Group(self.actor, "actor"),
                "q1": _Group(self.q1, "q1"), "q2": _Group(self.q2, "q2"),
                "target_q1": _Group(self.target_q1, "target_q1"),
                "target_q2": _Group(self.target_q2, "target_q2"), "log_alpha": self.log_alpha,
                "actor_opt": self.actor_opt, "critic_opt": self.critic_opt,
                "encoder_opt": self.encoder_opt, "alpha_opt": self.alpha_opt,
                "rl_buffer": self.rl_buffer, "enc_buffer": self.enc_buffer,
                "step": self.step_counter, "grad_steps": self.grad_steps,
                "env_steps": self.env_steps, "initialized": self.initialized}

    def buffer_bytes(self) -> int:
        """Bytes of the two buffers (the bulk of a checkpoint)."""
        return self.rl_buffer.nbytes() + self.enc_buffer.nbytes()

    @property
    def env(self):
        if self._env is None:
            self._env = make_vector_env(self.tasks.make_env, num_envs=self.config.num_envs)
        return self._env

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # -- acting -----------------------------------------------------------------------------------
    def _act(self, observation, z, seed, deterministic: bool):
        if deterministic:
            mean, _ = actor_outputs(self.actor, observation, z, self.activation)
            return tf.tanh(mean)
        noise = tf.random.stateless_normal([tf.shape(observation)[0], self.networks.act_dim],
                                           seed, alg="philox")
        return sample_action(self.actor, observation, z, noise, self.activation)[0]

    def posterior(self, context: np.ndarray, mask: np.ndarray):
        """``(mean, var)`` ``[T, latent]`` from padded context rows ``[T, N, context_dim]``."""
        mean, var = self._posterior_fn(tf.constant(context, tf.float32),
                                       tf.constant(mask, tf.float32))
        return mean.numpy(), var.numpy()

    def _sample_context(self, tasks, seed):
        c = self.enc_buffer.sample(tasks, self.config.embedding_batch_size, seed)
        rows = context_rows(c.observation, c.action, c.reward,
                            c.next_observation if self.networks.use_next_obs else None)
        return encode(self.encoder, rows, tf.ones(tf.shape(rows)[:2]), self.networks.latent_dim,
                      self.networks.information_bottleneck, self.activation)

    def rollout(self, tasks, z: np.ndarray, deterministic: bool, seed: int) -> dict:
        """One episode per task with latent ``z[i]`` for task ``i``, ``num_envs`` at a time.

        Returns:
          ``{"observation", "action" (in [-1, 1]), "reward", "next_observation", "terminated",
          "mask"}`` padded to ``[T, horizon, ...]``, and ``"return"`` ``[T]``.
        """
        n, h, e = self.networks, self.horizon, self.config.num_envs
        t = len(tasks)
        out = {"observation": np.zeros([t, h, n.obs_dim], np.float32),
               "action": np.zeros([t, h, n.act_dim], np.float32),
               "reward": np.zeros([t, h], np.float32),
               "next_observation": np.zeros([t, h, n.obs_dim], np.float32),
               "terminated": np.zeros([t, h], np.float32), "mask": np.zeros([t, h], np.float32)}
        env = self.env
        z = np.asarray(z, np.float32)
        act_fn = self._act_fns[bool(deterministic)]
        for start in range(0, t, e):
            ids = list(range(start, min(start + e, t)))
            rows = ids + [ids[-1]] * (e - len(ids))    # idle sub-envs repeat the last task
            env.set_attr("task", [tasks[i] for i in rows])
            obs, _ = env.reset(seed=int(seed) + start)
            alive = np.array([k < len(ids) for k in range(e)])
            z_rows = z[rows]
            for step in range(h):
                obs = np.asarray(obs, np.float32)
                action = act_fn(tf.constant(obs), tf.constant(z_rows),
                                tf.constant([seed, start * h + step], tf.int64)).numpy()
                nxt, reward, terminated, truncated, _ = env.step(
                    to_env_action(action, self.low, self.high))
                nxt, reward = np.asarray(nxt, np.float32), np.asarray(reward, np.float32)
                live = np.flatnonzero(alive)
                if not (np.isfinite(nxt[live]).all() and np.isfinite(reward[live]).all()):
                    raise ValueError(f"non-finite observation or reward from the environment of "
                                     f"task {tasks[rows[live[0]]]!r} at step {step + 1}")
                for k in live:
                    i = rows[k]
                    out["observation"][i, step] = obs[k]
                    out["action"][i, step] = action[k]
                    out["reward"][i, step] = reward[k]
                    out["next_observation"][i, step] = nxt[k]
                    out["terminated"][i, step] = float(terminated[k])
                    out["mask"][i, step] = 1.0
                alive &= ~(np.asarray(terminated) | np.asarray(truncated))
                obs = nxt
                if not alive.any():
                    break
        out["return"] = (out["reward"] * out["mask"]).sum(axis=1)
        return out

    def _store(self, task_ids, data: dict, encoder: bool) -> None:
        for row, task in enumerate(task_ids):
            keep = data["mask"][row] > 0
            batch = Batch(*[data[k][row][keep] for k in ("observation", "action", "reward",
                                                          "next_observation", "terminated")])
            self.rl_buffer.add(task, batch)
            if encoder:
                self.enc_buffer.add(task, batch)
        self.env_steps.assign_add(int(data["mask"].sum()))

    def gradient_steps(self, count: int) -> dict:
        """``count`` SAC + encoder gradient steps, ``train_steps_per_call`` per compiled call;
        returns the last call's losses."""
        done, out = 0, {}
        while done < count:
            chunk = min(self.config.train_steps_per_call, count - done)
            out = self._train_fn(tf.constant(chunk, tf.int32))
            done += chunk
        return out

    def collect(self, task_ids, num_steps: int, posterior: bool, encoder: bool,
                rng: np.random.Generator, seed: int) -> list[float]:
        """Episodes of the given training tasks with z from the prior or the posterior, written to
        their replay buffers (and, with ``encoder``, their encoder buffers); returns the episode
        returns. One phase of an iteration's data collection, public for benchmarks."""
        cfg, latent = self.config, self.networks.latent_dim
        returns = []
        for episode in range(self._episodes(num_steps)):
            if posterior:   # a fresh context batch from the encoder buffer for every episode
                mean, var = self._context_fn(tf.constant(task_ids, tf.int32),
                                             tf.constant([seed, 1000 + episode], tf.int64))
                mean, var = mean.numpy(), var.numpy()
            else:
                mean = np.zeros([len(task_ids), latent], np.float32)
                var = np.ones_like(mean) if cfg.use_information_bottleneck else np.zeros_like(mean)
            z = mean + np.sqrt(var) * rng.standard_normal(mean.shape).astype(np.float32)
            data = self.rollout([self.train_tasks[i] for i in task_ids], z, False,
                                seed=(seed * 7919 + episode) % (2 ** 31))
            self._store(task_ids, data, encoder)
            returns.extend(data["return"].tolist())
        return returns

    # -- training ---------------------------------------------------------------------------------
    def train(self, steps: int) -> dict[str, float]:
        """Runs ``steps`` iterations (collection then gradient steps); the last one's metrics."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}")
        metrics = {}
        for _ in range(steps):
            metrics = self._iteration()
        return metrics

    def _iteration(self) -> dict[str, float]:
        cfg = self.config
        it = self.step
        seed = (self.seed * 1_000_003 + it * 101) % (2 ** 31)
        rng = np.random.default_rng([self.seed, it, 7])
        if not bool(self.initialized.numpy()):
            all_tasks = np.arange(cfg.num_train_tasks)
            self.collect(all_tasks, cfg.num_initial_steps, False, True,
                          np.random.default_rng([self.seed, 0, 3]), self.seed + 12345)
            self.initialized.assign(True)
        chosen = np.sort(rng.choice(cfg.num_train_tasks, cfg.num_tasks_sample, replace=False))
        for task in chosen:
            self.enc_buffer.clear(task)
        prior = self.collect(chosen, cfg.num_steps_prior, False, True, rng, seed + 1)
        post = self.collect(chosen, cfg.num_steps_posterior, True, True, rng, seed + 2)
        post += self.collect(chosen, cfg.num_extra_rl_steps_posterior, True, False, rng,
                              seed + 3)
        out = self.gradient_steps(cfg.num_train_steps_per_itr)
        self.step_counter.assign_add(1)
        metrics = {k: float(v) for k, v in out.items()}
        metrics["return_prior"] = float(np.mean(prior)) if prior else float("nan")
        if post:
            metrics["return_posterior"] = float(np.mean(post))
        metrics["env_steps"] = float(self.env_steps.numpy())
        metrics["grad_steps"] = float(self.grad_steps.numpy())
        return metrics

    def _train_steps(self, n):
        metrics = self._grad_step()
        for _ in tf.range(n - 1):
            metrics = self._grad_step()
        return metrics

    def _grad_step(self):
        cfg, nets = self.config, self.networks
        seed = tf.stack([tf.constant(self.seed, tf.int64) + 17, self.grad_steps])
        seeds = tf.random.experimental.stateless_split(seed, 6)
        num, b = cfg.num_train_tasks, cfg.meta_batch_size
        tasks = tf.argsort(tf.random.stateless_uniform([num], seeds[0], alg="philox"))[:b]
        c = self.enc_buffer.sample(tasks, cfg.embedding_batch_size, seeds[1])
        batch = self.rl_buffer.sample(tasks, cfg.batch_size, seeds[2])
        context = context_rows(c.observation, c.action, c.reward,
                               c.next_observation if nets.use_next_obs else None)
        mask = tf.ones(tf.shape(context)[:2])
        auto = cfg.auto_entropy
        alpha = tf.exp(self.log_alpha) if auto else tf.constant(cfg.alpha)
        noise_shape = [b, cfg.batch_size, nets.act_dim]
        noise_t = tf.random.stateless_normal(noise_shape, seeds[3], alg="philox")
        noise_tm1 = tf.random.stateless_normal(noise_shape, seeds[4], alg="philox")
        act = self.activation
        with tf.GradientTape(persistent=True) as tape:
            mean, var = encode(self.encoder, context, mask, nets.latent_dim,
                               nets.information_bottleneck, act)
            if nets.information_bottleneck:
                eps = tf.random.stateless_normal(tf.shape(mean), seeds[5], alg="philox")
                z = mean + tf.sqrt(var) * eps
                kl = tf.reduce_sum(losses.kl_to_unit_prior(mean, var))
            else:
                z, kl = mean, tf.constant(0.0)
            z = z[:, None, :]                      # [B, 1, L]: one z per task, for every row
            z_stop = tf.stop_gradient(z)
            q1 = q_apply(self.q1, batch.observation, batch.action, z, act)
            q2 = q_apply(self.q2, batch.observation, batch.action, z, act)
            a_t, log_pi_t, _, _ = sample_action(self.actor, batch.next_observation, z_stop,
                                                noise_t, act)
            target = losses.soft_q_target(
                batch.reward, batch.terminated,
                q_apply(self.target_q1, batch.next_observation, a_t, z_stop, act),
                q_apply(self.target_q2, batch.next_observation, a_t, z_stop, act),
                log_pi_t, cfg.discount, cfg.reward_scale, alpha)
            qf_loss = losses.critic_loss(q1, q2, target)
            encoder_loss = qf_loss + cfg.kl_lambda * kl
            a_new, log_pi, mu, log_std = sample_action(self.actor, batch.observation, z_stop,
                                                       noise_tm1, act)
            policy_loss = losses.actor_loss(
                log_pi, q_apply(self.q1, batch.observation, a_new, z_stop, act),
                q_apply(self.q2, batch.observation, a_new, z_stop, act), alpha, mu, log_std,
                cfg.policy_mean_reg_weight, cfg.policy_std_reg_weight)
            temp_loss = (losses.alpha_loss(self.log_alpha, log_pi, self.target_entropy)
                         if auto else tf.constant(0.0))
        critic_vars = self.q1 + self.q2
        grads = tape.gradient(encoder_loss, critic_vars + self.encoder)
        self.critic_opt.apply_gradients(zip(grads[:len(critic_vars)], critic_vars))
        self.encoder_opt.apply_gradients(zip(grads[len(critic_vars):], self.encoder))
        self.actor_opt.apply_gradients(zip(tape.gradient(policy_loss, self.actor), self.actor))
        if auto:
            self.alpha_opt.apply_gradients([(tape.gradient(temp_loss, self.log_alpha),
                                             self.log_alpha)])
        del tape
        tau = cfg.soft_target_tau
        for target_var, online in zip(self.target_q1 + self.target_q2, critic_vars):
            target_var.assign((1.0 - tau) * target_var + tau * online)
        self.grad_steps.assign_add(1)
        return {"qf_loss": qf_loss, "policy_loss": policy_loss, "kl": kl,
                "z_var": tf.reduce_mean(var), "q_mean": tf.reduce_mean(q1),
                "log_pi": tf.reduce_mean(log_pi), "alpha": alpha}

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, num_tasks: int = 30, num_steps: int | None = None, seed: int | None = None,
                 tasks=None) -> dict:
        """Oyster's test protocol on held-out tasks (the family's ``"test"`` split).

        Each task runs ``num_steps`` exploration episodes (``num_exp_traj_eval`` by default): the
        first with z drawn from the prior, each later one with z drawn from the posterior of the
        context gathered so far (posterior sampling). Before and after each exploration episode
        a deterministic episode is scored with z = the posterior mean of the context so far
        (before any: the prior mean, what ``serving_default`` of the export does).

        Returns:
          ``{"returns": [R_0 .. R_num_steps], "ci95", "per_task", "exploration_returns",
          "num_tasks", "num_exploration_episodes", "context_transitions"}``: ``R_k`` is the mean
          return after ``k`` exploration episodes (``R_0``: under the prior).
        """
        k_max = self.config.num_exp_traj_eval if num_steps is None else num_steps
        if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 0:
            raise ValueError(f"`num_steps` must be an integer >= 0, got {k_max!r}")
        seed = self.seed if seed is None else int(seed)
        if tasks is None:
            if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
                raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
            tasks = self.tasks.sample(num_tasks, seed, "test")
        t, latent = len(tasks), self.networks.latent_dim
        rng = np.random.default_rng([seed, 99])
        context = np.zeros([t, 0, self.networks.context_dim], np.float32)
        mask = np.zeros([t, 0], np.float32)
        rows, explore = [], []
        for k in range(k_max + 1):
            mean, var = self.posterior(context, mask)
            rows.append(self.rollout(tasks, mean, True, seed=seed * 31 + 2 * k)["return"])
            if k == k_max:
                break
            z = mean + np.sqrt(var) * rng.standard_normal([t, latent]).astype(np.float32)
            data = self.rollout(tasks, z, True, seed=seed * 31 + 2 * k + 1)
            explore.append(data["return"])
            new = context_rows(data["observation"], data["action"], data["reward"],
                               data["next_observation"] if self.networks.use_next_obs else None)
            context = np.concatenate([context, np.asarray(new)], axis=1)
            mask = np.concatenate([mask, data["mask"]], axis=1)
        rows = np.stack(rows)
        return {"returns": [float(r.mean()) for r in rows], "ci95": [ci95(r) for r in rows],
                "per_task": rows.tolist(),
                "exploration_returns": [float(r.mean()) for r in explore],
                "num_tasks": t, "num_exploration_episodes": k_max,
                "context_transitions": mask.sum(axis=1).tolist()}
