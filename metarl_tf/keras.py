"""Meta-learners as ``keras.Model``s: ``compile()`` and ``fit()`` on ``tf.data`` task datasets.

``MetaModel`` wraps any Keras network and an algorithm config. Its ``train_step`` is the library
learner's meta-step -- ``learner.grads(batch, scale)`` then ``learner.apply(grads)`` -- on a meta-batch
read from the dataset instead of sampled in the step; its ``test_step`` is ``learner.meta_loss``. There
is no second implementation of MAML here: the learner (``metarl_tf.algorithms``) does the math, Keras
does the loop, the callbacks, the progress bar and the distribution::

    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, "relu"),
                            keras.layers.Dense(40, "relu"), keras.layers.Dense(1)])
    meta = MetaModel(net, MAMLConfig(inner_lr=0.01))
    meta.compile(optimizer=keras.optimizers.Adam(1e-3))            # the outer optimiser
    meta.fit(task_dataset(SinusoidTasks(), 25, 10, 10), steps_per_epoch=1000, epochs=10,
             validation_data=task_dataset(SinusoidTasks(), 25, 10, 10, seed=1, num_batches=20),
             callbacks=[keras.callbacks.EarlyStopping(monitor="val_query_loss", patience=2)])
    meta.export("exports", name="sinusoid")                         # adaptable SavedModel

Metrics (epoch means, as Keras reports any metric): ``loss`` and ``query_loss``, both the mean
post-adaptation query MSE (the meta-loss; ``loss`` so that callbacks' default ``monitor`` works),
and ``support_loss``, the mean pre-adaptation support MSE. Validation adds ``val_`` to each.

Algorithms: ``MAMLConfig`` (``first_order=True`` is FOMAML), ``MetaSGDConfig`` (the learned rates are
trainable weights of the MetaModel, so ``save_weights``, ``ModelCheckpoint`` and
``BackupAndRestore`` hold them), ``ReptileConfig`` (its own outer update; compile it without an
optimizer).

Distribution: build and compile the MetaModel inside ``strategy.scope()``. Keras splits each
dataset element's leading axis -- the task axis -- across replicas; each replica meta-learns on its
tasks with its loss scaled by ``1 / replicas`` (as ``MAMLLearner.grads(batch, scale)``), and the
gradients (Reptile: its update direction) are summed across replicas, so an update equals the
single-device one.
"""
from __future__ import annotations

import dataclasses
import warnings

import keras
import tensorflow as tf

from metarl_tf import adaptation, evaluation
from metarl_tf import tasks as task_families
from metarl_tf.adaptable import AdaptableRegressor
from metarl_tf.algorithms.maml import MAMLConfig, MAMLLearner
from metarl_tf.algorithms.metasgd import MetaSGDConfig, MetaSGDLearner
from metarl_tf.algorithms.reptile import ReptileConfig, ReptileLearner
from metarl_tf.core import RegressionTaskDistribution, TaskBatch
from metarl_tf.params import mse
from metarl_tf.tasks.datasets import KEYS, SEED_KEY, check_task_dataset
from metarl_tf.tasks.regression import sample_task_batch

# Most specific first: MetaSGDConfig is a MAMLConfig.
_LEARNERS = ((MetaSGDConfig, MetaSGDLearner), (MAMLConfig, MAMLLearner),
             (ReptileConfig, ReptileLearner))
_CONFIGS = {cls.__name__: cls for cls, _ in _LEARNERS}
EXPORT_FORMAT = "adaptable_saved_model"


@keras.saving.register_keras_serializable(package="metarl_tf")
class MetaModel(keras.Model):
    """A network plus a meta-learning algorithm, trained with ``compile()`` / ``fit()``.

    Args:
      network: a built Keras model mapping ``[N, *input_shape]`` to ``[N, *output_shape]`` (give it a
        ``keras.Input``). Its variables are the meta-parameters; after ``fit``, ``network(x)`` (and
        ``meta_model(x)``) is the meta-learned initialisation.
      config: ``MAMLConfig``, ``MetaSGDConfig`` or ``ReptileConfig``. The inner-loop fields
        (``inner_steps``, ``inner_lr``, ``first_order``, rates, Reptile's step size and annealing)
        drive the step; ``meta_lr`` is the default optimiser's rate; ``jit_compile`` and
        ``steps_per_execution`` are ``compile``'s defaults. The dataset, not the config, decides the
        meta-batch and shot sizes (build it from ``config.meta_batch_size`` etc. to keep them equal).
      seed: seeds what the learner would seed (Meta-SGD's initial rates), as ``MAMLLearner(seed=)``.
      tasks: a ``RegressionTaskDistribution`` to sample meta-batches from INSIDE the compiled step,
        for datasets of task seeds (``metarl_tf.tasks.datasets.seed_dataset``): the fast path for
        built-in task families, where ``config`` gives the meta-batch and shot sizes, exactly as
        ``MAMLLearner(network, tasks, config)`` samples them. None: the dataset holds the tensors.
      **kwargs: ``keras.Model`` arguments (``name``).
    """

    def __init__(self, network: keras.Model, config, seed: int = 0,
                 tasks: RegressionTaskDistribution | None = None, **kwargs):
        super().__init__(**kwargs)
        if tasks is not None and not isinstance(tasks, RegressionTaskDistribution):
            raise TypeError("`tasks` must implement RegressionTaskDistribution "
                            "(input_dim, output_dim, sample_task_params, sample_inputs, evaluate) "
                            f"or be None, got {type(tasks).__name__}")
        self.tasks = tasks
        learner_cls = next((lc for cc, lc in _LEARNERS if isinstance(config, cc)), None)
        if learner_cls is None:
            raise TypeError("`config` must be a MAMLConfig, MetaSGDConfig or ReptileConfig, got "
                            f"{type(config).__name__}")
        if getattr(config, "rule_meta_lr", None) is not None:
            raise ValueError("`rule_meta_lr` is not supported by MetaModel: its one Keras "
                             "optimizer (compile) updates every weight; use the learner, or None")
        self.network = network
        self.config = config
        self.seed = int(seed)
        # The learner does the math; ``tasks=None``: meta-batches come from the dataset.
        if learner_cls is ReptileLearner:
            learner = learner_cls(network, None, config, seed=seed)
        else:
            # Keras' optimizer (``compile``) replaces this placeholder; SGD has no slot variables.
            learner = learner_cls(network, None, config, seed=seed,
                                  optimizer=keras.optimizers.SGD(0.0))
        # The learner's own state becomes Keras weights, so save_weights / ModelCheckpoint /
        # BackupAndRestore hold it: the meta-step count (Reptile anneals on it) and Meta-SGD's rates.
        self.meta_step = self.add_weight(name="meta_step", shape=(), dtype="int64",
                                         initializer="zeros", trainable=False,
                                         aggregation="only_first_replica")
        learner.step_counter = self.meta_step
        if isinstance(learner, MetaSGDLearner):
            rates = []
            for i, rate in enumerate(learner.rates):
                weight = self.add_weight(name=f"inner_rate_{i}", shape=tuple(rate.shape),
                                         dtype=rate.dtype.name, initializer="zeros")
                weight.assign(rate)
                rates.append(weight)
            learner.rates = rates
            learner.extra_variables = list(rates)
        elif learner.extra_variables:
            raise NotImplementedError(f"{learner_cls.__name__} has meta-parameters beyond the "
                                      "network's that MetaModel does not know how to hold")
        self._learner = learner
        self._trackers = [keras.metrics.Mean(name=n) for n in ("loss", "query_loss", "support_loss")]
        self._replica_jit = False
        self._train_spec = None  # element spec of the last fit()'s dataset
        self._train_infinite = False  # whether that dataset is infinite
        self.built = True

    # -- what the learner provides ----------------------------------------------------------------
    @property
    def learner(self) -> MAMLLearner:
        """The library learner whose ``grads`` / ``apply`` / ``meta_loss`` this model runs."""
        return self._learner

    @property
    def fmodel(self):
        return self._learner.fmodel

    def update_rule(self) -> adaptation.UpdateRule:
        """The inner-loop rule with the current meta-parameters (e.g. Meta-SGD's learned rates)."""
        return self._learner.update_rule()

    @property
    def metrics(self):
        return list(self._trackers)

    def call(self, inputs, training=False):
        """The meta-learned network's prediction (before any adaptation)."""
        return self.network(inputs, training=training)

    # -- Keras ------------------------------------------------------------------------------------
    def compile(self, optimizer="default", *, jit_compile=None, steps_per_execution=None,
                loss=None, metrics=None, **kwargs):
        """Configures meta-training. Keras' ``compile``, with these differences:

        Args:
          optimizer: the outer optimiser (any Keras optimiser or name). ``"default"``:
            ``Adam(config.meta_lr)`` (None for Reptile, whose outer update is its own and which
            takes no optimiser).
          jit_compile: XLA for the meta-step; None = ``config.jit_compile``. Under a strategy with
            several replicas, XLA compiles each replica's meta-gradient and Keras' step runs
            without it (XLA cannot span replicas).
          steps_per_execution: meta-steps per compiled call; None = ``config.steps_per_execution``.
            Under a strategy with several replicas it is 1 (with a warning): Keras' multi-step
            loop fails there (keras-team/keras#19246).
          loss, metrics (and loss_weights, weighted_metrics): must be None -- the loss is the
            algorithm's meta-loss.
          **kwargs: other ``keras.Model.compile`` arguments (``run_eagerly``).
        """
        extra = {k: kwargs.pop(k, None) for k in ("loss_weights", "weighted_metrics")}
        if loss is not None or metrics is not None or any(v is not None for v in extra.values()):
            raise ValueError("MetaModel's loss is the algorithm's meta-loss (post-adaptation query "
                             "MSE): compile it without `loss`, `metrics`, `loss_weights` or "
                             "`weighted_metrics`")
        reptile = isinstance(self._learner, ReptileLearner)
        if isinstance(optimizer, str) and optimizer == "default":
            optimizer = None if reptile else keras.optimizers.Adam(self.config.meta_lr)
        if reptile and optimizer is not None:
            raise ValueError("ReptileConfig has its own outer update (theta += epsilon (mean W - "
                             "theta), epsilon = outer_step_size): compile it with optimizer=None")
        if not reptile and optimizer is None:
            raise ValueError(f"{type(self.config).__name__} needs an outer `optimizer`")
        jit = self.config.jit_compile if jit_compile is None else jit_compile
        spe = self.config.steps_per_execution if steps_per_execution is None else steps_per_execution
        if kwargs.get("run_eagerly"):
            jit = False
        replicas = self.distribute_strategy.num_replicas_in_sync
        self._replica_jit = False
        if replicas > 1:
            self._replica_jit, jit = bool(jit), False
            if spe != 1:
                warnings.warn(f"steps_per_execution={spe} is reduced to 1 under a strategy with "
                              f"{replicas} replicas (Keras' multi-step loop fails there, "
                              "keras-team/keras#19246)", stacklevel=2)
                spe = 1
        super().compile(optimizer=optimizer, jit_compile=jit, steps_per_execution=spe, **kwargs)
        if not reptile:
            self._learner.optimizer = self.optimizer
        self._replica_grads = tf.function(self._learner.grads, jit_compile=True)
        self._replica_meta_loss = tf.function(self._learner.meta_loss, jit_compile=True)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        return {k: v for k, v in config.items()
                if k in ("optimizer", "run_eagerly", "steps_per_execution", "jit_compile")}

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        batch = self._batch(data)
        replicas = self.distribute_strategy.num_replicas_in_sync
        grads_fn = self._replica_grads if self._replica_jit else self._learner.grads
        # Each replica holds 1/replicas of the tasks: scaling its mean loss by 1/replicas makes the
        # replica-summed gradient the gradient of the mean over the whole meta-batch.
        query_loss, support_loss, grads = grads_fn(batch, 1.0 / replicas)
        if isinstance(self._learner, ReptileLearner):
            self._apply_direction(grads)
        else:
            self._learner.apply(grads)  # the Keras optimizer: it sums grads across replicas
        self.meta_step.assign_add(1)
        return self._update_trackers(query_loss, support_loss)

    def make_train_function(self, force=False):
        """Keras' multi-step loop, fused: ``steps_per_execution`` meta-steps in ONE compiled call.

        Keras' own loop calls the compiled ``train_step`` once per step from a graph loop that
        fetches each batch as it goes; on a step as small as a sinusoid meta-step (~0.7 ms) that
        took ~35% more CPU time per step than this loop, in one measurement. Here a graph loop first
        fetches up to ``steps_per_execution`` elements (meta-batches, or task seeds) into a buffer,
        then one (XLA) function runs ``train_step`` on each in order, as the learner's own loop runs
        its meta-steps: the same steps, callbacks and logs as Keras' loop. With task seeds the
        buffer is ``steps`` pairs of int64 and the sampling runs in that XLA function, so the whole
        execution is the learner's loop.

        An infinite dataset is read a whole execution at a time: ``fit`` hands Keras
        ``x.batch(steps_per_execution)`` (the same elements, in order), and one ``get_next`` fills
        the buffer. A graph ``get_next`` costs some 50-130 us of CPU however small the element
        (measured on this machine), which one per meta-step made a sixth of a sinusoid meta-step.

        Used on one replica with static dataset shapes (``fit`` records them); otherwise, and for
        ``train_on_batch``, Keras' loop runs.
        """
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if self._fuses():
            self.train_function = self._fused_train_function(self._train_spec,
                                                             self.steps_per_execution,
                                                             self.train_function)
        return self.train_function

    def _fuses(self) -> bool:
        """Whether ``fit`` runs the fused train function (see ``make_train_function``)."""
        spec = self._train_spec
        return (self.distribute_strategy.num_replicas_in_sync == 1 and not self.run_eagerly
                and self.steps_per_execution > 1 and spec is not None
                and all(s.shape.is_fully_defined() for s in spec.values()))

    def _fused_train_function(self, spec, steps, keras_function):
        keys = sorted(spec)

        def run_steps(count, batches):
            logs = {m.name: tf.zeros([]) for m in self._trackers}
            for i in tf.range(count):
                logs = self.train_step({key: batches[key][i] for key in keys})
            return logs

        run_steps = tf.function(run_steps, jit_compile=self.jit_compile)

        @tf.function
        def fetch_and_run(iterator):
            if self._train_infinite:
                # Never runs out, and ``fit`` batched it by ``steps``: one read per execution.
                batches = iterator.get_next()
                return tf.constant(steps), run_steps(tf.constant(steps), batches)
            # Rows not written (the data ran out) stay zeros and are not run (count says so).
            buffers = {key: tf.TensorArray(spec[key].dtype, size=steps,
                                           element_shape=spec[key].shape) for key in keys}
            count = tf.constant(0)
            for _ in tf.range(steps):
                element = iterator.get_next_as_optional()
                if not element.has_value():
                    break
                value = element.get_value()
                buffers = {key: buffers[key].write(count, value[key]) for key in keys}
                count += 1
            return count, run_steps(count, {key: b.stack() for key, b in buffers.items()})

        def train_function(iterator):
            if not isinstance(iterator, tf.data.Iterator):  # e.g. train_on_batch's batches
                return keras_function(iterator)
            count, logs = fetch_and_run(iterator)
            if int(count) == 0:
                raise StopIteration
            return logs

        return train_function

    def test_step(self, data):
        batch = self._batch(data)
        loss_fn = self._replica_meta_loss if self._replica_jit else self._learner.meta_loss
        query_loss, support_loss = loss_fn(batch)
        return self._update_trackers(query_loss, support_loss)

    def _update_trackers(self, query_loss, support_loss):
        loss, query, support = self._trackers
        loss.update_state(query_loss)
        query.update_state(query_loss)
        support.update_state(support_loss)
        return {m.name: m.result() for m in self._trackers}

    def _apply_direction(self, direction):
        """Reptile's update from the replica-summed direction.

        ``ReptileLearner.apply`` writes the variables itself, which under several replicas must
        happen once, in cross-replica context, with the summed direction (as the learner's own
        distributed loop does).
        """
        context = tf.distribute.get_replica_context()
        if self.distribute_strategy.num_replicas_in_sync == 1 or context is None:
            self._learner.apply(direction)
            return
        direction = context.all_reduce(tf.distribute.ReduceOp.SUM, direction)

        def update(strategy, summed):
            # All replicas hold the same sum after the all-reduce: use the first one's.
            self._learner.apply([strategy.experimental_local_results(d)[0] for d in summed])

        context.merge_call(update, args=(direction,))

    def fit(self, x=None, y=None, **kwargs):
        """Keras' ``fit`` on a task dataset (see ``metarl_tf.tasks.datasets``).

        ``x`` (and ``validation_data``) must be ``tf.data.Dataset``s of meta-batch dicts; they are
        checked against the network before anything runs. ``y`` must be None (the targets are in
        the dataset). ``shuffle`` defaults to False (a dataset is shuffled by tf.data, if at all).
        An infinite dataset needs ``steps_per_epoch`` (and ``validation_steps``).
        """
        self._check_data(x, y, "x", kwargs.get("steps_per_epoch"), "steps_per_epoch")
        if kwargs.get("validation_split"):
            raise ValueError("`validation_split` needs arrays; pass a task dataset as "
                             "`validation_data`")
        if kwargs.get("validation_data") is not None:
            self._check_data(kwargs["validation_data"], None, "validation_data",
                             kwargs.get("validation_steps"), "validation_steps")
        kwargs.setdefault("shuffle", False)
        self._set_monitor_modes(kwargs.get("callbacks"))
        if self._train_infinite and self._fuses():
            # One read per execution (see make_train_function): the same elements, in order.
            x = x.batch(self.steps_per_execution, drop_remainder=True)
        return super().fit(x, y, **kwargs)

    def _set_monitor_modes(self, callbacks) -> None:
        """``mode="min"`` for callbacks on ``mode="auto"`` that monitor one of our metrics.

        Keras infers the direction only for ``loss`` and compiled metrics, and raises for others
        (``EarlyStopping(monitor="val_query_loss")``); all of MetaModel's metrics are losses.
        """
        names = {m.name for m in self._trackers}
        for callback in callbacks or []:
            monitor = getattr(callback, "monitor", None)
            if (getattr(callback, "mode", None) == "auto" and isinstance(monitor, str)
                    and monitor.removeprefix("val_") in names):
                callback.mode = "min"

    def evaluate(self, x=None, y=None, **kwargs):
        """Keras' ``evaluate`` on a task dataset: post- and pre-adaptation loss."""
        if not kwargs.get("_use_cached_eval_dataset"):
            self._check_data(x, y, "x", kwargs.get("steps"), "steps")
        return super().evaluate(x, y, **kwargs)

    def _check_data(self, data, y, name, steps, steps_name):
        if y is not None:
            raise ValueError("MetaModel reads targets from the task dataset ('support_y', "
                             "'query_y'); `y` must be None")
        if not isinstance(data, tf.data.Dataset):
            raise ValueError(f"`{name}` must be a tf.data.Dataset of meta-batches (build one with "
                             "metarl_tf.tasks.datasets.task_dataset or from_task_batches); got "
                             f"{type(data).__name__}")
        model = self.network
        input_shape = output_shape = None
        if getattr(model, "inputs", None) and len(model.inputs) == 1:
            input_shape = tuple(model.inputs[0].shape[1:])
            output_shape = tuple(model.outputs[0].shape[1:])
        element_spec = data.element_spec
        if isinstance(element_spec, dict) and SEED_KEY in element_spec:
            # Task seeds: check what the step will sample from them, as if it were the dataset.
            fed = {SEED_KEY: element_spec[SEED_KEY]}
            spec = self._sampled_spec(element_spec[SEED_KEY], name)
            check_task_dataset(tf.data.Dataset.from_tensors(
                {k: tf.zeros(s.shape, s.dtype) for k, s in spec.items()}), input_shape,
                output_shape, name=f"{name} (as sampled from `tasks`)")
        else:
            fed = spec = check_task_dataset(data, input_shape, output_shape, name=name)
        infinite = int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
        if name == "x" and steps_name == "steps_per_epoch":
            # The fused train function is built for one element spec and cardinality.
            if fed != self._train_spec or infinite != self._train_infinite:
                self.train_function = None
            self._train_spec, self._train_infinite = fed, infinite
        for key in KEYS:
            if spec[key].dtype != self.fmodel.dtype:
                raise ValueError(f"`{name}` element {key!r} has dtype {spec[key].dtype.name} but "
                                 f"the network's variables are {self.fmodel.dtype.name}")
        if input_shape is None:  # a subclassed network: let it say whether the widths fit
            x = keras.KerasTensor((None,) + tuple(spec["support_x"].shape[2:]),
                                  dtype=spec["support_x"].dtype.name)
            try:
                out = model.compute_output_spec(x)
            except Exception as e:  # noqa: BLE001 -- re-raised with the element named
                raise ValueError(f"`{name}` element 'support_x' {spec['support_x'].shape} does not "
                                 f"fit the network: {e}") from e
            if tuple(out.shape[1:]) != tuple(spec["support_y"].shape[2:]):
                raise ValueError(f"`{name}` element 'support_y' {spec['support_y'].shape} does not "
                                 f"match the network's output shape {tuple(out.shape[1:])}")
        tasks = spec["support_x"].shape[0]
        replicas = self.distribute_strategy.num_replicas_in_sync
        if tasks is not None and tasks % replicas:
            raise ValueError(f"`{name}` meta-batches hold {tasks} tasks (axis 0 of 'support_x'), "
                             f"which do not split evenly over {replicas} replicas")
        if infinite and steps is None:
            raise ValueError(f"`{name}` is an infinite task dataset: pass `{steps_name}`")

    def _sampled_spec(self, seed_spec, name) -> dict:
        """The element spec of the meta-batch the step samples from a ``task_seed`` element."""
        if self.tasks is None:
            raise ValueError(f"`{name}` yields task seeds ({SEED_KEY!r}) but this MetaModel has no "
                             "task distribution to sample from: build it with "
                             "MetaModel(network, config, tasks=...), or feed meta-batches "
                             "(task_dataset, from_task_batches)")
        if (not isinstance(seed_spec, tf.TensorSpec) or seed_spec.dtype != tf.int64
                or seed_spec.shape != (2,)):
            raise ValueError(f"`{name}` element {SEED_KEY!r} must be an int64 tensor of shape [2] "
                             f"(a stateless seed, as seed_dataset yields), got {seed_spec}")
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas > 1:
            raise ValueError(f"`{name}` yields task seeds, which run on one replica; under a "
                             f"strategy with {replicas} replicas feed meta-batches (task_dataset), "
                             "which Keras splits along the task axis")
        cfg, tasks, dtype = self.config, self.tasks, tf.float32  # what the task families sample
        shapes = {"support_x": (cfg.num_support, tasks.input_dim),
                  "support_y": (cfg.num_support, tasks.output_dim),
                  "query_x": (cfg.num_query, tasks.input_dim),
                  "query_y": (cfg.num_query, tasks.output_dim)}
        return {k: tf.TensorSpec((cfg.meta_batch_size,) + shape, dtype)
                for k, shape in shapes.items()}

    def _batch(self, data) -> TaskBatch:
        """A dataset element as a TaskBatch: the tensors it holds, or sampled from its seed."""
        if isinstance(data, (tuple, list)) and len(data) == 1:  # Keras may wrap x as (x,)
            data = data[0]
        if SEED_KEY in data:
            # What MAMLLearner._sample draws at the same seed: the same tasks, in the same step.
            cfg = self.config
            batch = sample_task_batch(self.tasks, data[SEED_KEY], cfg.meta_batch_size,
                                      cfg.num_support, cfg.num_query)
            return batch._replace(task_params=None)
        return TaskBatch(*(data[k] for k in KEYS), task_params=None)

    # -- adaptation and export ----------------------------------------------------------------------
    def adapt(self, support_x, support_y, query_x, num_steps: int = 1):
        """Predictions at ``query_x`` after ``num_steps`` inner steps on one task's support set.

        ``support_x`` ``[K, *input_shape]`` etc. (one task); the same ``adaptation.adapt`` as training
        and the exported ``adapt`` signature.
        """
        f = self.fmodel
        sx = tf.convert_to_tensor(support_x, f.dtype)[None]
        sy = tf.convert_to_tensor(support_y, f.dtype)[None]
        loss = lambda p: mse(f.apply_batched(p, sx), sy)
        adapted = adaptation.adapt(loss, f.tile(f.params(), 1), self.update_rule(), num_steps)
        return f.apply_batched(adapted.params, tf.convert_to_tensor(query_x, f.dtype)[None])[0]

    def adaptation_curve(self, tasks, num_tasks: int = 600, num_support: int | None = None,
                         num_query: int = 100, num_steps: int = 10, seed: int | None = None) -> dict:
        """Held-out adaptation curve: ``evaluation.adaptation_curve``, as ``learner.evaluate``."""
        return evaluation.adaptation_curve(
            self.fmodel, self.fmodel.params(), tasks, self.update_rule(), num_tasks=num_tasks,
            num_support=self.config.num_support if num_support is None else num_support,
            num_query=num_query,
            num_steps=num_steps, seed=self.seed if seed is None else seed)

    def export(self, filepath, format: str = EXPORT_FORMAT, *, max_num_steps: int = 1000,
               extra_metadata: dict | None = None, **kwargs) -> str:
        """Writes the adaptable SavedModel that ``metarl export`` writes (one exporter underneath).

        This deliberately overrides ``keras.Model.export(filepath, format="tf_saved_model", ...)``:
        the default here is ``format="adaptable_saved_model"``, ``metarl_tf.adaptable.
        AdaptableRegressor`` with its ``serving_default`` and ``adapt`` signatures, saved by its own
        ``save`` -- the module and the call ``metarl export`` (``export.saved_model.export_learner``)
        makes. Any other ``format`` (``"tf_saved_model"``, ``"onnx"``, ...) is passed to Keras'
        ``export`` of the network: the meta-learned initialisation without adaptation.

        For TF Serving's ``<base>/<name>/<version>/`` layout (what ``metarl export --to base --name
        name`` writes), call ``export.saved_model.export_learner(meta_model, base, name)``: the
        layout is the ``export`` package's, which the library does not import.

        Args:
          filepath: the SavedModel directory to write.
          max_num_steps: the largest ``num_steps`` the ``adapt`` signature accepts.
          extra_metadata: merged into ``assets.extra/metarl_tf.json`` (after ``export_metadata()``).

        Returns:
          The SavedModel directory written.

        Example::

            path = meta_model.export("sinusoid_model")
            m = tf.saved_model.load(path)                               # TensorFlow alone
            y = m.signatures["adapt"](support_x=xs, support_y=ys, query_x=xq,
                                      num_steps=tf.constant(5))["y"]
        """
        if format != EXPORT_FORMAT:
            return self.network.export(filepath, format=format, **kwargs)
        if "name" in kwargs or "version" in kwargs:
            raise ValueError("MetaModel.export writes one SavedModel directory; for the "
                             "<base>/<name>/<version> layout call "
                             "export.saved_model.export_learner(meta_model, base, name, version=)")
        if kwargs:
            raise ValueError(f"unexpected arguments for format={EXPORT_FORMAT!r}: {sorted(kwargs)}")
        module = AdaptableRegressor(self.fmodel, self.fmodel.params(), self.update_rule(),
                                    max_num_steps=max_num_steps)
        module.save(str(filepath), {**self.export_metadata(), **(extra_metadata or {})})
        return str(filepath)

    def export_metadata(self) -> dict:
        """What an export of this model records about its training (``assets.extra``)."""
        return {"algorithm": type(self.config).__name__,
                "meta_steps": int(self.meta_step.numpy()), "trained_with": "keras_fit"}

    # -- serialisation (model.save / ModelCheckpoint(save_weights_only=False)) ----------------------
    def get_config(self):
        config = {"name": self.name, "seed": self.seed,
                  "network": keras.saving.serialize_keras_object(self.network),
                  "algorithm": type(self.config).__name__,
                  "algorithm_config": dataclasses.asdict(self.config)}
        # A library task family (a frozen dataclass in metarl_tf.tasks) is saved by name and fields;
        # any other one is not serialisable here: pass it again to the reloaded model's `tasks`.
        tasks = self.tasks
        if (tasks is not None and dataclasses.is_dataclass(tasks)
                and getattr(task_families, type(tasks).__name__, None) is type(tasks)):
            config["tasks"] = {"class": type(tasks).__name__, "config": dataclasses.asdict(tasks)}
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        algorithm = _CONFIGS[config.pop("algorithm")]
        fields = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in config.pop("algorithm_config").items()}
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        tasks = config.pop("tasks", None)
        if tasks is not None:
            tasks = getattr(task_families, tasks["class"])(**{
                k: tuple(v) if isinstance(v, list) else v for k, v in tasks["config"].items()})
        return cls(network, algorithm(**fields), tasks=tasks, **config)

