"""MAML and first-order MAML (Finn et al. 2017, arXiv:1703.03400) for supervised task families.

For a meta-batch of tasks ``T_i`` with support set ``S_i`` and query set ``Q_i``::

    theta_i' = theta - alpha * grad_theta L_S_i(theta)              (inner loop, k steps)
    theta   <- Adam(theta, grad_theta  1/B sum_i L_Q_i(theta_i'))   (outer loop)

Second order by default: the outer gradient flows through ``grad_theta L_S_i``. First order (FOMAML)
treats the inner gradients as constants. The whole meta-step -- task sampling, inner loop over all
tasks at once (batched parameters, no Python loop over tasks), meta-gradient and optimiser update --
is one ``tf.function`` (XLA when ``jit_compile``), and ``steps_per_execution`` meta-steps run per call.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from metarl_tf import adaptation, evaluation, update_rules
from metarl_tf._checks import check_bool, check_float, check_int
from metarl_tf.core import RegressionTaskDistribution
from metarl_tf.params import FunctionalModel, mse
from metarl_tf.tasks.regression import sample_task_batch


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """MAML settings; defaults are the MAML paper's sinusoid run (section 5.1)."""

    meta_batch_size: int = 25  # Tasks per meta-step.
    num_support: int = 10  # K: support points per task (the "shots").
    num_query: int = 10  # Query points per task for the meta-loss.
    inner_steps: int = 1  # Inner SGD steps during meta-training.
    inner_lr: float = 0.01  # Inner SGD rate alpha (paper: 0.01; cbfinn/maml flag default: 0.001).
    first_order: bool = False  # FOMAML: stop gradients through the inner gradients.
    meta_lr: float = 1e-3  # Adam learning rate of the outer loop.
    jit_compile: bool = True  # Compile the meta-step with XLA (changes the sampled task stream).
    steps_per_execution: int = 50  # Meta-steps per compiled call (amortises dispatch).
    update_rule: str = "sgd"  # Inner rule, one of update_rules.RULES: "sgd" (MAML), "metasgd"
    # (learned per-parameter rates, all starting at inner_lr), "meta_lstm" (the learned Meta-LSTM
    # rule of Ravi & Larochelle 2017; its input gate starts at rate inner_lr).
    rule_hidden_size: int = 20  # Meta-LSTM: hidden units of the coordinate-wise LSTM (R&L: 20).
    query_every_step: bool = False  # Meta-loss = mean query loss after each of the inner steps
    # (Andrychowicz et al. 2016's sum over steps, w_t = 1) instead of after the last one (MAML).
    rule_meta_lr: float | None = None  # Adam rate of the update rule's own weights (Meta-SGD's
    # rates, the Meta-LSTM's weights), a second optimiser; None: one Adam at meta_lr for all.

    def __post_init__(self):
        for name in ("meta_batch_size", "num_support", "num_query", "steps_per_execution"):
            check_int(self, name)
        check_int(self, "inner_steps", minimum=0)
        check_float(self, "inner_lr")
        check_float(self, "meta_lr")
        check_bool(self, "first_order")
        check_bool(self, "jit_compile")
        update_rules.check_rule(self, "update_rule")
        update_rules.check_hidden_size(self, "rule_hidden_size")
        check_bool(self, "query_every_step")
        if self.rule_meta_lr is not None:
            check_float(self, "rule_meta_lr")
        if self.update_rule == "meta_lstm" and self.inner_lr >= 1.0:
            raise ValueError("`inner_lr` must be < 1 with update_rule='meta_lstm' (it is the "
                             f"initial value of a sigmoid input gate), got {self.inner_lr!r}")


class MAMLLearner:
    """Meta-trains a Keras model with MAML / FOMAML on a regression task distribution.

    The meta-parameters are the model's own trainable variables: after training, ``model(x)`` is the
    meta-learned initialisation. The inner loop never writes to the model.

    Args:
      model: a built Keras model mapping ``[N, d_in]`` to ``[N, d_out]``.
      tasks: a ``RegressionTaskDistribution``, or None when meta-batches come from elsewhere
        (``metarl_tf.keras.MetaModel`` feeds a ``tf.data`` pipeline to ``grads`` / ``apply``);
        ``train`` and ``evaluate`` then raise, as there is nothing to sample from.
      config: a ``MAMLConfig``.
      seed: base seed; meta-step ``n`` samples its tasks with the stateless seed ``(seed, n)``.
      optimizer: outer optimiser (default: ``keras.optimizers.Adam(config.meta_lr)``).
      strategy: a ``tf.distribute`` strategy whose scope ``model`` was built in. With more than
        one replica, every replica samples the same meta-batch and meta-learns on its own slice of
        ``meta_batch_size / replicas`` tasks; the meta-gradients are summed across replicas, so the
        update equals the single-device one.

    Example::

        learner = MAMLLearner(mlp(1, 1), SinusoidTasks(), MAMLConfig())
        for _ in range(200):
            metrics = learner.train(steps=50)          # {'query_loss': ..., 'support_loss': ...}
        curve = learner.evaluate()                      # MSE after 0..10 steps on 600 new tasks
    """

    def __init__(self, model: keras.Model, tasks: RegressionTaskDistribution, config: MAMLConfig,
                 seed: int = 0, optimizer: keras.optimizers.Optimizer | None = None,
                 strategy: tf.distribute.Strategy | None = None):
        if tasks is not None and not isinstance(tasks, RegressionTaskDistribution):
            raise TypeError("`tasks` must implement RegressionTaskDistribution "
                            "(input_dim, output_dim, sample_task_params, sample_inputs, evaluate)")
        self.config = config
        self.tasks = tasks
        self.seed = int(seed)
        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.num_replicas = self.strategy.num_replicas_in_sync
        # With tasks=None, whoever feeds the meta-batches shards and checks them (MetaModel.fit).
        if tasks is not None and config.meta_batch_size % self.num_replicas:
            raise ValueError(f"`meta_batch_size` ({config.meta_batch_size}) must be divisible by the "
                             f"number of replicas ({self.num_replicas})")
        with self.strategy.scope():
            self.fmodel = FunctionalModel(model)
            self.model = model
            self._make_extra_variables(seed)
            self.optimizer = self._make_optimizer(optimizer)
            self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        signature = [tf.TensorSpec([], tf.int32)]
        if strategy is None:
            # The whole loop -- sampling, inner loop, meta-gradient, update -- is one XLA function.
            self._train_fn = tf.function(self._train_loop, jit_compile=config.jit_compile,
                                         input_signature=signature)
        else:
            # XLA cannot span replicas: compile each replica's gradient, reduce and apply outside.
            self._replica_grads_fn = tf.function(self._replica_grads, jit_compile=config.jit_compile)
            self._train_fn = tf.function(self._distributed_train_loop, input_signature=signature)
        self._train_concrete = None  # the traced _train_fn, called directly after the first call
        self._step_counts = {}  # int -> the int32 scalar tensor train passes (made once each)

    # -- what subclasses vary -------------------------------------------------------------------
    def _make_extra_variables(self, seed: int) -> None:
        """Meta-parameters beyond the network's: the update rule's (``config.update_rule``)."""
        cfg = self.config
        self.extra_variables: list[tf.Variable] = update_rules.rule_variables(
            getattr(cfg, "update_rule", "sgd"), self.fmodel.variables, cfg.inner_lr,
            getattr(cfg, "rule_hidden_size", 20), seed=seed)

    def _make_optimizer(self, optimizer):
        optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(self.config.meta_lr)
        rule_lr = getattr(self.config, "rule_meta_lr", None)
        self.rule_optimizer = None
        if rule_lr is not None and self.extra_variables:
            # The rule's weights get their own Adam (Adam is invariant to a gradient's scale, so a
            # different rate needs a different optimiser, not scaled gradients).
            self.rule_optimizer = keras.optimizers.Adam(rule_lr)
            self.rule_optimizer.build(self.extra_variables)
            optimizer.build(self.fmodel.variables)
        else:
            optimizer.build(self.meta_variables)
        return optimizer

    def update_rule(self) -> adaptation.UpdateRule:
        """The inner-loop update rule with the current meta-parameters."""
        return update_rules.make_rule(getattr(self.config, "update_rule", "sgd"),
                                      self.config.inner_lr, self.extra_variables)

    def grads(self, batch, scale=1.0):
        """``(query_loss, support_loss, grads)`` for a batch: what ``apply`` turns into an update.

        ``grads`` are summed across replicas before ``apply``; ``scale`` is ``1 / replicas``.
        """
        with tf.GradientTape() as tape:
            loss, pre = self.meta_loss(batch)
            scaled = loss * scale
        return loss, pre, tape.gradient(scaled, self.meta_variables)

    def apply(self, grads) -> None:
        """Updates the meta-parameters from (replica-summed) ``grads``."""
        if getattr(self, "rule_optimizer", None) is not None:
            n = len(self.fmodel.variables)
            self.optimizer.apply_gradients(zip(grads[:n], self.fmodel.variables))
            self.rule_optimizer.apply_gradients(zip(grads[n:], self.extra_variables))
            return
        self.optimizer.apply_gradients(zip(grads, self.meta_variables))

    # -- the meta-step --------------------------------------------------------------------------
    @property
    def meta_variables(self) -> list:
        return self.fmodel.variables + self.extra_variables

    @property
    def step(self) -> int:
        return int(self.step_counter.numpy())

    def meta_loss(self, batch):
        """Post-adaptation query loss averaged over the meta-batch, and the pre-adaptation support loss."""
        cfg = self.config
        params = self.fmodel.tile(self.fmodel.variables, tf.shape(batch.support_x)[0])
        support_loss = lambda p: mse(self.fmodel.apply_batched(p, batch.support_x), batch.support_y)
        every = cfg.query_every_step and cfg.inner_steps > 0
        adapted = adaptation.adapt(support_loss, params, self.update_rule(), cfg.inner_steps,
                                   first_order=cfg.first_order, keep_trajectory=every)
        if every:
            query_loss = tf.add_n([mse(self.fmodel.apply_batched(p, batch.query_x), batch.query_y)
                                   for p in adapted.trajectory]) / len(adapted.trajectory)
        else:
            query_loss = mse(self.fmodel.apply_batched(adapted.params, batch.query_x),
                             batch.query_y)
        pre = adapted.support_loss if adapted.support_loss is not None else support_loss(params)
        return tf.reduce_mean(query_loss), tf.reduce_mean(pre)

    def _step_seed(self):
        return tf.stack([tf.constant(self.seed, tf.int64), self.step_counter])

    def _sample(self, seed):
        cfg = self.config
        return sample_task_batch(self.tasks, seed, cfg.meta_batch_size, cfg.num_support,
                                 cfg.num_query)

    def _train_loop(self, steps):
        loss = pre = tf.constant(float("nan"))
        for _ in tf.range(steps):
            loss, pre, grads = self.grads(self._sample(self._step_seed()))
            self.apply(grads)
            self.step_counter.assign_add(1)
        return {"query_loss": loss, "support_loss": pre}

    def _replica_grads(self, seed, replica_id):
        local = self.config.meta_batch_size // self.num_replicas
        rows = tf.range(local) + tf.cast(replica_id, tf.int32) * local
        batch = tf.nest.map_structure(lambda t: tf.gather(t, rows), self._sample(seed))
        return self.grads(batch, scale=1.0 / self.num_replicas)

    def _distributed_train_loop(self, steps):
        loss = pre = tf.constant(float("nan"))
        mean, total = tf.distribute.ReduceOp.MEAN, tf.distribute.ReduceOp.SUM
        for _ in tf.range(steps):
            seed = self._step_seed()
            per_replica = self.strategy.run(lambda s: self._replica_grads_fn(
                s, tf.distribute.get_replica_context().replica_id_in_sync_group), args=(seed,))
            loss_r, pre_r, grads_r = per_replica
            grads = [self.strategy.reduce(total, g, axis=None) for g in grads_r]
            self.apply(grads)
            self.step_counter.assign_add(1)
            loss = self.strategy.reduce(mean, loss_r, axis=None)
            pre = self.strategy.reduce(mean, pre_r, axis=None)
        return {"query_loss": loss, "support_loss": pre}

    def train(self, steps: int) -> dict[str, float]:
        """Runs ``steps`` meta-steps; returns the last one's metrics.

        Metrics: ``query_loss`` (mean post-adaptation query MSE, the meta-loss) and ``support_loss``
        (mean pre-adaptation support MSE).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}")
        self._require_tasks("train")
        out = {}
        done = 0
        while done < steps:
            n = min(self.config.steps_per_execution, steps - done)
            out = self._call_train_fn(n)
            done += n
        return {k: float(v) for k, v in out.items()}

    def _call_train_fn(self, n: int) -> dict:
        """One compiled call of ``n`` meta-steps. The first call goes through the ``tf.function``
        (it traces, and the optimizer builds its variables); later calls go straight to the traced
        function: the ``tf.function`` dispatch (binding arguments, looking up the trace) costs a
        sizeable part of a one-meta-step call on one CPU thread (``benchmarks/maml_sinusoid.py``)."""
        if n not in self._step_counts:
            self._step_counts[n] = tf.constant(n, tf.int32)
        if self._train_concrete is None:
            out = self._train_fn(self._step_counts[n])
            self._train_concrete = self._train_fn.get_concrete_function()
            return out
        return self._train_concrete(self._step_counts[n])

    def evaluate(self, num_tasks: int = 600, num_query: int = 100, num_steps: int = 10,
                 num_support: int | None = None, seed: int | None = None,
                 split: str = "test") -> dict:
        """Adaptation curve on held-out tasks of ``split`` ("test" or "validation"); see
        ``metarl_tf.evaluation.adaptation_curve``."""
        self._require_tasks("evaluate")
        return evaluation.adaptation_curve(
            self.fmodel, self.fmodel.params(), self.tasks, self.update_rule(), num_tasks=num_tasks,
            num_support=self.config.num_support if num_support is None else num_support,
            num_query=num_query,
            num_steps=num_steps, seed=self.seed if seed is None else seed, split=split)

    def _require_tasks(self, method: str) -> None:
        if self.tasks is None:
            raise ValueError(f"`{method}` samples from the learner's task distribution, but it was "
                             "built with tasks=None; pass a RegressionTaskDistribution")

    def checkpoint_items(self) -> dict:
        items = {"model": self.model, "step": self.step_counter}
        if self.optimizer is not None:
            items["optimizer"] = self.optimizer
        if self.extra_variables:
            items["extra"] = self.extra_variables
        if getattr(self, "rule_optimizer", None) is not None:
            items["rule_optimizer"] = self.rule_optimizer
        return items
