"""TFLite on-device adaptation: ``adapt`` with hand-derived inner gradients, TFLite builtins only.

A TFLite interpreter on a phone or a microcontroller runs only the ops it was built with. The
SavedModel's ``adapt`` differentiates with ``tf.GradientTape``, whose gradient graph holds ops the
TFLite builtin set lacks (``ReluGrad``, ``TanhGrad``, ``BroadcastGradientArgs``, ...), so it does not
convert without the Flex delegate. Here the inner gradient of each MLP family is written out by
hand -- explicit backpropagation through ``Dense`` + relu/tanh layers with matmuls and elementwise
ops -- and the ``tf.while_loop`` over steps becomes TFLite's ``WHILE``. The result converts with
``supported_ops = [TFLITE_BUILTINS]`` and equals the tape path to float32 rounding (the tests check
1e-5 on random inputs, relu and tanh).

Backpropagation through one layer ``h_out = act(h_in W + b)``, given ``g = dL/dh_out``::

    relu'(u) = 1[u > 0]        tanh'(u) = 1 - tanh(u)^2        (u = h_in W + b)
    d   = g * act'(u)
    dL/dW = h_in^T d      dL/db = sum_rows d      dL/dh_in = d W^T

Families (``MODULES``) and their signatures (same names, dtypes and shapes as the SavedModels, minus
the batch of episodes being one task):

* ``regressor_module`` (MAML / Meta-SGD / Reptile regressors; Finn et al. 2017, arXiv:1703.03400):
  ``serving_default(x) -> y`` and ``adapt(support_x, support_y, query_x, num_steps) -> y`` with the
  MSE inner loss, ``dL/dy_hat = 2 (y_hat - y) / (K d_out)``.
* ``policy_module`` (MAML-RL / ProMP Gaussian or categorical MLP policies): ``serving_default``,
  ``action_with_params`` and ``adapt(observations, actions, advantages, mask, num_steps) ->
  params``. The inner objective is the one of ``metarl_tf.algorithms.pg_losses`` (LVC or DiCE,
  importance-weighted against the step-0 policy); with ``rho_t = exp(logp_t - logp_old_t)``::

      LVC:  dJ/dlogp_t = m_t rho_t A_t / n_valid
      DiCE: dJ/dW_t    = (e^{W_t} A_t m_t - e^{W_t} A_{t+1} m_{t+1}) / n_valid,
            dJ/dlogp_t = m_t sum_{t' >= t} dJ/dW_t'                  (W = cumsum (logp - old) m)
      Gaussian: dlogp/dmu = (a - mu) / sigma^2,  dlogp/dlog_sigma = (a - mu)^2 / sigma^2 - 1
      categorical: dlogp/dlogits = onehot(a) - softmax(logits)

  **Deviation:** the advantages are an *input*. The SavedModel computes them inside ``adapt`` with
  rllab's linear feature baseline, a float64 eigendecomposition that TFLite builtins cannot run
  (no ``SelfAdjointEig``, no float64 matmul); on a device the app fits that baseline (a small
  least-squares problem) and passes ``advantages``. Given the same advantages, the TFLite ``adapt``
  equals the SavedModel's (tested).
* ``q_network_module`` (Meta-DQN's task-conditioned Q-network, ``metarl_tf.networks.q_network``;
  CAVIA-style z-adaptation, Zintgraf et al. 2019, arXiv:1810.03642): ``serving_default``,
  ``action_with_z`` and ``adapt(observations, actions, rewards, next_observations, dones,
  num_steps) -> z``, the double-DQN Huber TD loss in ``z`` only::

      y_i = r_i + gamma (1 - done_i) Q(s'_i, argmax_a Q(s'_i, a; z); z)     (a constant)
      dL/dQ(s_i, a_i; z) = clip(Q(s_i, a_i; z) - y_i, -delta, delta) / N
      dL/dz = sum_i (dL/dh_0,i)[obs_dim:]                 (h_0 = concat(s, z), W_0 rows of z)

Write and run (from the library objects, or from an export: ``module_from_saved_model(path)``)::

    module = regressor_module(model, params, adaptation.SGD(0.01), max_num_steps=20)
    paths = convert(module, "sinusoid.tflite")        # one file, every signature
    m = TFLiteModel(paths[0])
    y = m("adapt", support_x=xs, support_y=ys, query_x=xq, num_steps=5)["y"]

``TFLiteModel`` checks the inputs' names, dtypes, shapes and ``num_steps`` range before invoking
(a TFLite graph holds no ``Assert`` ops, so the checks the SavedModel does in-graph happen there).
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf

from metarl_tf import adaptation
from metarl_tf.signatures import policy_specs, qnetwork_specs, regressor_specs

ACTIVATIONS = ("relu", "tanh", "linear")
TAPE_ONLY_OPS = ("ReluGrad", "TanhGrad", "BroadcastGradientArgs")


# -- the MLP and its hand-written backward pass ---------------------------------------------------
def _activation_name(fn) -> str:
    name = getattr(fn, "__name__", str(fn)) if fn is not None else "linear"
    if name not in ACTIVATIONS:
        raise ValueError(f"TFLite adapt supports hidden activations {ACTIVATIONS}, got {name!r}")
    return name


def _act(name: str, u):
    return tf.nn.relu(u) if name == "relu" else tf.tanh(u) if name == "tanh" else u


def _act_grad(name: str, u, h, g):
    """``g * act'(u)`` (``h = act(u)``), without any gradient op."""
    if name == "relu":
        return g * tf.cast(u > 0.0, g.dtype)
    if name == "tanh":
        return g * (1.0 - h * h)
    return g


def mlp_forward(weights: Sequence, x, activations: Sequence[str]):
    """``x [N, d] -> out`` through Dense layers ``weights = [W_0, b_0, W_1, b_1, ...]``; returns
    ``(out, cache)`` where ``cache`` holds each layer's input, pre-activation and output."""
    cache, h = [], x
    for i, name in enumerate(activations):
        u = tf.matmul(h, weights[2 * i]) + weights[2 * i + 1]
        out = _act(name, u)
        cache.append((h, u, out))
        h = out
    return h, cache


def mlp_backward(weights: Sequence, cache, g, activations: Sequence[str], input_grad=False):
    """Backpropagates ``g = dL/dout`` ``[N, d_out]``: returns ``([dW_0, db_0, ...], dL/dx or None)``."""
    grads = [None] * (2 * len(activations))
    for i in reversed(range(len(activations))):
        h_in, u, h_out = cache[i]
        d = _act_grad(activations[i], u, h_out, g)
        grads[2 * i] = tf.matmul(h_in, d, transpose_a=True)
        grads[2 * i + 1] = tf.reduce_sum(d, axis=0)
        if i > 0 or input_grad:
            g = tf.matmul(d, weights[2 * i], transpose_b=True)
    return grads, (g if input_grad else None)


def dense_chain(layers) -> list[str]:
    """The activations of a chain of Keras ``Dense`` layers (each with a bias), or ValueError."""
    import keras

    names = []
    for layer in layers:
        if type(layer) is not keras.layers.Dense or not layer.use_bias:
            raise ValueError(f"TFLite adapt supports chains of Dense layers with biases; layer "
                             f"{layer.name!r} is a {type(layer).__name__}")
        names.append(_activation_name(layer.activation))
    return names


def _activation_name_str(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"TFLite adapt supports hidden activations {ACTIVATIONS}, got {name!r}")
    return name


def _rates(rule, params) -> list:
    """Per-tensor step sizes ``alpha`` (a scalar for SGD, Meta-SGD's tensors otherwise)."""
    if isinstance(rule, adaptation.SGD):
        lr = float(tf.convert_to_tensor(rule.learning_rate).numpy())
        return [tf.constant(lr, tf.float32) for _ in params]
    if isinstance(rule, adaptation.PerParameterSGD):
        return [tf.constant(np.asarray(r, np.float32)) for r in rule.rates]
    raise TypeError(f"TFLite adapt supports SGD and PerParameterSGD (Meta-SGD) rules, got "
                    f"{type(rule).__name__}")


def _check_steps(max_num_steps):
    if isinstance(max_num_steps, bool) or not isinstance(max_num_steps, int) or max_num_steps < 0:
        raise ValueError(f"`max_num_steps` must be an integer >= 0, got {max_num_steps!r}")


def _sgd_loop(num_steps, params, grad_fn, rates):
    """``num_steps`` of ``p <- p - alpha * g`` in one ``tf.while_loop`` (TFLite ``WHILE``)."""
    def body(i, *p):
        g = grad_fn(list(p))
        return (i + 1,) + tuple(q - a * gq for q, a, gq in zip(p, rates, g))

    out = tf.while_loop(lambda i, *p: i < num_steps, body, (tf.constant(0),) + tuple(params))
    return list(out[1:])


def _flatten(params):
    return tf.concat([tf.reshape(p, [-1]) for p in params], axis=0)


def _unflatten(flat, shapes):
    out, offset = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(tf.reshape(flat[offset:offset + n], shape))
        offset += n
    return out


class _Module(tf.Module):
    """A family's signatures, plus what ``TFLiteModel`` checks (``max_num_steps``)."""

    kind = ""

    def signatures(self) -> dict:
        raise NotImplementedError

    def metadata(self) -> dict:
        return {"kind": self.kind, "max_num_steps": self.max_num_steps}


# -- regressor ------------------------------------------------------------------------------------
def regressor_grads(weights, activations, x, y):
    """Hand-derived ``dL/dW`` of ``L = mean((mlp(x) - y)^2)`` (the MSE of ``params.mse``)."""
    out, cache = mlp_forward(weights, x, activations)
    n = tf.cast(tf.size(y), out.dtype)
    return mlp_backward(weights, cache, 2.0 * (out - y) / n, activations)[0]


class regressor_module(_Module):  # noqa: N801 -- used like a function: regressor_module(...)
    """MAML-family regressor (a Keras chain of Dense layers) with an on-device ``adapt``.

    Args:
      model: the Keras regressor (``keras.Sequential`` / functional chain of ``Dense`` layers, the
        hidden ones relu or tanh, any width).
      params: meta-learned values ``[W_0, b_0, ...]`` (default: the model's own).
      rule: ``adaptation.SGD`` or ``adaptation.PerParameterSGD`` with the meta-learned rate(s).
      max_num_steps: largest ``num_steps`` ``TFLiteModel`` accepts.
    """

    kind = "regressor"

    def __init__(self, model, params=None, rule=None, max_num_steps: int = 1000,
                 activations: Sequence[str] | None = None):
        super().__init__(name="tflite_regressor")
        _check_steps(max_num_steps)
        self.max_num_steps = max_num_steps
        if model is not None:
            import keras

            layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
            self.activations = dense_chain(layers)
        else:  # from a SavedModel: the structure is given
            self.activations = [_activation_name_str(a) for a in activations]
        if self.activations[-1] != "linear":
            raise ValueError("the regressor's last Dense layer must be linear")
        params = model.trainable_variables if params is None else params
        self.weights = [tf.constant(np.asarray(p, np.float32)) for p in params]
        rates = _rates(rule if rule is not None else adaptation.SGD(0.01), self.weights)
        d_in, d_out = int(self.weights[0].shape[0]), int(self.weights[-1].shape[-1])
        acts = self.activations

        specs = regressor_specs(d_in, d_out)

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(x):
            return {"y": mlp_forward(self.weights, x, acts)[0]}

        @tf.function(input_signature=specs["adapt"])
        def adapt(support_x, support_y, query_x, num_steps):
            adapted = _sgd_loop(num_steps, self.weights,
                                lambda w: regressor_grads(w, acts, support_x, support_y), rates)
            return {"y": mlp_forward(adapted, query_x, acts)[0]}

        self.serving_default, self.adapt = serving_default, adapt

    def signatures(self):
        return {"serving_default": self.serving_default, "adapt": self.adapt}


# -- policies -------------------------------------------------------------------------------------
_LOG_2PI = math.log(2.0 * math.pi)


def _objective_grad_logp(logp, old, adv, mask, estimator: str):
    """``dJ/dlogp`` ``[E, H]`` of the LVC or DiCE objective (module docstring)."""
    count = tf.maximum(tf.reduce_sum(mask), 1.0)
    if estimator == "lvc":
        return mask * tf.exp(logp - old) * adv / count
    w = tf.cumsum((logp - old) * mask, axis=1)
    e = tf.exp(w)
    am = adv * mask
    am_next = tf.concat([am[:, 1:], tf.zeros_like(am[:, :1])], axis=1)
    dj_dw = e * (am - am_next) / count
    return mask * tf.cumsum(dj_dw, axis=1, reverse=True)


def policy_grads(params, activations, distribution, obs, actions, adv, mask, old_logp, min_log_std,
                 estimator="lvc"):
    """Hand-derived gradient of the inner loss ``-J`` with respect to ``params`` for episodes
    ``[E, H, ...]``; ``old_logp`` are the behaviour log-probabilities (constants)."""
    e, h = tf.shape(mask)[0], tf.shape(mask)[1]
    flat_obs = tf.reshape(obs, [e * h, -1])
    n_dense = 2 * len(activations)
    out, cache = mlp_forward(params[:n_dense], flat_obs, activations)
    logp, dlogp_dout, dlogp_dls = _log_prob_and_grads(params, out, actions, distribution,
                                                      min_log_std, e, h)
    g_logp = -tf.reshape(_objective_grad_logp(tf.reshape(logp, [e, h]), old_logp, adv, mask,
                                              estimator), [-1, 1])          # dLoss/dlogp [M, 1]
    grads, _ = mlp_backward(params[:n_dense], cache, g_logp * dlogp_dout, activations)
    if distribution == "gaussian":
        grads.append(tf.reduce_sum(g_logp * dlogp_dls, axis=0))
    return grads


def _log_prob_and_grads(params, out, actions, distribution, min_log_std, e, h):
    """``logp [M]``, ``dlogp/d(out) [M, d]`` and (Gaussian) ``dlogp/dlog_std [M, a]``."""
    if distribution == "gaussian":
        log_std = params[-1]
        eff = tf.maximum(log_std, min_log_std)
        a = tf.reshape(actions, [e * h, -1])
        inv_std = tf.exp(-eff)
        z = (a - out) * inv_std
        logp = tf.reduce_sum(-0.5 * z * z - eff - 0.5 * _LOG_2PI, axis=-1)
        # max(x, c) passes the gradient to x where x >= c (as TensorFlow's Maximum gradient).
        pass_through = tf.cast(log_std >= min_log_std, tf.float32)
        return logp, z * inv_std, (z * z - 1.0) * pass_through
    a = tf.reshape(actions, [-1])
    onehot = tf.one_hot(a, int(out.shape[-1]), dtype=tf.float32)
    log_p = tf.nn.log_softmax(out)
    return tf.reduce_sum(onehot * log_p, axis=-1), onehot - tf.nn.softmax(out), None


def _policy_structure(policy):
    """``(activations, distribution, min_log_std)`` of a gaussian_mlp_policy / categorical_mlp_policy."""
    import keras
    from metarl_tf.networks.policies import GaussianHead

    layers = [la for la in policy.layers if not isinstance(la, keras.layers.InputLayer)]
    if layers and isinstance(layers[-1], GaussianHead):
        acts = dense_chain(layers[:-1])
        dist, min_log_std = "gaussian", math.log(layers[-1].min_std)
    else:
        acts, dist, min_log_std = dense_chain(layers), "categorical", 0.0
    if acts[-1] != "linear":
        raise ValueError("the policy's output Dense layer must be linear")
    return acts, dist, min_log_std


class policy_module(_Module):  # noqa: N801
    """A MAML-RL policy (Gaussian or categorical MLP) with an on-device ``adapt``.

    Args:
      policy: ``gaussian_mlp_policy`` or ``categorical_mlp_policy`` (hidden relu or tanh).
      params: meta-learned values in ``policy.trainable_variables`` order (default: its own).
      rule: the inner rule (SGD or Meta-SGD rates).
      estimator: ``"lvc"`` or ``"dice"``, as the learner's config.
      max_num_steps: largest ``num_steps`` ``TFLiteModel`` accepts.
    """

    kind = "policy"

    def __init__(self, policy, params=None, rule=None, estimator: str = "lvc",
                 max_num_steps: int = 100, structure: tuple | None = None):
        super().__init__(name="tflite_policy")
        _check_steps(max_num_steps)
        if estimator not in ("lvc", "dice"):
            raise ValueError(f"`estimator` must be 'lvc' or 'dice', got {estimator!r}")
        self.max_num_steps, self.estimator = max_num_steps, estimator
        # structure: (activations, distribution, min_log_std), given when there is no Keras policy
        acts, dist, min_log_std = _policy_structure(policy) if policy is not None else structure
        self.activations, self.distribution = acts, dist
        params = policy.trainable_variables if params is None else params
        self.weights = [tf.constant(np.asarray(p, np.float32)) for p in params]
        self.shapes = [tuple(w.shape) for w in self.weights]
        self.num_params = int(sum(np.prod(s) for s in self.shapes))
        rates = _rates(rule if rule is not None else adaptation.SGD(0.1), self.weights)
        obs_dim = int(self.weights[0].shape[0])
        act_dim = int(self.weights[-1].shape[-1])
        n_dense = 2 * len(acts)
        gaussian = dist == "gaussian"

        def outputs(weights, observation):
            out = mlp_forward(weights[:n_dense], observation, acts)[0]
            if gaussian:
                eff = tf.maximum(weights[-1], min_log_std)
                return {"action": out, "log_std": tf.zeros_like(out) + eff}
            return {"action": tf.argmax(out, axis=-1, output_type=tf.int32), "logits": out}

        # Advantages, not rewards: the linear baseline's float64 eigendecomposition has no builtin.
        specs = policy_specs(obs_dim, act_dim, self.num_params, gaussian, signal="advantages")

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(observation):
            return outputs(self.weights, observation)

        @tf.function(input_signature=specs["action_with_params"])
        def action_with_params(observation, params):
            return outputs(_unflatten(params, self.shapes), observation)

        @tf.function(input_signature=specs["adapt"])
        def adapt(observations, actions, advantages, mask, num_steps):
            e, h = tf.shape(mask)[0], tf.shape(mask)[1]
            out = mlp_forward(self.weights[:n_dense], tf.reshape(observations, [e * h, obs_dim]),
                              acts)[0]
            old = tf.reshape(_log_prob_and_grads(self.weights, out, actions, dist, min_log_std,
                                                 e, h)[0], [e, h])
            adapted = _sgd_loop(num_steps, self.weights, lambda w: policy_grads(
                w, acts, dist, observations, actions, advantages, mask, old, min_log_std,
                estimator), rates)
            return {"params": _flatten(adapted)}

        self.serving_default, self.action_with_params, self.adapt = (
            serving_default, action_with_params, adapt)

    def signatures(self):
        return {"serving_default": self.serving_default, "adapt": self.adapt,
                "action_with_params": self.action_with_params}


# -- task-conditioned Q-network ---------------------------------------------------------------------
def q_forward(weights, activations, obs, z):
    """``Q(s, ., z)`` for ``obs [N, obs_dim]`` and one ``z [z_dim]``: the MLP on ``concat(s, z)``."""
    zs = tf.zeros([tf.shape(obs)[0], 1], obs.dtype) + z[None, :]
    return mlp_forward(weights, tf.concat([obs, zs], axis=1), activations)


def q_z_grad(weights, activations, z, obs, actions, rewards, next_obs, dones, discount, delta):
    """Hand-derived ``dL/dz`` of the double-DQN Huber TD loss (module docstring)."""
    num_actions = int(weights[-1].shape[-1])
    q_next = q_forward(weights, activations, next_obs, z)[0]
    best = tf.one_hot(tf.argmax(q_next, axis=-1, output_type=tf.int32), num_actions)
    y = rewards + discount * (1.0 - dones) * tf.reduce_sum(best * q_next, axis=-1)
    q, cache = q_forward(weights, activations, obs, z)
    taken = tf.one_hot(actions, num_actions)
    err = tf.reduce_sum(taken * q, axis=-1) - y
    n = tf.cast(tf.shape(err)[0], tf.float32)
    g_q = taken * (tf.clip_by_value(err, -delta, delta) / n)[:, None]
    _, g_in = mlp_backward(weights, cache, g_q, activations, input_grad=True)
    obs_dim = int(weights[0].shape[0]) - int(z.shape[0])
    return tf.reduce_sum(g_in[:, obs_dim:], axis=0)


class q_network_module(_Module):  # noqa: N801
    """Meta-DQN's task-conditioned Q-network with an on-device z-adaptation.

    The network is ``metarl_tf.networks.q_network.TaskConditionedQNetwork``'s layout:
    ``concat(observation, z) -> Dense(h, act)... -> Dense(num_actions)``, ``params = [W_0
    [obs_dim + z_dim, h_1], b_0, ..., W_out, b_out]`` (rows ``obs_dim..`` of ``W_0`` multiply z).
    The TD target bootstraps from the same network and z (no target network on a device), as
    ``metarl_tf.algorithms.meta_dqn.losses.inner_td_loss`` does; tested equal to ``export.qnetwork``.

    Args:
      params: the network's weights in that order.
      z_init: ``[z_dim]`` meta-learned initial embedding.
      rule: SGD or PerParameterSGD with one ``[z_dim]`` rate tensor (the rate of ``z``).
      activation: hidden activation (relu or tanh).
      discount: ``gamma`` of the TD target (``gamma^n`` for n-step targets).
      huber_delta: the Huber loss' ``delta``.
      max_num_steps: largest ``num_steps`` ``TFLiteModel`` accepts.
    """

    kind = "q_network"

    def __init__(self, params, z_init, rule=None, activation: str = "relu",
                 discount: float = 0.99, huber_delta: float = 1.0, max_num_steps: int = 100):
        super().__init__(name="tflite_q_network")
        _check_steps(max_num_steps)
        if activation not in ("relu", "tanh"):
            raise ValueError(f"`activation` must be 'relu' or 'tanh', got {activation!r}")
        self.max_num_steps = max_num_steps
        self.weights = [tf.constant(np.asarray(p, np.float32)) for p in params]
        self.z_init = tf.constant(np.asarray(z_init, np.float32))
        z_dim = int(self.z_init.shape[0])
        obs_dim = int(self.weights[0].shape[0]) - z_dim
        if obs_dim < 1:
            raise ValueError(f"W_0 has {self.weights[0].shape[0]} rows: not obs_dim + z_dim "
                             f"with z_dim={z_dim}")
        acts = [activation] * (len(self.weights) // 2 - 1) + ["linear"]
        self.activations = acts
        (rate,) = _rates(rule if rule is not None else adaptation.SGD(0.1), [self.z_init])
        discount, delta = float(discount), float(huber_delta)

        def outputs(observation, z):
            q = q_forward(self.weights, acts, observation, z)[0]
            return {"action": tf.argmax(q, axis=-1, output_type=tf.int32), "q_values": q}

        specs = qnetwork_specs(obs_dim, z_dim)

        @tf.function(input_signature=specs["serving_default"])
        def serving_default(observation):
            return outputs(observation, self.z_init)

        @tf.function(input_signature=specs["action_with_z"])
        def action_with_z(observation, z):
            return outputs(observation, z)

        @tf.function(input_signature=specs["adapt"])
        def adapt(observations, actions, rewards, next_observations, dones, num_steps):
            (z,) = _sgd_loop(num_steps, [self.z_init], lambda p: [q_z_grad(
                self.weights, acts, p[0], observations, actions, rewards, next_observations, dones,
                discount, delta)], [rate])
            return {"z": z}

        self.serving_default, self.action_with_z, self.adapt = serving_default, action_with_z, adapt

    def signatures(self):
        return {"serving_default": self.serving_default, "adapt": self.adapt,
                "action_with_z": self.action_with_z}


MODULES = {"regressor": regressor_module, "policy": policy_module, "q_network": q_network_module}


# -- from an exported SavedModel --------------------------------------------------------------------
def _hidden_activation(path: str) -> str:
    """relu or tanh, from the ops of the SavedModel's graph (the MLP exports use one of them)."""
    from export.inspect import _ops, _read_proto, _serve_graph

    ops, _ = _ops(_serve_graph(_read_proto(path)))
    found = [name for name, op in (("relu", "Relu"), ("tanh", "Tanh")) if op in ops]
    if len(found) != 1:
        raise ValueError(f"cannot tell the hidden activation of {path}: found {found or 'neither'} "
                         "of Relu/Tanh in its graph (TFLite adapt supports MLPs with one of them)")
    return found[0]


def _saved_rule(m):
    if hasattr(m, "inner_step_rates"):
        raise ValueError("this SavedModel adapts with per-step rates (inner_rule per_step_sgd); "
                         "the TFLite adapt supports one rate or one rate per parameter")
    if hasattr(m, "inner_rates"):
        return adaptation.PerParameterSGD([np.asarray(r) for r in m.inner_rates])
    return adaptation.SGD(float(m.inner_lr.numpy()))


def module_from_saved_model(path: str, min_std: float = 1e-6) -> _Module:
    """The TFLite module of an exported SavedModel (AdaptableRegressor, AdaptablePolicy,
    AdaptableQNetwork), verified against the SavedModel's own signatures on random inputs.

    The weights, inner rates and settings come from the SavedModel and its
    ``assets.extra/metarl_tf.json``; the hidden activation from its graph's ops. ``min_std`` is the
    Gaussian policies' lower bound on the std (``gaussian_mlp_policy``'s default); a wrong guess,
    like any other mismatch, fails the verification.

    Raises:
      ValueError: an unsupported kind, or the module does not reproduce the SavedModel.
    """
    from export.inspect import read_metadata

    meta = read_metadata(path) or {}
    kind = meta.get("kind")
    if kind == "AdaptableContextPolicy":  # PEARL: forward only (export/context_policy.py)
        from export.context_policy import tflite_module

        return tflite_module(path)
    if kind not in ("AdaptableRegressor", "AdaptablePolicy", "AdaptableQNetwork"):
        raise ValueError(f"{path}: TFLite adapt supports AdaptableRegressor, AdaptablePolicy and "
                         f"AdaptableQNetwork exports, this one is {kind!r}")
    m = tf.saved_model.load(path)
    params = [np.asarray(p) for p in m.params]
    rule = _saved_rule(m)
    steps = int(meta.get("max_num_steps", 100))
    if kind == "AdaptableRegressor":
        act = _hidden_activation(path)
        module = regressor_module(None, params, rule, steps,
                                  activations=[act] * (len(params) // 2 - 1) + ["linear"])
    elif kind == "AdaptablePolicy":
        dist = meta["distribution"]
        n_dense = len(params) - (1 if dist == "gaussian" else 0)
        act = _hidden_activation(path) if n_dense > 2 else "linear"
        structure = ([act] * (n_dense // 2 - 1) + ["linear"], dist,
                     math.log(min_std) if dist == "gaussian" else 0.0)
        module = policy_module(None, params, rule, meta.get("estimator", "lvc"), steps,
                               structure=structure)
    else:
        if meta.get("inner_loss", "td") != "td" or meta.get("normalize_inner_grad", False):
            raise ValueError(f"{path}: TFLite adapt supports only the plain TD inner loss of "
                             f"Meta-DQN; this export adapts on inner_loss "
                             f"{meta.get('inner_loss')!r} (normalize_inner_grad "
                             f"{meta.get('normalize_inner_grad', False)})")
        module = q_network_module(params, np.asarray(m.z_init), rule, meta["activation"],
                                  meta["discount"], meta.get("huber_delta", 1.0), steps)
    _verify(module, m, kind, meta)
    return module


def _verify(module, m, kind, meta, tol=1e-4):
    """Both graphs on the same random inputs must agree (catches a wrong structure guess)."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    d_in = int(module.weights[0].shape[0])
    if kind == "AdaptableQNetwork":
        d_in -= int(module.z_init.shape[0])
    x = rng.normal(size=(6, d_in)).astype(f32)
    pairs = []
    if kind == "AdaptableRegressor":
        d_out = int(module.weights[-1].shape[-1])
        # 2 steps, or fewer when the export's validated bound is lower (export.step_bounds)
        steps = min(2, int(meta.get("max_num_steps", 2)))
        args = (x, rng.normal(size=(6, d_out)).astype(f32), x[:3], tf.constant(steps))
        pairs.append((module.adapt(*args)["y"], m.signatures["adapt"](
            support_x=args[0], support_y=args[1], query_x=args[2], num_steps=args[3])["y"]))
        pairs.append((module.serving_default(x)["y"], m.signatures["serving_default"](x=x)["y"]))
    elif kind == "AdaptablePolicy":
        from metarl_tf.algorithms import pg_losses

        e, h = 3, 5
        obs = rng.normal(size=(e, h, d_in)).astype(f32)
        acts = (rng.normal(size=(e, h, int(module.weights[-1].shape[-1]))).astype(f32)
                if module.distribution == "gaussian" else
                rng.integers(0, int(module.weights[-1].shape[-1]), (e, h)).astype(np.int32))
        rew, mask = rng.normal(size=(e, h)).astype(f32), np.ones((e, h), f32)
        ep = pg_losses.Episodes(obs[None], acts[None], rew[None], mask[None])
        adv = pg_losses.compute_advantages(ep, meta.get("discount", 0.99), meta.get("gae_lambda", 1.0),
                                           None, meta.get("normalize_advantages", True))[0]
        pairs.append((module.adapt(obs, acts, adv, mask, tf.constant(1))["params"],
                      m.signatures["adapt"](observations=obs, actions=acts, rewards=rew, mask=mask,
                                            num_steps=tf.constant(1))["params"]))
        key = "log_std" if module.distribution == "gaussian" else "logits"
        pairs.append((module.serving_default(x)[key],
                      m.signatures["serving_default"](observation=x)[key]))
    else:
        n = 6
        args = (x, rng.integers(0, int(module.weights[-1].shape[-1]), n).astype(np.int32),
                rng.normal(size=n).astype(f32), rng.normal(size=(n, d_in)).astype(f32),
                np.zeros(n, f32), tf.constant(2))
        names = ("observations", "actions", "rewards", "next_observations", "dones", "num_steps")
        pairs.append((module.adapt(*args)["z"], m.signatures["adapt"](**dict(zip(names, args)))["z"]))
    for a, b in pairs:
        diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())
        if not diff <= tol * (1.0 + float(np.abs(np.asarray(b)).max())):
            raise ValueError(f"the TFLite module does not reproduce the SavedModel ({kind}): max "
                             f"difference {diff:.3g}; is the network a plain MLP with one hidden "
                             "activation (and, for a Gaussian policy, the given min_std)?")


# -- conversion and running -------------------------------------------------------------------------
def _write_atomic(path: str, data: bytes):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tflite-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _convert(module, fns: dict) -> bytes:
    concrete = [fns[k].get_concrete_function() for k in sorted(fns)]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(concrete, module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _signature_keys(data: bytes) -> set:
    return set(_interpreter(data).get_signature_list())


def convert(module: _Module, path: str) -> list[str]:
    """Converts every signature of ``module`` with TFLite builtins only and writes ``path``.

    One multi-signature ``.tflite`` when the converter keeps all signatures (TF >= 2.7 does); when
    it keeps only one, ``<stem>.<signature>.tflite`` per signature instead. Files are written
    atomically. Returns the paths written.

    Raises:
      tf.lite ConverterError (via ``convert``) if an op is not a TFLite builtin.
    """
    fns = module.signatures()
    data = _convert(module, fns)
    if _signature_keys(data) == set(fns):
        _write_atomic(path, data)
        return [path]
    stem = path[:-len(".tflite")] if path.endswith(".tflite") else path
    paths = []
    for key in sorted(fns):
        one = f"{stem}.{key}.tflite"
        _write_atomic(one, _convert(module, {key: fns[key]}))
        paths.append(one)
    return paths


def _interpreter(data_or_path):
    import warnings

    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice (LiteRT)
        warnings.simplefilter("ignore")
        kwargs = ({"model_path": data_or_path} if isinstance(data_or_path, str)
                  else {"model_content": data_or_path})
        return tf.lite.Interpreter(**kwargs)


class TFLiteModel:
    """A converted model in ``tf.lite.Interpreter`` with input checks and named signatures.

    Args:
      path: a ``.tflite`` written by ``convert``.
      max_num_steps: refuse ``num_steps`` above this (``None``: no upper bound).
    """

    def __init__(self, path: str, max_num_steps: int | None = None):
        self.path, self.max_num_steps = path, max_num_steps
        self.interpreter = _interpreter(path)
        self.signature_list = self.interpreter.get_signature_list()
        self._runners = {}

    def input_details(self, signature: str) -> dict:
        return self._runner(signature).get_input_details()

    def _runner(self, signature: str):
        if signature not in self.signature_list:
            raise KeyError(f"{self.path} has no signature {signature!r}; it has "
                           f"{sorted(self.signature_list)}")
        if signature not in self._runners:
            self._runners[signature] = self.interpreter.get_signature_runner(signature)
        return self._runners[signature]

    def __call__(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        """Runs ``signature`` on numpy inputs after checking names, dtypes and shapes."""
        runner = self._runner(signature)
        details = runner.get_input_details()
        missing, extra = set(details) - set(inputs), set(inputs) - set(details)
        if missing or extra:
            raise ValueError(f"signature {signature!r} takes inputs {sorted(details)}; missing "
                             f"{sorted(missing)}, unexpected {sorted(extra)}")
        feeds = {}
        for key, d in details.items():
            arr = np.asarray(inputs[key])
            want = np.dtype(d["dtype"])
            if want.kind == "f" and arr.dtype.kind not in "fiu" or \
                    want.kind in "iu" and arr.dtype.kind not in "iu":
                raise TypeError(f"input `{key}` of {signature!r} must be {want.name}, got "
                                f"{arr.dtype.name}")
            spec = d["shape_signature"]
            if arr.ndim != len(spec) or any(s >= 0 and s != n for s, n in zip(spec, arr.shape)):
                raise ValueError(f"input `{key}` of {signature!r} must have shape "
                                 f"{[int(s) for s in spec]} (-1: any), got {list(arr.shape)}")
            feeds[key] = arr.astype(want)
        if "num_steps" in feeds:
            steps = int(feeds["num_steps"])
            if steps < 0 or (self.max_num_steps is not None and steps > self.max_num_steps):
                raise ValueError(f"num_steps must be in [0, {self.max_num_steps}], got {steps}")
        out = runner(**feeds)
        # As the SavedModels' in-graph checks: never hand out inf/NaN (a TFLite graph has no
        # CheckNumerics op, so the check runs here).
        for key, value in out.items():
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise FloatingPointError(
                    f"output `{key}` of {signature!r} is not finite: inputs too large, or too many "
                    "num_steps for the inner rate(s)")
        return out
