"""MAML-RL (Finn et al. 2017, arXiv:1703.03400), ProMP (Rothfuss et al. 2018, arXiv:1810.06784),
Meta-SGD-RL and Reptile-RL on task families of environments.

One meta-iteration, for a meta-batch of ``T`` tasks (all tasks at once: task-batched parameters,
no Python loop over tasks)::

    for k = 0 .. K-1:                                      (K = inner_steps, 1 in the papers)
        D_k      ~ pi_theta_k on every task                N episodes per task
        theta_k+1 = theta_k + alpha grad J_LVC(theta_k; D_k)          adaptation.adapt, one step
    D'  ~ pi_theta_K                                        post-adaptation episodes
    outer update of theta on D' through theta_K(theta):
      "trpo":  min -mean_t r_t A'_t   s.t.  mean KL(pi_theta_K,old || pi_theta_K) <= delta
      "promp": promp_steps Adam steps on
               -mean_t min(r_t A'_t, clip(r_t) A'_t) + sum_k eta_k KL(pi_theta_k,old || pi_theta_k)

The inner objective is ProMP's LVC estimator by default (``estimator="dice"`` for loaded DiCE; see
``pg_losses``), so the meta-gradient sees that ``D_k`` was sampled from ``pi_theta_k``. Advantages
are GAE over the per-task linear feature baseline. Every inner update is ``adaptation.adapt``: the
same code the exported ``adapt`` signature traces.

Two ways to get episodes, chosen by the task family:

* ``PointNavTasks`` without a ``vector_env``: in-graph rollouts (``rollout_pointnav``), so a whole
  iteration -- task sampling, K+1 rollouts, adaptation, TRPO's conjugate gradient and line search
  (``tf.while_loop``s) or ProMP's outer steps -- is one ``tf.function`` call (XLA when
  ``jit_compile``);
* any other family (anything with ``sample(num_tasks, seed, split)`` and ``make_env()``), or
  PointNav given a ``vector_env``: episodes come from gymnasium through ``collect_episodes`` between
  compiled steps (preparation + adaptation per inner step, then the outer update).

Deviations from the originals are listed in ``MAMLRLConfig``'s field comments.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import NamedTuple, Protocol, Sequence

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from metarl_tf import adaptation, update_rules
from metarl_tf.algorithms import pg_losses
from metarl_tf.algorithms import trpo as trpo_lib
from metarl_tf._checks import check_bool, check_float, check_int
from metarl_tf.evaluation import ci95
from metarl_tf.params import FunctionalModel
from metarl_tf.rollouts.baselines import LinearFeatureBaseline
from metarl_tf.rollouts.episodes import Episodes
from metarl_tf.rollouts.sampler import (EnvFaults, collect_episodes, make_vector_env,
                                        policy_from_params)
from metarl_tf.rollouts.tf_rollout import (pointnav_oracle, rollout_pointnav,
                                           rollout_pointnav_actions)
from metarl_tf.tasks.pointnav import PointNavTasks

OUTERS = ("trpo", "promp")


def _check_choice(config, name: str, choices: Sequence[str]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MAMLRLConfig:
    """MAML-RL / ProMP settings. Defaults: the PointNav run of the issue (MAML paper's 2D
    navigation as configured by pytorch-maml-rl ``2d-navigation.yaml``; ``PAPERS.md`` 2b/2d).

    cbfinn/maml_rl's own point launcher differs: inner lr 0.5, 40 tasks per meta-batch.
    """

    outer: str = "trpo"  # Outer loop: "trpo" (MAML-TRPO) or "promp" (ProMP).
    inner_lr: float = 0.1  # Inner policy-gradient rate alpha (MR point: 0.5; TD, PM: 0.1).
    inner_steps: int = 1  # Inner PG steps in training, fresh episodes each; 0 = no adaptation.
    meta_batch_size: int = 20  # Tasks per meta-iteration (TD 2d-nav: 20; MR, PM: 40).
    episodes_per_task: int = 20  # Episodes per task and per inner step ("fast batch size").
    horizon: int = 100  # Episode length cap H (PointNav: 100).
    discount: float = 0.99  # gamma.
    gae_lambda: float = 1.0  # GAE lambda (1.0: returns minus baseline, as MAML-RL).
    normalize_advantages: bool = True  # Standardize advantages per task (rllab center_adv).
    estimator: str = "lvc"  # Inner objective: "lvc" (ProMP) or "dice" (loaded DiCE).
    first_order: bool = False  # Stop gradients through the inner policy gradient.
    max_kl: float = 0.01  # TRPO trust region delta on the mean KL of the adapted policies.
    cg_iters: int = 10  # TRPO conjugate-gradient iterations.
    cg_damping: float = 1e-5  # Added to the KL Hessian-vector products (MR, TD reg_coeff).
    cg_residual_tol: float = 1e-10  # CG stops once r.r falls below this.
    trpo_hvp: str = "gauss_newton"  # KL Hessian products: "gauss_newton" (J^T F J) or "exact".
    trpo_fvp_fraction: float = 1.0  # Fraction of the meta-batch's tasks (the first ones; tasks
    # are i.i.d.) whose episodes form the KL Hessian products of the conjugate gradient; the
    # surrogate's gradient and the line search always use all. 1.0 = MR, TD, PM. A deviation below
    # 1: TRPO (Schulman et al. 2015) computed its Fisher-vector products on 10% of the samples
    # (rllab ConjugateGradientOptimizer's subsample_factor); here whole tasks are subsampled.
    backtrack_ratio: float = 0.8  # TRPO line search shrink factor.
    max_backtracks: int = 15  # TRPO line search tries.
    promp_clip: float = 0.3  # ProMP clip epsilon (run scripts 0.3; class default 0.2).
    promp_kl_coeff: float = 1e-2  # ProMP initial inner-KL penalty (class default; scripts: 5e-4).
    promp_adaptive_kl: bool = True  # Adapt eta per inner step towards promp_target_kl (ProMP rule).
    promp_target_kl: float = 0.01  # Target inner KL for the adaptive eta.
    promp_steps: int = 5  # ProMP optimisation steps per meta-batch (num_promp_steps).
    promp_lr: float = 1e-3  # Adam learning rate of ProMP's outer steps.
    jit_compile: bool = False  # XLA-compile the compiled steps (TRPO and ProMP; measured: see the
    # benchmark doc).
    update_rule: str = "sgd"  # Inner rule (update_rules.RULES): "sgd", "metasgd" (rates start at
    # inner_lr) or "meta_lstm" (the meta-policy-gradient rule: the Meta-LSTM reading the PG
    # gradient, the inner loss and the episodes' return/advantage statistics).
    rule_hidden_size: int = 20  # Meta-LSTM hidden units (R&L: 20).
    max_env_faults: int = 3  # gymnasium path: env faults recovered per rollout before raising.

    def __post_init__(self):
        _check_choice(self, "outer", OUTERS)
        check_int(self, "max_env_faults", minimum=0)
        update_rules.check_rule(self, "update_rule")
        update_rules.check_hidden_size(self, "rule_hidden_size")
        _check_choice(self, "estimator", pg_losses.ESTIMATORS)
        _check_choice(self, "trpo_hvp", ("gauss_newton", "exact"))
        for name in ("meta_batch_size", "episodes_per_task", "horizon", "cg_iters",
                     "max_backtracks", "promp_steps"):
            check_int(self, name)
        check_int(self, "inner_steps", minimum=0)
        for name in ("inner_lr", "max_kl", "promp_kl_coeff", "promp_target_kl", "promp_lr"):
            check_float(self, name)
        check_float(self, "discount", high=1.0)
        check_float(self, "gae_lambda", low=0.0, high=1.0, low_inclusive=True)
        check_float(self, "cg_damping", low=0.0, low_inclusive=True)
        check_float(self, "cg_residual_tol", low=0.0, low_inclusive=True)
        check_float(self, "trpo_fvp_fraction", high=1.0)
        check_float(self, "backtrack_ratio", high=1.0)
        if self.backtrack_ratio >= 1.0:
            raise ValueError(f"`backtrack_ratio` must be in (0, 1), got {self.backtrack_ratio!r}")
        check_float(self, "promp_clip", high=1.0)
        for name in ("normalize_advantages", "first_order", "promp_adaptive_kl", "jit_compile"):
            check_bool(self, name)


@dataclasses.dataclass(frozen=True)
class ReptileRLConfig:
    """Reptile-RL settings: ``inner_steps`` policy-gradient steps per task (fresh episodes each),
    then ``theta <- theta + epsilon (mean_i theta_i - theta)``. No paper setting exists for RL;
    the defaults are this library's choice."""

    inner_lr: float = 0.1  # Inner policy-gradient rate.
    inner_steps: int = 3  # Inner PG steps per task and meta-iteration.
    outer_step_size: float = 0.5  # epsilon at iteration 0.
    anneal_steps: int = 0  # Linear decay of epsilon to 0 over this many iterations; 0 = constant.
    meta_batch_size: int = 20  # Tasks per meta-iteration.
    episodes_per_task: int = 20  # Episodes per task and per inner step.
    horizon: int = 100  # Episode length cap.
    discount: float = 0.99  # gamma.
    gae_lambda: float = 1.0  # GAE lambda.
    normalize_advantages: bool = True  # Standardize advantages per task.
    estimator: str = "lvc"  # Inner objective (first order here, so both give the plain PG).
    jit_compile: bool = False  # XLA-compile the compiled steps.

    def __post_init__(self):
        _check_choice(self, "estimator", pg_losses.ESTIMATORS)
        for name in ("inner_steps", "meta_batch_size", "episodes_per_task", "horizon"):
            check_int(self, name)
        check_int(self, "anneal_steps", minimum=0)
        check_float(self, "inner_lr")
        check_float(self, "outer_step_size", high=1.0)
        check_float(self, "discount", high=1.0)
        check_float(self, "gae_lambda", low=0.0, high=1.0, low_inclusive=True)
        for name in ("normalize_advantages", "jit_compile"):
            check_bool(self, name)

    outer = "reptile"
    first_order = True


class RLTaskFamily(Protocol):
    """A task family for the gymnasium path (``PointNavTasks`` is one).

    ``sample(num_tasks, seed, split)`` returns ``num_tasks`` tasks (anything the environment's
    ``set_task`` accepts); ``make_env()`` returns an environment with ``set_task``.
    """

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> Sequence:
        ...

    def make_env(self) -> gymnasium.Env:
        ...


class Batch(NamedTuple):
    """Episodes of one sampling round with what the losses need, all constants.

    Attributes:
      episodes: ``Episodes`` of tensors ``[T, N, H, ...]``.
      advantages: ``[T, N, H]`` (``pg_losses.compute_advantages``).
      log_probs: ``[T, N, H]`` log-probabilities of the actions under the sampling parameters.
      outputs: ``[T, N, H, out]`` the sampling policy's outputs (for KLs).
      params: the task-batched sampling parameters.
    """

    episodes: Episodes
    advantages: tf.Tensor
    log_probs: tf.Tensor
    outputs: tf.Tensor
    params: list


def _fold(seed, i: int):
    return tf.random.experimental.stateless_fold_in(seed, i, alg="philox")


def _check_arg(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")



class MAMLRLLearner:
    """Meta-trains a Keras policy with MAML-TRPO or ProMP.

    The meta-parameters are the policy's trainable variables (plus, for Meta-SGD-RL, the rates):
    after training, ``policy`` is the meta-learned initialisation.

    Args:
      policy: ``gaussian_mlp_policy`` or ``categorical_mlp_policy`` (built Keras model).
      tasks: a ``PointNavTasks`` (in-graph unless ``vector_env`` is given) or any ``RLTaskFamily``.
      config: a ``MAMLRLConfig``.
      seed: base seed; iteration ``n`` samples tasks and noise from ``(seed, n)``.
      vector_env: for the gymnasium path: sub-environments from ``make_vector_env`` (default: one
        per task of the meta-batch, built from ``tasks.make_env``).
      sampler: for the gymnasium path, what collects the episodes instead of ``vector_env``: a
        ``LocalSampler`` (``keyed=True`` seeds each episode by task and index) or a ``RaySampler``
        (``metarl_tf.rollouts.ray_sampler``: environment stepping on Ray actors, the same episodes
        as the keyed local sampler).

    Example::

        learner = MAMLRLLearner(gaussian_mlp_policy(2, 2, (64, 64), "tanh"), PointNavTasks(),
                                MAMLRLConfig())
        for _ in range(100):
            metrics = learner.train(1)        # {'pre_return': ..., 'post_return': ..., 'kl': ...}
        curve = learner.evaluate(num_tasks=40, num_steps=3)   # returns after 0..3 steps, oracle
    """

    config_type = MAMLRLConfig

    def __init__(self, policy: keras.Model, tasks, config, seed: int = 0,
                 vector_env: gymnasium.vector.VectorEnv | None = None, sampler=None):
        if not isinstance(policy, keras.Model):
            raise TypeError(f"`policy` must be a keras.Model, got {type(policy).__name__}")
        if not isinstance(config, self.config_type):
            raise TypeError(f"`config` must be a {self.config_type.__name__} for "
                            f"{type(self).__name__}, got {type(config).__name__}")
        self.config = config
        self.tasks = tasks
        self.seed = int(seed)
        self.policy = policy
        self.fmodel = FunctionalModel(policy)
        self.apply_fn, self.distribution = pg_losses.resolve_policy(policy)
        self.baseline = LinearFeatureBaseline()
        if sampler is not None and not callable(getattr(sampler, "collect", None)):
            raise TypeError(f"`sampler` must have a `collect` method (LocalSampler, RaySampler), "
                            f"got {type(sampler).__name__}")
        if sampler is not None and vector_env is not None:
            raise ValueError("give `vector_env` or `sampler`, not both (a LocalSampler wraps a "
                             "vector env)")
        self.sampler = sampler
        self.in_graph = vector_env is None and sampler is None and isinstance(tasks, PointNavTasks)
        if self.in_graph:
            if self.distribution != "gaussian":
                raise ValueError("in-graph PointNav needs a Gaussian policy (gaussian_mlp_policy)")
            self.tf_env = tasks.tf_env()
        else:
            for method in ("sample", "make_env"):
                if not callable(getattr(tasks, method, None)):
                    raise TypeError(f"`tasks` must have a `{method}` method (RLTaskFamily), got "
                                    f"{type(tasks).__name__}")
            if vector_env is None and sampler is None:
                vector_env = make_vector_env(tasks.make_env, num_envs=config.meta_batch_size)
        self.vector_env = vector_env
        self.env_faults = EnvFaults()   # recovered env faults; the `env_faults` metric
        # Wall seconds of the last gymnasium-path iteration: {"sampling", "inner", "outer"}
        # (episode collection; preparation + inner steps; the outer update incl. its preparation).
        self.timings: dict = {}
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._make_extra_variables()
        self._make_outer_state()
        jit = config.jit_compile
        if self.in_graph:
            self._iteration_fn = tf.function(self._ingraph_iteration, jit_compile=jit)
        else:
            self._prepare_adapt_fn = tf.function(self._prepare_and_adapt, jit_compile=jit)
            self._prepare_fn = tf.function(self._prepare, jit_compile=jit)
            self._outer_fn = tf.function(self._outer_step, jit_compile=jit)
        self._eval_fns = {}

    # -- what subclasses vary ---------------------------------------------------------------------
    def _make_extra_variables(self) -> None:
        """Meta-parameters beyond the policy's: the update rule's (``config.update_rule``)."""
        cfg = self.config
        name = getattr(cfg, "update_rule", "sgd")
        self.extra_variables: list[tf.Variable] = update_rules.rule_variables(
            name, self.fmodel.variables, cfg.inner_lr, getattr(cfg, "rule_hidden_size", 20),
            num_context=update_rules.NUM_EPISODE_FEATURES if name == "meta_lstm" else 0,
            seed=self.seed)

    def _rule(self, extra: Sequence[tf.Tensor]) -> adaptation.UpdateRule:
        """The inner update rule given the extra meta-parameters (none for plain MAML)."""
        return update_rules.make_rule(getattr(self.config, "update_rule", "sgd"),
                                      self.config.inner_lr, extra)

    def _make_outer_state(self) -> None:
        cfg = self.config
        self.optimizer = None
        num = max(cfg.inner_steps, 1)
        self.kl_coeff = tf.Variable(tf.fill([num], float(cfg.promp_kl_coeff)), trainable=False,
                                    name="promp_kl_coeff")
        if cfg.outer == "promp":
            self.optimizer = keras.optimizers.Adam(cfg.promp_lr)
            self.optimizer.build(self.meta_variables)

    def _outer_step(self, pre: Sequence[Batch], post: Batch) -> dict:
        if self.config.outer == "trpo":
            return self._trpo_update(pre, post)
        return self._promp_update(pre, post)

    # -- public surface ---------------------------------------------------------------------------
    @property
    def meta_variables(self) -> list:
        return self.fmodel.variables + self.extra_variables

    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    def update_rule(self) -> adaptation.UpdateRule:
        """The inner-loop update rule with the current meta-parameters."""
        return self._rule(self.extra_variables)

    def checkpoint_items(self) -> dict:
        items = {"policy": self.policy, "step": self.step_counter, "kl_coeff": self.kl_coeff}
        if self.optimizer is not None:
            items["optimizer"] = self.optimizer
        if self.extra_variables:
            items["extra"] = self.extra_variables
        return items

    def inner_loss(self, params, batch: Batch) -> tf.Tensor:
        """The inner objective on one sampling round, per task ``[T]`` (``pg_losses.inner_pg_loss``
        with the batch's precomputed advantages and sampling log-probabilities)."""
        return pg_losses.inner_pg_loss(
            self.apply_fn, params, batch.episodes, estimator=self.config.estimator,
            distribution=self.distribution, advantages=batch.advantages,
            behaviour_log_probs=batch.log_probs)

    def train(self, iterations: int) -> dict[str, float]:
        """Runs ``iterations`` meta-iterations; returns the last one's metrics.

        Metrics: ``pre_return`` / ``post_return`` (mean episode return of the meta-batch before and
        after adaptation), and per outer loop: TRPO ``surrogate_before/after``, ``kl``,
        ``accepted``, ``backtracks``; ProMP ``loss``, ``kl``, ``inner_kl``, ``kl_coeff``;
        Reptile-RL ``step_size``.
        """
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"`iterations` must be an integer >= 1, got {iterations!r}")
        out = {}
        for _ in range(iterations):
            out = self._iteration_fn() if self.in_graph else self._gym_iteration()
        if not self.in_graph:
            out = {**out, "env_faults": self.env_faults.count}
        return {k: float(v) for k, v in out.items()}

    # -- sampling and adaptation ------------------------------------------------------------------
    def _theta(self) -> list:
        return [tf.convert_to_tensor(v) for v in self.meta_variables]

    def _split(self, theta):
        n = len(self.fmodel.variables)
        return list(theta[:n]), list(theta[n:])

    def _prepare(self, params, episodes: Episodes) -> Batch:
        """Advantages, sampling log-probs and outputs of freshly sampled episodes."""
        cfg = self.config
        params = [tf.stop_gradient(tf.convert_to_tensor(p)) for p in params]
        episodes = Episodes(tf.convert_to_tensor(episodes.observations, tf.float32),
                            tf.convert_to_tensor(episodes.actions),
                            tf.convert_to_tensor(episodes.rewards, tf.float32),
                            tf.convert_to_tensor(episodes.mask, tf.float32))
        adv = pg_losses.compute_advantages(episodes, cfg.discount, cfg.gae_lambda, self.baseline,
                                           cfg.normalize_advantages)
        outputs = tf.stop_gradient(self.apply_fn(params, episodes.observations))
        logp = pg_losses.log_prob(outputs, episodes.actions, self.distribution)
        return Batch(episodes, adv, logp, outputs, params)

    def _inner_update(self, params, batch: Batch, extra, first_order: bool) -> list:
        """One inner step on ``batch`` from ``params`` (``adaptation.adapt``, ``num_steps=1``)."""
        loss = lambda p: self.inner_loss(p, batch)  # noqa: E731
        rule = update_rules.bind_episodes(self._rule(extra), batch.episodes.rewards,
                                          batch.episodes.mask, batch.advantages)
        return adaptation.adapt(loss, params, rule, 1, first_order=first_order).params

    def _prepare_and_adapt(self, params, episodes, extra):
        batch = self._prepare(params, episodes)
        return batch, self._inner_update(batch.params, batch, extra, first_order=True)

    def _adapt_chain(self, theta, pre: Sequence[Batch]) -> list:
        """``[theta_0 = tile(theta), theta_1, ..., theta_K]`` recomputed from ``theta`` on the
        recorded episodes: differentiable (second order unless ``first_order``)."""
        policy, extra = self._split(theta)
        num_tasks = tf.shape(pre[0].advantages)[0] if pre else self.config.meta_batch_size
        return self._chain_from(self.fmodel.tile(policy, num_tasks), pre, extra)

    def _chain_from(self, params, pre: Sequence[Batch], extra) -> list:
        """The inner steps on ``pre`` from task-batched ``params``: ``[params, theta_1, ...]``."""
        chain = [params]
        for batch in pre:
            params = self._inner_update(params, batch, extra, self.config.first_order)
            chain.append(params)
        return chain

    def _inner_jacobian_symmetric(self, num_steps: int) -> bool:
        """Whether every task's ``d theta_K / d theta`` is symmetric: the meta-parameters are the
        policy's alone and the inner map is at most one differentiated plain-SGD step (``I -
        alpha H``), or first-order steps (``I``). Enables
        ``trpo.symmetric_gauss_newton_product``."""
        if self.extra_variables or type(self._rule([])) is not adaptation.SGD:
            return False
        return num_steps <= 1 or self.config.first_order

    def _rollout_ingraph(self, params, goals, seed, episodes_per_task, deterministic=False):
        return rollout_pointnav(self.apply_fn, params, goals, seed, episodes_per_task,
                                self.config.horizon, self.tf_env, deterministic=deterministic)

    def _ingraph_iteration(self):
        cfg = self.config
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.step_counter])
        goals = self.tasks.sample_tf(_fold(seed, 0), cfg.meta_batch_size)
        policy, extra = self._split(self._theta())
        params = self.fmodel.tile(policy, cfg.meta_batch_size)
        pre = []
        for k in range(cfg.inner_steps):
            episodes = self._rollout_ingraph(params, goals, _fold(seed, k + 1),
                                             cfg.episodes_per_task)
            batch, params = self._prepare_and_adapt(params, episodes, extra)
            pre.append(batch)
        episodes = self._rollout_ingraph(params, goals, _fold(seed, cfg.inner_steps + 1),
                                         cfg.episodes_per_task)
        metrics = self._outer_step(pre, self._prepare(params, episodes))
        self.step_counter.assign_add(1)
        return metrics

    def _gym_seed(self, *keys) -> int:
        """A 31-bit seed for NumPy/gymnasium derived from the base seed and integer ``keys``."""
        entropy = [k % 2 ** 32 for k in (self.seed, *keys)]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)

    def _collect(self, params, tasks, seed: int, episodes_per_task: int,
                 deterministic: bool = False) -> Episodes:
        if self.sampler is not None:
            return self.sampler.collect(self.apply_fn, self.distribution, params, tasks,
                                        episodes_per_task, self.config.horizon, seed,
                                        deterministic=deterministic, faults=self.env_faults,
                                        max_env_faults=getattr(self.config, "max_env_faults", 3))
        policy = policy_from_params(self.apply_fn, params, self.distribution, seed=seed,
                                    deterministic=deterministic)
        return collect_episodes(self.vector_env, policy, tasks, episodes_per_task,
                                self.config.horizon, seed=seed, faults=self.env_faults,
                                max_env_faults=getattr(self.config, "max_env_faults", 3))

    def _gym_iteration(self):
        cfg = self.config
        step = self.step
        clock = {"sampling": 0.0, "inner": 0.0, "outer": 0.0}
        t0 = time.perf_counter()
        tasks = list(self.tasks.sample(cfg.meta_batch_size, self._gym_seed(1, step, 0), "train"))
        policy, extra = self._split(self._theta())
        params = self.fmodel.tile(policy, cfg.meta_batch_size)
        pre = []
        for k in range(cfg.inner_steps):
            episodes = self._collect(params, tasks, self._gym_seed(1, step, k + 1),
                                     cfg.episodes_per_task)
            t1 = time.perf_counter()
            batch, params = self._prepare_adapt_fn(params, episodes, extra)
            pre.append(batch)
            t2 = time.perf_counter()
            clock["sampling"] += t1 - t0
            clock["inner"] += t2 - t1
            t0 = t2
        episodes = self._collect(params, tasks, self._gym_seed(1, step, cfg.inner_steps + 1),
                                 cfg.episodes_per_task)
        t1 = time.perf_counter()
        metrics = self._outer_fn(tuple(pre), self._prepare_fn(params, episodes))
        clock["sampling"] += t1 - t0
        clock["outer"] = time.perf_counter() - t1
        self.timings = clock
        self.step_counter.assign_add(1)
        return metrics

    # -- outer updates ----------------------------------------------------------------------------
    def _returns(self, pre, post):
        first = pre[0] if pre else post
        return {"pre_return": tf.reduce_mean(pg_losses.average_return(first.episodes.rewards,
                                                                     first.episodes.mask)),
                "post_return": tf.reduce_mean(pg_losses.average_return(post.episodes.rewards,
                                                                      post.episodes.mask))}

    def _post_terms(self, adapted, post: Batch):
        """Log-probs and outputs of the adapted policy on the post-adaptation episodes."""
        out = self.apply_fn(adapted, post.episodes.observations)
        return pg_losses.log_prob(out, post.episodes.actions, self.distribution), out

    def _trpo_update(self, pre, post) -> dict:
        cfg = self.config
        mask = post.episodes.mask

        def objective(theta):
            adapted = self._adapt_chain(theta, pre)[-1]
            logp, out = self._post_terms(adapted, post)
            surrogate = pg_losses.trpo_surrogate(logp, post.log_probs, post.advantages, mask)
            kl = pg_losses.mean_kl(post.outputs, out, mask, self.distribution)
            return -tf.reduce_mean(surrogate), tf.reduce_mean(kl)

        theta = self._theta()
        result = trpo_lib.trpo_step(objective, theta, cfg.max_kl, cfg.cg_iters, cfg.cg_damping,
                                    cfg.cg_residual_tol, cfg.backtrack_ratio, cfg.max_backtracks,
                                    kl_hvp=self._kl_hessian_product(theta, pre, post))
        for var, value in zip(self.meta_variables, result.params):
            var.assign(value)
        return {**self._returns(pre, post), "surrogate_before": -result.loss_before,
                "surrogate_after": -result.loss_after, "kl": result.kl,
                "accepted": tf.cast(result.accepted, tf.float32),
                "backtracks": tf.cast(result.backtracks, tf.float32)}

    def _kl_hessian_product(self, theta, pre, post):
        """``v -> (grad^2 D) v`` at ``theta`` for TRPO's conjugate gradient: the mean KL of the
        adapted policies on the first ``ceil(trpo_fvp_fraction T)`` tasks' episodes."""
        cfg = self.config
        num_tasks = post.advantages.shape[0]
        if num_tasks is None:
            num_tasks = cfg.meta_batch_size
        used = max(1, math.ceil(cfg.trpo_fvp_fraction * num_tasks - 1e-9))
        if used < num_tasks:
            pre = [tf.nest.map_structure(lambda x: x[:used], b) for b in pre]
            post = tf.nest.map_structure(lambda x: x[:used], post)
        mask, obs = post.episodes.mask, post.episodes.observations
        kl_of_outputs = lambda out: tf.reduce_mean(pg_losses.mean_kl(  # noqa: E731
            post.outputs, out, mask, self.distribution))
        kl_of = lambda adapted: kl_of_outputs(self.apply_fn(adapted, obs))  # noqa: E731
        if cfg.trpo_hvp == "exact":
            return lambda v: trpo_lib.hessian_vector_product(  # noqa: E731
                lambda th: kl_of(self._adapt_chain(th, pre)[-1]), theta, v)
        if self._inner_jacobian_symmetric(len(pre)):
            return trpo_lib.symmetric_gauss_newton_product(
                lambda tiled: self._chain_from(tiled, pre, [])[-1], kl_of_outputs, theta, used,
                output_map=lambda adapted: self.apply_fn(adapted, obs))
        return lambda v: trpo_lib.gauss_newton_vector_product(  # noqa: E731
            lambda th: self._adapt_chain(th, pre)[-1], kl_of, theta, v)

    def _promp_loss(self, theta, pre, post):
        cfg = self.config
        chain = self._adapt_chain(theta, pre)
        # Inner trust region: KL(pi_theta_k,old || pi_theta_k(theta)) on round k's episodes.
        inner_kls = [tf.reduce_mean(pg_losses.mean_kl(
            batch.outputs, self.apply_fn(params, batch.episodes.observations),
            batch.episodes.mask, self.distribution)) for params, batch in zip(chain, pre)]
        logp, out = self._post_terms(chain[-1], post)
        surrogate = tf.reduce_mean(pg_losses.clipped_surrogate(
            logp, post.log_probs, post.advantages, post.episodes.mask, cfg.promp_clip))
        inner_kl = tf.stack(inner_kls) if inner_kls else tf.zeros([0])
        penalty = tf.reduce_sum(self.kl_coeff[:len(inner_kls)] * inner_kl)
        outer_kl = tf.reduce_mean(pg_losses.mean_kl(post.outputs, out, post.episodes.mask,
                                                    self.distribution))
        return -surrogate + penalty, inner_kl, outer_kl

    def _promp_update(self, pre, post) -> dict:
        cfg = self.config
        loss = tf.constant(0.0)
        for _ in tf.range(cfg.promp_steps):
            with tf.GradientTape() as tape:
                theta = self._theta()
                tape.watch(theta)
                loss, _, _ = self._promp_loss(theta, pre, post)
            grads = tape.gradient(loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            self.optimizer.apply_gradients(zip(grads, self.meta_variables))
        _, inner_kl, outer_kl = self._promp_loss(self._theta(), pre, post)
        if cfg.promp_adaptive_kl and pre:
            num = len(pre)
            new = pg_losses.adaptive_kl_coeff(self.kl_coeff[:num], inner_kl, cfg.promp_target_kl)
            self.kl_coeff.assign(tf.concat([new, self.kl_coeff[num:]], axis=0))
        return {**self._returns(pre, post), "loss": loss, "kl": outer_kl,
                "inner_kl": tf.reduce_mean(inner_kl) if pre else tf.constant(0.0),
                "kl_coeff": self.kl_coeff[0]}

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, num_tasks: int = 40, num_steps: int = 3,
                 episodes_per_task: int | None = None, tasks=None,
                 seed: int | None = None) -> dict:
        """Average return on held-out tasks after 0..``num_steps`` inner steps.

        Each step samples fresh episodes with the current adapted parameters (as the MAML-RL test
        scripts do) and adapts with ``update_rule()`` (a fixed rate, as pytorch-maml-rl and ProMP;
        cbfinn/maml_rl halves it after the first step).

        Args:
          num_tasks: held-out tasks drawn from ``tasks.sample(num_tasks, seed, "test")`` unless
            ``tasks`` is given.
          num_steps: inner steps.
          episodes_per_task: episodes per task and step (default: the config's).
          tasks: explicit held-out tasks (e.g. ``PointNavTasks().maml_test_goals()``).
          seed: evaluation seed (default: the learner's).

        Returns:
          ``{"returns": [R_0, ..., R_num_steps], "ci95": [...], "oracle_return": float | None,
          "num_tasks": ..., "episodes_per_task": ..., "per_task": [[...], ...]}``; ``R_k`` is the
          mean episode return over tasks after ``k`` steps, ``ci95`` its 95% interval over tasks,
          ``per_task[k]`` each task's mean return after ``k`` steps (for paired comparisons),
          ``oracle_return`` the goal-aware straight-line policy's (PointNav only).
        """
        cfg = self.config
        seed = self.seed if seed is None else int(seed)
        n_ep = cfg.episodes_per_task if episodes_per_task is None else episodes_per_task
        _check_arg("episodes_per_task", n_ep)
        _check_arg("num_steps", num_steps, minimum=0)
        if tasks is None:
            _check_arg("num_tasks", num_tasks)
            tasks = self.tasks.sample(num_tasks, seed, "test")
        tasks = list(tasks)
        if self.in_graph:
            key = (len(tasks), num_steps, n_ep)
            if key not in self._eval_fns:
                self._eval_fns[key] = tf.function(
                    lambda goals, s: self._eval_ingraph(goals, s, num_steps, n_ep))
            rows, oracle = self._eval_fns[key](tf.constant(np.asarray(tasks, np.float32)),
                                               tf.constant([seed, -1], tf.int64))
            rows, oracle = rows.numpy(), float(oracle)
        else:
            rows, oracle = self._eval_gym(tasks, seed, num_steps, n_ep)
        return {"returns": [float(r.mean()) for r in rows], "ci95": [ci95(r) for r in rows],
                "oracle_return": oracle, "num_tasks": len(tasks), "episodes_per_task": n_ep,
                "per_task": [[float(x) for x in r] for r in rows]}

    def _eval_ingraph(self, goals, seed, num_steps, episodes_per_task):
        policy, extra = self._split(self._theta())
        params = self.fmodel.tile(policy, tf.shape(goals)[0])
        rows = []
        for k in range(num_steps + 1):
            episodes = self._rollout_ingraph(params, goals, _fold(seed, k), episodes_per_task)
            rows.append(pg_losses.average_return(episodes.rewards, episodes.mask))
            if k < num_steps:
                _, params = self._prepare_and_adapt(params, episodes, extra)
        oracle = rollout_pointnav_actions(pointnav_oracle(self.tf_env), goals, seed, 1,
                                          self.config.horizon, self.tf_env)
        return tf.stack(rows), tf.reduce_mean(pg_losses.average_return(oracle.rewards, oracle.mask))

    def _eval_gym(self, tasks, seed, num_steps, episodes_per_task):
        policy, extra = self._split(self._theta())
        params = self.fmodel.tile(policy, len(tasks))
        rows = []
        for k in range(num_steps + 1):
            episodes = self._collect(params, tasks, self._gym_seed(2, seed, k), episodes_per_task)
            rows.append(pg_losses.average_return(episodes.rewards, episodes.mask).numpy())
            if k < num_steps:
                _, params = self._prepare_adapt_fn(params, episodes, extra)
        oracle = None
        if isinstance(self.tasks, PointNavTasks):
            goals = tf.constant(np.asarray(tasks, np.float32))
            env = self.tasks.tf_env()
            ep = rollout_pointnav_actions(pointnav_oracle(env), goals, [seed, -1], 1,
                                          self.config.horizon, env)
            oracle = float(tf.reduce_mean(pg_losses.average_return(ep.rewards, ep.mask)))
        return np.stack(rows), oracle


class MetaSGDRLLearner(MAMLRLLearner):
    """Meta-SGD-RL (Li et al. 2017, arXiv:1707.09835): MAML-RL whose inner step uses a learned rate
    per policy parameter, ``theta' = theta + alpha (*) grad J_LVC``; ``alpha`` starts at
    ``inner_lr`` everywhere (learn2learn's ``MetaSGD`` initialisation) and is meta-trained with
    ``theta`` by the same outer loop (TRPO treats it as part of the meta-parameter vector)."""

    def _make_extra_variables(self) -> None:
        self.rates = [tf.Variable(tf.fill(v.shape, float(self.config.inner_lr)), name=f"rate_{i}")
                      for i, v in enumerate(self.fmodel.variables)]
        self.extra_variables = list(self.rates)

    def _rule(self, extra):
        return adaptation.PerParameterSGD(list(extra))


class ReptileRLLearner(MAMLRLLearner):
    """Reptile-RL (Nichol et al. 2018, arXiv:1803.02999) with policy-gradient inner steps::

        theta_i = K first-order PG steps from theta on task i (fresh episodes each step)
        theta  <- theta + epsilon (1/T sum_i theta_i - theta)

    Takes a ``ReptileRLConfig``. The post-adaptation episodes are sampled only for the logged
    ``post_return``.
    """

    config_type = ReptileRLConfig

    def _make_outer_state(self) -> None:
        self.optimizer = None  # the outer update is Reptile's interpolation

    def step_size(self) -> tf.Tensor:
        cfg = self.config
        eps = tf.constant(cfg.outer_step_size, tf.float32)
        if cfg.anneal_steps:
            frac = tf.cast(self.step_counter, tf.float32) / float(cfg.anneal_steps)
            eps = eps * tf.maximum(0.0, 1.0 - frac)
        return eps

    def _outer_step(self, pre, post) -> dict:
        eps = self.step_size()
        for var, adapted in zip(self.fmodel.variables, post.params):
            var.assign_add(eps * (tf.reduce_mean(adapted, axis=0) - var))
        return {**self._returns(pre, post), "step_size": eps}

    def checkpoint_items(self) -> dict:
        return {"policy": self.policy, "step": self.step_counter}


def pretrained_baseline(policy: keras.Model, tasks, config: MAMLRLConfig, iterations: int,
                        seed: int = 0, vector_env=None) -> MAMLRLLearner:
    """The "pretrained" baseline of the MAML paper for RL: one policy trained on all tasks jointly.

    The same outer loop with ``inner_steps=0`` (no adaptation during training), so it maximises the
    expected return over the task distribution; evaluate it like a meta-learned policy
    (``learner.evaluate``), which then fine-tunes it with the config's ``inner_lr``.
    """
    learner = MAMLRLLearner(policy, tasks, dataclasses.replace(config, inner_steps=0), seed=seed,
                            vector_env=vector_env)
    learner.train(iterations)
    return learner
