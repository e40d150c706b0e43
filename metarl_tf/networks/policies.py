"""Stochastic MLP policies as Keras models, and the distribution math as pure functions.

The policies of MAML-RL (Finn et al. 2017, arXiv:1703.03400) and ProMP (Rothfuss et al. 2018,
arXiv:1810.06784): a Gaussian MLP whose mean depends on the observation and whose log standard
deviation is a free, state-independent parameter vector (initial std 1, minimum std 1e-6, as in
cbfinn/maml_rl ``maml_minimal_gauss_mlp_policy.py``), and a categorical MLP that outputs logits.

Both are ordinary Keras models, so ``FunctionalModel`` evaluates them with explicit, task-batched
parameters and the inner loop adapts them like any other model. The Gaussian policy outputs
``concat([mean, log_std])`` (``[N, 2 * act_dim]``); ``split_gaussian`` takes it apart. Its log-std
lives in a small ``GaussianHead`` layer, which ``FunctionalModel``'s dense fast path does not know,
so ``policy_apply_fn(model)`` gives a batched-matmul function for it (``gaussian_policy_apply``) and
falls back to ``FunctionalModel.apply_batched`` for anything else.

Distribution math, with ``sigma = exp(log_std)`` and sums over the action dimensions::

    log pi(a)        = sum_i [ -(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2 ]
    H[pi]            = sum_i [ log sigma_i + log(2 pi e) / 2 ]
    KL(pi_0 || pi_1) = sum_i [ log(sigma1_i / sigma0_i)
                               + (sigma0_i^2 + (mu0_i - mu1_i)^2) / (2 sigma1_i^2) - 1/2 ]

    categorical, p = softmax(logits):
    log pi(a) = log p_a,   H = -sum_a p_a log p_a,   KL(p || q) = sum_a p_a (log p_a - log q_a)
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from metarl_tf.params import FunctionalModel

_LOG_2PI = math.log(2.0 * math.pi)


# -- models --------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="metarl_tf")
class GaussianHead(keras.layers.Layer):
    """Appends a state-independent log-std to a mean: ``[..., a] -> [..., 2a]``.

    Args:
      init_log_std: initial value of every log-std entry (0 = std 1, the MAML-RL default).
      min_std: the output log-std is ``max(log_std, log(min_std))`` (rllab's ``min_std``); the
        stored parameter itself is not clipped.
    """

    def __init__(self, init_log_std: float = 0.0, min_std: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if not math.isfinite(init_log_std):
            raise ValueError(f"`init_log_std` must be finite, got {init_log_std!r}")
        if not (math.isfinite(min_std) and min_std > 0):
            raise ValueError(f"`min_std` must be a finite number > 0, got {min_std!r}")
        self.init_log_std = float(init_log_std)
        self.min_std = float(min_std)

    def build(self, input_shape):
        self.log_std = self.add_weight(
            shape=(int(input_shape[-1]),), initializer=keras.initializers.Constant(self.init_log_std),
            name="log_std")

    def call(self, mean):
        log_std = keras.ops.maximum(self.log_std, math.log(self.min_std))
        log_std = keras.ops.broadcast_to(keras.ops.cast(log_std, mean.dtype), keras.ops.shape(mean))
        return keras.ops.concatenate([mean, log_std], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * input_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "init_log_std": self.init_log_std, "min_std": self.min_std}


def _mlp_layers(x, hidden, activation, seed, prefix="dense"):
    for i, width in enumerate(hidden):
        x = keras.layers.Dense(int(width), activation=activation,
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
                               bias_initializer="zeros", name=f"{prefix}_{i}")(x)
    return x


def _check_sizes(**sizes):
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")


def gaussian_mlp_policy(obs_dim: int, act_dim: int, hidden: Sequence[int] = (100, 100),
                        activation: str = "relu", init_log_std: float = 0.0, min_std: float = 1e-6,
                        seed: int = 0, name: str = "gaussian_mlp_policy") -> keras.Model:
    """A diagonal Gaussian policy: MLP mean, state-independent learned log-std.

    Defaults are the MAML-RL launchers' (cbfinn/maml_rl): hidden ``(100, 100)`` ReLU, initial std 1,
    minimum std 1e-6. ProMP and pytorch-maml-rl use ``(64, 64)`` tanh.

    Args:
      obs_dim, act_dim: observation and action sizes.
      hidden: hidden layer widths.
      activation: hidden activation (any Keras activation name).
      init_log_std: initial log standard deviation.
      min_std: lower bound applied to the output std.
      seed: initializer seed (Glorot-uniform kernels, zero biases).

    Returns:
      A built functional Keras model ``[N, obs_dim] -> [N, 2 * act_dim]`` (``concat([mean,
      log_std])``); its trainable variables are the Dense kernels and biases in order, then the
      ``[act_dim]`` log-std.
    """
    _check_sizes(obs_dim=obs_dim, act_dim=act_dim)
    if any(isinstance(h, bool) or int(h) < 1 for h in hidden):
        raise ValueError(f"`hidden` widths must all be >= 1, got {tuple(hidden)}")
    inputs = keras.Input((obs_dim,), name="observation")
    x = _mlp_layers(inputs, hidden, activation, seed)
    mean = keras.layers.Dense(act_dim, kernel_initializer=keras.initializers.GlorotUniform(
        seed=seed + len(hidden)), bias_initializer="zeros", name="mean")(x)
    out = GaussianHead(init_log_std, min_std, name="log_std")(mean)
    return keras.Model(inputs, out, name=name)


def categorical_mlp_policy(obs_dim: int, num_actions: int, hidden: Sequence[int] = (100, 100),
                           activation: str = "relu", seed: int = 0,
                           name: str = "categorical_mlp_policy") -> keras.Model:
    """A categorical policy: an MLP ``[N, obs_dim] -> [N, num_actions]`` of logits.

    A plain chain of ``Dense`` layers, so ``FunctionalModel`` takes its dense fast path.
    """
    _check_sizes(obs_dim=obs_dim, num_actions=num_actions)
    if any(isinstance(h, bool) or int(h) < 1 for h in hidden):
        raise ValueError(f"`hidden` widths must all be >= 1, got {tuple(hidden)}")
    layers = [keras.Input((obs_dim,), name="observation")]
    for i, width in enumerate(list(hidden) + [num_actions]):
        last = i == len(hidden)
        layers.append(keras.layers.Dense(
            int(width), activation=None if last else activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
            bias_initializer="zeros", name="logits" if last else f"dense_{i}"))
    return keras.Sequential(layers, name=name)


# -- batched evaluation with explicit parameters ----------------------------------------------------
def _embedding(width: int, total: int, start: int, dtype) -> tf.Tensor:
    """The constant ``[width, total]`` 0/1 matrix that places ``width`` features at columns
    ``start .. start + width - 1`` (its transpose selects them back)."""
    m = np.zeros((width, total), np.float64)
    m[np.arange(width), start + np.arange(width)] = 1.0
    return tf.constant(m, dtype)


def split_gaussian(output: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``concat([mean, log_std])`` ``[..., 2a]`` -> ``(mean, log_std)``, each ``[..., a]``.

    The halves are taken by products with constant 0/1 selection matrices rather than slices:
    the values are the same (``x * 1 + y * 0 = x`` for finite ``y``), and unlike a slice --
    whose gradient under XLA is an ``XlaDynamicUpdateSlice`` that has no gradient itself -- a
    matmul stays differentiable to any order, which TRPO's KL Hessian products through the inner
    step need when XLA-compiled.
    """
    act_dim = output.shape[-1] // 2
    rows = 2 * act_dim
    take_mean = tf.transpose(_embedding(act_dim, rows, 0, output.dtype))      # [2a, a]
    take_std = tf.transpose(_embedding(act_dim, rows, act_dim, output.dtype))
    return (tf.tensordot(output, take_mean, axes=1), tf.tensordot(output, take_std, axes=1))


def gaussian_policy_apply(params: Sequence[tf.Tensor], observations: tf.Tensor,
                          activation: str | Callable = "relu", min_std: float = 1e-6) -> tf.Tensor:
    """The output of ``gaussian_mlp_policy`` for task-batched parameters, by batched matmuls.

    Args:
      params: ``[k_0, b_0, ..., k_L, b_L, log_std]`` with a leading task axis ``T`` on each
        (the order of the model's ``trainable_variables``).
      observations: ``[T, ..., obs_dim]`` (any number of axes between task and features).
      activation: the hidden activation (the output layer is linear).
      min_std: lower bound on the std, as in ``GaussianHead``.

    Returns:
      ``[T, ..., 2 * act_dim]`` = ``concat([mean, log_std])``, equal to the model's output.
    """
    params = list(params)
    if len(params) < 3 or len(params) % 2 == 0:
        raise ValueError("`params` must be [kernel, bias] pairs followed by log_std, got "
                         f"{len(params)} tensors")
    act = keras.activations.get(activation)
    obs = tf.convert_to_tensor(observations)
    lead = tf.shape(obs)[:-1]
    h = tf.reshape(obs, [tf.shape(obs)[0], -1, obs.shape[-1]])      # [T, M, obs_dim]
    layers = [(params[i], params[i + 1]) for i in range(0, len(params) - 1, 2)]
    for i, (kernel, bias) in enumerate(layers):
        h = tf.matmul(h, kernel) + bias[:, None, :]
        if i < len(layers) - 1:
            h = act(h)
    log_std = tf.maximum(params[-1], math.log(min_std))[:, None, :]   # [T, 1, a]
    # concat([h, log_std]) as products with 0/1 embeddings (exact; XLA-differentiable to any
    # order, see split_gaussian).
    a = h.shape[-1]
    out = (tf.tensordot(h, _embedding(a, 2 * a, 0, h.dtype), axes=1)
           + tf.tensordot(tf.broadcast_to(log_std, tf.shape(h)), _embedding(a, 2 * a, a, h.dtype),
                          axes=1))
    return tf.reshape(out, tf.concat([lead, [2 * a]], axis=0))


# NumPy mirrors of Keras activations: the same formula as the TF kernel, in float32. Only these are
# mirrored; a policy with any other activation has no NumPy forward (``numpy_apply`` is None).
_NUMPY_ACTIVATIONS = {
    keras.activations.linear: lambda x: x,
    keras.activations.relu: lambda x: np.maximum(x, np.float32(0.0)),
    keras.activations.tanh: np.tanh,
    # sigmoid(x) = (1 + tanh(x / 2)) / 2: the same function, without exp overflow for large -x.
    keras.activations.sigmoid: lambda x: np.float32(0.5) * (np.float32(1.0) + np.tanh(
        np.float32(0.5) * x)),
    keras.activations.elu: lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    keras.activations.softplus: lambda x: np.logaddexp(np.float32(0.0), x),
    keras.activations.silu: lambda x: x * (np.float32(0.5) * (np.float32(1.0) + np.tanh(
        np.float32(0.5) * x))),
}


class GaussianPolicyApply:
    """``apply(params, observations)`` of a ``gaussian_mlp_policy``, in TF and (optionally) NumPy.

    Calling it is ``gaussian_policy_apply`` with the model's activation and ``min_std``.
    ``numpy_apply`` is the same forward pass in NumPy float32 (``gaussian_policy_apply_numpy``),
    or ``None`` when the activation has no NumPy mirror; the gymnasium sampler uses it to act
    without one TensorFlow call per environment step (``policy_from_params``).

    Attributes:
      activation: the hidden activation (a Keras activation function).
      min_std: lower bound on the std.
    """

    def __init__(self, activation, min_std: float):
        self.activation = keras.activations.get(activation)
        self.min_std = float(min_std)
        self._numpy_activation = _NUMPY_ACTIVATIONS.get(self.activation)

    def __call__(self, params, observations):
        return gaussian_policy_apply(params, observations, self.activation, self.min_std)

    @property
    def numpy_apply(self):
        """``(params, obs) -> (mean, log_std)`` on NumPy arrays, or ``None`` (no mirror)."""
        if self._numpy_activation is None:
            return None
        return lambda params, obs: _numpy_mean_log_std(params, obs, self._numpy_activation,
                                                       self.min_std)


def _numpy_mean_log_std(params, observations, activation, min_std):
    """Mean ``[T, M, a]`` and log-std ``[T, a]`` of the Gaussian MLP, NumPy float32."""
    h = np.asarray(observations, np.float32)                     # [T, M, obs_dim]
    num_layers = (len(params) - 1) // 2
    for i in range(num_layers):
        h = np.matmul(h, params[2 * i]) + params[2 * i + 1][:, None, :]
        if i < num_layers - 1:
            h = activation(h)
    log_std = np.maximum(params[-1], np.float32(math.log(min_std)))
    return h.astype(np.float32, copy=False), log_std.astype(np.float32, copy=False)


def gaussian_policy_apply_numpy(params: Sequence[np.ndarray], observations: np.ndarray,
                                activation: str | Callable = "relu",
                                min_std: float = 1e-6) -> np.ndarray:
    """``gaussian_policy_apply`` in NumPy: the same math on host arrays, no TensorFlow op.

    Supported activations: linear, relu, tanh, sigmoid, elu, softplus, silu/swish (each the same
    formula as Keras' kernel; results agree with the TF forward to float32 rounding, ~1e-6).

    Args:
      params: ``[k_0, b_0, ..., k_L, b_L, log_std]``, each with a leading task axis ``T``.
      observations: ``[T, M, obs_dim]``.
      activation: the hidden activation.
      min_std: lower bound on the std.

    Returns:
      ``[T, M, 2 * act_dim]`` float32, ``concat([mean, log_std])``.

    Raises:
      ValueError: an activation without a NumPy mirror, or a malformed parameter list.
    """
    params = [np.asarray(p, np.float32) for p in params]
    if len(params) < 3 or len(params) % 2 == 0:
        raise ValueError("`params` must be [kernel, bias] pairs followed by log_std, got "
                         f"{len(params)} arrays")
    fn = _NUMPY_ACTIVATIONS.get(keras.activations.get(activation))
    if fn is None:
        raise ValueError(f"`activation` {activation!r} has no NumPy mirror; supported: linear, "
                         "relu, tanh, sigmoid, elu, softplus, silu")
    obs = np.asarray(observations, np.float32)
    if obs.ndim != 3:
        raise ValueError(f"`observations` must be [T, M, obs_dim], got shape {obs.shape}")
    mean, log_std = _numpy_mean_log_std(params, obs, fn, min_std)
    return np.concatenate([mean, np.broadcast_to(log_std[:, None, :], mean.shape)], axis=-1)


def policy_apply_fn(model: keras.Model) -> Callable[[Sequence[tf.Tensor], tf.Tensor], tf.Tensor]:
    """The fastest exact ``apply(params, observations)`` for a policy model and batched params.

    ``observations`` is ``[T, ..., obs_dim]``. For a ``gaussian_mlp_policy`` (a chain of ``Dense``
    layers with one hidden activation, then ``GaussianHead``) this is a ``GaussianPolicyApply``
    (``gaussian_policy_apply``, plus a NumPy mirror of it as ``.numpy_apply``);
    any other model goes through ``FunctionalModel(model).apply_batched`` (its own dense fast path
    for plain MLPs such as ``categorical_mlp_policy``, ``tf.vectorized_map`` otherwise), with the
    axes between task and features flattened and restored.
    """
    plan = _gaussian_plan(model)
    if plan is not None:
        return GaussianPolicyApply(*plan)
    fmodel = FunctionalModel(model)

    def apply(params, obs):
        obs = tf.convert_to_tensor(obs)
        flat = tf.reshape(obs, tf.concat([tf.shape(obs)[:1], [-1], tf.shape(obs)[-1:]], 0))
        out = fmodel.apply_batched(params, flat)
        return tf.reshape(out, tf.concat([tf.shape(obs)[:-1], tf.shape(out)[-1:]], 0))

    return apply


def _gaussian_plan(model: keras.Model):
    """``(activation, min_std)`` if ``model`` has exactly ``gaussian_mlp_policy``'s structure."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) < 2 or type(layers[-1]) is not GaussianHead:
        return None
    dense = layers[:-1]
    if any(type(layer) is not keras.layers.Dense or not layer.use_bias
           or getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None)
           for layer in dense):
        return None
    try:  # each layer must consume exactly the previous one's output
        for prev, layer in zip(layers, layers[1:]):
            parents = layer._inbound_nodes[0].parent_nodes
            if len(layer._inbound_nodes) != 1 or len(parents) != 1 or parents[0].operation is not prev:
                return None
    except (AttributeError, IndexError):
        return None
    expected = [v for layer in dense for v in (layer.kernel, layer.bias)] + [layers[-1].log_std]
    if [id(v) for v in model.trainable_variables] != [id(v) for v in expected]:
        return None
    hidden = {layer.activation for layer in dense[:-1]}
    if len(hidden) > 1 or dense[-1].activation is not keras.activations.linear:
        return None
    activation = hidden.pop() if hidden else keras.activations.linear
    return activation, layers[-1].min_std


# -- distribution math ------------------------------------------------------------------------------
def gaussian_log_prob(mean: tf.Tensor, log_std: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """Log-density of ``actions`` under a diagonal Gaussian, summed over the last axis."""
    z = (actions - mean) * tf.exp(-log_std)
    return tf.reduce_sum(-0.5 * tf.square(z) - log_std - 0.5 * _LOG_2PI, axis=-1)


def gaussian_entropy(log_std: tf.Tensor) -> tf.Tensor:
    """Entropy of a diagonal Gaussian, summed over the last axis (the mean does not matter)."""
    return tf.reduce_sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)


def gaussian_kl(mean0: tf.Tensor, log_std0: tf.Tensor, mean1: tf.Tensor,
                log_std1: tf.Tensor) -> tf.Tensor:
    """``KL(N(mean0, std0) || N(mean1, std1))`` for diagonal Gaussians, summed over the last axis."""
    var0, var1 = tf.exp(2.0 * log_std0), tf.exp(2.0 * log_std1)
    return tf.reduce_sum(log_std1 - log_std0 + (var0 + tf.square(mean0 - mean1)) / (2.0 * var1) - 0.5,
                         axis=-1)


def gaussian_sample(mean: tf.Tensor, log_std: tf.Tensor, seed) -> tf.Tensor:
    """``mean + std * eps`` with ``eps ~ N(0, I)`` drawn from a stateless ``seed`` (Philox)."""
    eps = tf.random.stateless_normal(tf.shape(mean), seed, dtype=mean.dtype, alg="philox")
    return mean + tf.exp(log_std) * eps


def categorical_log_prob(logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """``log softmax(logits)[a]`` for integer ``actions`` with the logits' batch shape."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return tf.gather(log_p, tf.cast(actions, tf.int32), axis=-1, batch_dims=len(logits.shape) - 1)


def categorical_entropy(logits: tf.Tensor) -> tf.Tensor:
    """``-sum_a p_a log p_a`` over the last axis."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def categorical_kl(logits0: tf.Tensor, logits1: tf.Tensor) -> tf.Tensor:
    """``KL(softmax(logits0) || softmax(logits1))`` over the last axis."""
    log_p, log_q = tf.nn.log_softmax(logits0, axis=-1), tf.nn.log_softmax(logits1, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def categorical_sample(logits: tf.Tensor, seed) -> tf.Tensor:
    """One int32 action per row of ``logits`` ``[..., K]`` from a stateless ``seed`` (Gumbel-max)."""
    u = tf.random.stateless_uniform(tf.shape(logits), seed, minval=1e-20, maxval=1.0,
                                    dtype=logits.dtype, alg="philox")
    return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)
