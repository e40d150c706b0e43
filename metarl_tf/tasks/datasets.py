"""Task datasets: meta-batches of support/query data as a ``tf.data.Dataset``, for ``keras.Model.fit``.

Every element is one meta-batch, a dict of four float tensors with a leading task axis ``T``::

    {"support_x": [T, K, *input_shape],  "support_y": [T, K, *output_shape],
     "query_x":   [T, Q, *input_shape],  "query_y":   [T, Q, *output_shape]}

(``input_shape`` is ``(d_in,)`` for a regressor: ``[T, K, d_in]``.) ``K`` support points per task feed
the inner loop, ``Q`` query points score the adapted model. This is ``metarl_tf.core.TaskBatch``
without ``task_params`` (never shown to a learner), as a dict because Keras reads a tuple element as
``(x, y, sample_weight)``.

Two ways to get one:

* ``task_dataset(tasks, ...)`` samples a ``RegressionTaskDistribution``: element ``i`` is
  ``sample_task_batch(tasks, (seed, i), ...)``, the batch a ``MAMLLearner`` with the same seed (and
  ``jit_compile``) samples at meta-step ``i``;
* ``from_task_batches(data, meta_batch_size)`` wraps episodes you already have (your own few-shot
  data): arrays or a dataset, one task or one meta-batch per element, dicts, tuples or ``TaskBatch``.

``check_task_dataset`` is the structure check both of them and ``MetaModel.fit`` apply.

The fast path for a built-in task family is a third kind, ``seed_dataset(seed)``: element ``i`` is only
the stateless seed ``{"task_seed": (seed, i)}``, and ``MetaModel(network, config, tasks=...)``
samples the meta-batch from it inside its compiled step, as the library learner does -- so the
pipeline moves 16 bytes per meta-step instead of a meta-batch, and sampling is part of the XLA step.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from metarl_tf.core import RegressionTaskDistribution, TaskBatch
from metarl_tf.tasks.regression import sample_task_batch

KEYS = ("support_x", "support_y", "query_x", "query_y")
SEED_KEY = "task_seed"  # the one key of a seed_dataset element

EXPECTED = ("{'support_x': [tasks, K, *input_shape], 'support_y': [tasks, K, *output_shape], "
            "'query_x': [tasks, Q, *input_shape], 'query_y': [tasks, Q, *output_shape]} "
            "(float tensors)")


def task_dataset(tasks: RegressionTaskDistribution, meta_batch_size: int, num_support: int,
                 num_query: int, seed: int = 0, num_batches: int | None = None,
                 jit_compile: bool = True, block_size: int = 64) -> tf.data.Dataset:
    """A dataset of meta-batches sampled from a task distribution, reproducible element by element.

    Element ``i`` is ``sample_task_batch(tasks, (seed, i), meta_batch_size, num_support, num_query)``
    without its ``task_params``: the meta-batch a learner with the same ``seed`` and ``jit_compile``
    samples at meta-step ``i``. A finite dataset yields the same tasks on every pass (every epoch).

    Sampling a meta-batch is a few dozen tiny ops; one by one in tf.data they cost more CPU than a
    sinusoid meta-step. With ``jit_compile`` the elements are sampled ``block_size`` at a time by one
    XLA call (still each with its own seed ``(seed, i)``) and then split, which makes the pipeline
    nearly free. XLA's Philox stream differs from TensorFlow's kernels (``metarl_tf.core``), so the
    two settings give different, equally valid, task streams.

    Args:
      tasks: a ``RegressionTaskDistribution`` (pure TensorFlow, so sampling runs in tf.data).
      meta_batch_size: tasks per element (the leading axis).
      num_support, num_query: points per task for the inner loop and for the meta-loss.
      seed: base seed (an int).
      num_batches: number of elements; None = infinite (give ``fit`` a ``steps_per_epoch``).
      jit_compile: sample under XLA, in blocks (the stream of a ``jit_compile=True`` learner);
        False: TensorFlow's kernels, one element per call (the stream of a ``jit_compile=False``
        learner, and of ``sample_task_batch`` called eagerly).
      block_size: elements per XLA call when ``jit_compile``.

    Returns:
      A ``tf.data.Dataset`` of dicts ``{"support_x", "support_y", "query_x", "query_y"}``, prefetched.

    Example::

        train = task_dataset(SinusoidTasks(), 25, 10, 10, seed=0)                  # infinite
        val = task_dataset(SinusoidTasks(), 25, 10, 10, seed=1, num_batches=20)    # finite
        meta_model.fit(train, steps_per_epoch=1000, epochs=10, validation_data=val)
    """
    if not isinstance(tasks, RegressionTaskDistribution):
        raise TypeError("`tasks` must implement RegressionTaskDistribution "
                        "(input_dim, output_dim, sample_task_params, sample_inputs, evaluate)")
    for name, value in (("meta_batch_size", meta_batch_size), ("num_support", num_support),
                        ("num_query", num_query), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"`num_batches` must be an integer >= 1 or None, got {num_batches!r}")
    if not isinstance(jit_compile, bool):
        raise ValueError(f"`jit_compile` must be True or False, got {jit_compile!r}")
    base = tf.constant(seed, tf.int64)

    def sample(i):
        batch = sample_task_batch(tasks, tf.stack([base, i]), meta_batch_size, num_support,
                                  num_query)
        return {key: getattr(batch, key) for key in KEYS}

    if not jit_compile:
        indices = (tf.data.Dataset.counter() if num_batches is None
                   else tf.data.Dataset.range(num_batches))
        return indices.map(sample).prefetch(tf.data.AUTOTUNE)

    spec = {key: tf.TensorSpec(t.shape, t.dtype) for key, t in tf.nest.map_structure(
        tf.convert_to_tensor, sample(tf.constant(0, tf.int64))).items()}

    @tf.function(jit_compile=True)
    def sample_block(first):
        # A loop, not a Python unroll, so that compile time does not grow with block_size.
        return tf.map_fn(sample, first + tf.range(block_size, dtype=tf.int64),
                         fn_output_signature=spec)

    blocks = tf.data.Dataset.counter() if num_batches is None else tf.data.Dataset.range(
        -(-num_batches // block_size))
    dataset = blocks.map(lambda b: sample_block(b * block_size)).unbatch()
    if num_batches is not None:
        dataset = dataset.take(num_batches).apply(tf.data.experimental.assert_cardinality(
            num_batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def seed_dataset(seed: int = 0, num_batches: int | None = None) -> tf.data.Dataset:
    """Task seeds for sampling inside the compiled step: ``{"task_seed": (seed, i)}`` for ``i = 0, 1, ..``

    ``MetaModel(network, config, tasks=tasks)`` turns element ``i`` into
    ``sample_task_batch(tasks, (seed, i), config.meta_batch_size, config.num_support,
    config.num_query)`` inside its (XLA) train step: the meta-batch ``MAMLLearner(network, tasks,
    config, seed=seed)`` samples at meta-step ``i``, and, under XLA, ``task_dataset(tasks, ...,
    seed=seed)``'s element ``i``. Nothing but two int64 per meta-step passes through tf.data, which
    makes this the fastest way to ``fit()`` on a built-in task family (see docs/KERAS.md).

    Args:
      seed: base seed (an int).
      num_batches: number of elements; None = infinite (give ``fit`` a ``steps_per_epoch``). A finite
        dataset yields the same seeds, so the same tasks, on every pass.

    Returns:
      A ``tf.data.Dataset`` of dicts ``{"task_seed": int64 [2]}``.

    Example::

        meta = MetaModel(mlp(1, 1), MAMLConfig(), tasks=SinusoidTasks())
        meta.compile()
        meta.fit(seed_dataset(seed=0), steps_per_epoch=1000, epochs=10,
                 validation_data=seed_dataset(seed=1, num_batches=20))
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"`num_batches` must be an integer >= 1 or None, got {num_batches!r}")
    base = tf.constant(seed, tf.int64)
    indices = (tf.data.Dataset.counter() if num_batches is None
               else tf.data.Dataset.range(num_batches))
    # Made 256 at a time and split: a map per element costs ~80 us of CPU here, the split ~nothing.
    seeds = indices.batch(256).map(
        lambda i: {SEED_KEY: tf.stack([tf.fill(tf.shape(i), base), i], axis=1)}).unbatch()
    if num_batches is not None:
        seeds = seeds.apply(tf.data.experimental.assert_cardinality(num_batches))
    return seeds.prefetch(tf.data.AUTOTUNE)


def from_task_batches(data, meta_batch_size: int | None = None,
                      drop_remainder: bool = True) -> tf.data.Dataset:
    """Wraps your own few-shot episodes in the task-dataset structure.

    Args:
      data: a ``tf.data.Dataset``, or in-memory arrays with a leading task axis (converted to
        float32). Elements (or the arrays) may be dicts with the four keys (other keys are
        dropped), ``TaskBatch`` tuples or ``(support_x, support_y, query_x, query_y)`` tuples.
      meta_batch_size: when given, every dataset element (every row of the arrays) is ONE task,
        ``support_x`` ``[K, *input_shape]``, and consecutive tasks are batched into meta-batches of
        this size. When None, every dataset element already is a meta-batch
        ``[tasks, K, *input_shape]``. Arrays need it.
      drop_remainder: drop a last, smaller meta-batch (keeps shapes static, which XLA prefers and
        a sharded meta-batch needs).

    Returns:
      A ``tf.data.Dataset`` of dicts ``{"support_x", "support_y", "query_x", "query_y"}``, checked
      with ``check_task_dataset``.

    Example (5-shot episodes of your own data, 10 query points each)::

        episodes = {"support_x": xs, "support_y": ys, "query_x": xq, "query_y": yq}  # [N, 5, d] ...
        train = from_task_batches(episodes, meta_batch_size=16).repeat()
    """
    if meta_batch_size is not None and (isinstance(meta_batch_size, bool)
                                        or not isinstance(meta_batch_size, int)
                                        or meta_batch_size < 1):
        raise ValueError("`meta_batch_size` must be an integer >= 1 or None, got "
                         f"{meta_batch_size!r}")
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        # Plain restructuring, nothing for AutoGraph to convert.
        as_dict = tf.autograph.experimental.do_not_convert(_as_dict)
        if isinstance(spec, (Mapping, TaskBatch)):
            dataset = data.map(as_dict)
        elif isinstance(spec, tuple) and len(spec) == 4:  # tf.data unpacks a plain tuple into args
            dataset = data.map(lambda *parts: as_dict(parts))
        else:
            _as_dict(spec)  # raises, describing the structure
    else:
        if meta_batch_size is None:
            raise ValueError("`meta_batch_size` is required when `data` holds arrays (one task per "
                             "row)")
        dataset = tf.data.Dataset.from_tensor_slices(
            {k: tf.convert_to_tensor(v, tf.float32) for k, v in _as_dict(data).items()})
    if meta_batch_size is not None:
        dataset = dataset.batch(meta_batch_size, drop_remainder=drop_remainder)
    check_task_dataset(dataset)
    return dataset


def check_task_dataset(dataset, input_shape: Sequence[int] | None = None,
                       output_shape: Sequence[int] | None = None, name: str = "dataset") -> dict:
    """Checks that ``dataset`` yields meta-batches in the task-dataset structure (see module doc).

    Only the static ``element_spec`` is read; nothing is iterated.

    Args:
      dataset: a ``tf.data.Dataset`` (or a ``tf.distribute`` distributed dataset).
      input_shape, output_shape: the model's per-example shapes (e.g. ``(1,)``); when given, the
        trailing dimensions of ``*_x`` / ``*_y`` must match them.
      name: what to call the dataset in error messages (e.g. ``"validation_data"``).

    Returns:
      The element spec of the four keys.

    Raises:
      ValueError: naming the element key at fault and the expected structure.
    """
    spec = getattr(dataset, "element_spec", None)
    if spec is None:
        raise ValueError(f"`{name}` must be a tf.data.Dataset of meta-batches {EXPECTED}; "
                         f"got {type(dataset).__name__}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"`{name}` elements must be dicts {EXPECTED}; got elements of structure "
                         f"{_describe(spec)}. Wrap tuples or TaskBatch elements with "
                         "metarl_tf.tasks.datasets.from_task_batches")
    missing = [k for k in KEYS if k not in spec]
    if missing:
        raise ValueError(f"`{name}` elements lack {', '.join(repr(k) for k in missing)}: each "
                         f"element must be a meta-batch {EXPECTED}; got keys {sorted(spec)}")
    for key in KEYS:
        s = spec[key]
        if not isinstance(s, tf.TensorSpec):
            raise ValueError(f"`{name}` element {key!r} must be a dense tensor, got {s}; expected "
                             f"{EXPECTED}")
        if not s.dtype.is_floating:
            raise ValueError(f"`{name}` element {key!r} has dtype {s.dtype.name}; expected "
                             f"{EXPECTED}")
        if s.shape.rank is None or s.shape.rank < 3:
            raise ValueError(f"`{name}` element {key!r} has shape {s.shape}, not [tasks, points, "
                             f"*features]; expected {EXPECTED}")
    _check_agree(spec, name, "support_x", "support_y", 1, "support points K")
    _check_agree(spec, name, "query_x", "query_y", 1, "query points Q")
    for key in KEYS[1:]:
        _check_agree(spec, name, "support_x", key, 0, "tasks")
    for x_key, y_key in (("support_x", "query_x"), ("support_y", "query_y")):
        if spec[x_key].shape[2:] != spec[y_key].shape[2:]:
            raise ValueError(f"`{name}` elements {x_key!r} {spec[x_key].shape} and {y_key!r} "
                             f"{spec[y_key].shape} disagree on the feature shape; expected "
                             f"{EXPECTED}")
    for keys, want, what in ((("support_x", "query_x"), input_shape, "input"),
                             (("support_y", "query_y"), output_shape, "output")):
        if want is None:
            continue
        want = tf.TensorShape(list(want))
        for key in keys:
            got = spec[key].shape[2:]
            if not got.is_compatible_with(want):
                raise ValueError(
                    f"`{name}` element {key!r} has feature shape {got} (element shape "
                    f"{spec[key].shape}) but the model's {what} shape is {want}: expected "
                    f"{EXPECTED} with {what}_shape={tuple(want)}")
    return {k: spec[k] for k in KEYS}


def _check_agree(spec, name, a, b, axis, what):
    da, db = spec[a].shape[axis], spec[b].shape[axis]
    if da is not None and db is not None and da != db:
        raise ValueError(f"`{name}` elements {a!r} {spec[a].shape} and {b!r} {spec[b].shape} "
                         f"disagree on axis {axis} ({what}); expected {EXPECTED}")


def _as_dict(element) -> dict:
    """A dict / TaskBatch / 4-tuple element -> dict of the four keys (float32 for integer data)."""
    if isinstance(element, Mapping):
        missing = [k for k in KEYS if k not in element]
        if missing:
            raise ValueError(f"episode elements lack {', '.join(repr(k) for k in missing)}; "
                             f"expected {EXPECTED}; got keys {sorted(element)}")
        out = {k: element[k] for k in KEYS}
    elif isinstance(element, TaskBatch):
        out = {k: getattr(element, k) for k in KEYS}
    elif isinstance(element, (tuple, list)) and len(element) == 4:
        out = dict(zip(KEYS, element))
    else:
        raise ValueError(f"episode elements must be dicts with keys {KEYS}, TaskBatch tuples or "
                         f"(support_x, support_y, query_x, query_y) tuples; got "
                         f"{_describe(element)}")
    return out


def _describe(structure) -> str:
    if isinstance(structure, tf.TypeSpec):
        return str(structure)
    if isinstance(structure, (tuple, list)):
        kind = type(structure).__name__
        return f"{kind} of {len(structure)}"
    return type(structure).__name__
