"""Learned inner-loop update rules: the Meta-LSTM meta-learner, also driven by policy gradients.

Plain SGD and Meta-SGD's rates (``adaptation.SGD``, ``adaptation.PerParameterSGD``) are the two
simplest members of a family whose general member *learns the update itself*. This module adds that
member, under the same ``adaptation.UpdateRule`` interface (``init_state`` once per adaptation,
``update(params, grads, state, loss)`` per inner step), so every learner that calls
``adaptation.adapt`` -- MAML, MAML-RL, the exported ``adapt`` signatures -- runs it unchanged.

**Meta-LSTM** (Ravi & Larochelle 2017, "Optimization as a Model for Few-Shot Learning"; Andrychowicz
et al. 2016, arXiv:1606.04474). Coordinate-wise: one small LSTM, shared by every scalar parameter,
reads that coordinate's preprocessed gradient and the task's preprocessed loss; a second, gated
layer whose *cell state is the parameter* writes the update. For coordinate ``j`` at inner step
``t``::

    x_t   = [prep(g_t), prep(L_t), prep(s)]            g_t = dL_t/dtheta_t-1 (coordinate j)
    (h_t, c_t) = LSTM(x_t, (h_t-1, c_t-1))             hidden size H (R&L, Andrychowicz: 20)
    f_t   = sigmoid(w_F . [h_t, theta_t-1, f_t-1] + b_F)        learned forget gate
    i_t   = sigmoid(w_I . [h_t, theta_t-1, i_t-1] + b_I)        learned input gate (the "rate")
    theta_t = f_t * theta_t-1 - i_t * g_t                       (R&L eq. 2: c_t = f c_t-1 + i c~_t)

``prep`` is Andrychowicz et al.'s appendix-A preprocessing, which keeps magnitudes spanning many
orders on one scale and the sign apart (``p = 10``)::

    prep(x) = (log|x| / p, sign(x))     if |x| >= e^-p
              (-1, e^p x)               otherwise

``s`` are optional per-task context features, shared by all coordinates of a task. The
**meta-policy-gradient** rule is this same LSTM driven by the RL inner loop: ``g_t`` is the
per-parameter policy gradient of the inner objective, ``L_t`` its value, and ``s`` the episodes'
return/advantage statistics (``episode_statistics``: mean and std of the episode returns, mean
absolute advantage), bound per sampling round with ``bind_episodes``.

At initialisation the rule is close to SGD: ``b_I = logit(inner_lr)``, ``b_F = 5`` (``f ~ 0.993``,
R&L draw it in U[4, 6]), the gate weights in U[-0.01, 0.01], so the first meta-steps start from
MAML's update and learn away from it. The input gate is a sigmoid, so the learned per-coordinate
rate lies in (0, 1).

The rule's weights are meta-parameters: they live in the learner's ``extra_variables`` and get the
meta-gradient by backpropagation through the unrolled inner loop. First order by default, as in both
papers: the gradients and losses *fed to the rule* are constants (``adaptation.adapt(...,
first_order=True)`` stops them), yet the meta-gradient still reaches the rule's weights through the
update ``f * theta - i * g`` and the gates. Second order (``first_order=False``) differentiates
through the ``g`` of the update (MAML's Hessian term, and MAML-RL's sampling correction), while the
rule's preprocessed inputs stay constants in both modes (``d log|g| = dg / g`` blows up where a
gradient is small). The state (LSTM ``h, c``, previous gates, the step
count) is created by ``init_state`` at the start of every adaptation, so it never leaks between
tasks or meta-batches.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import tensorflow as tf

from metarl_tf import adaptation

RULES = ("sgd", "metasgd", "meta_lstm")
"""Names accepted by the ``update_rule`` field of the learners' configs."""

NUM_EPISODE_FEATURES = 3  # episode_statistics: mean return, std of returns, mean |advantage|
FORGET_BIAS_INIT = 5.0  # b_F at initialisation: sigmoid(5) = 0.9933 (R&L: U[4, 6])
GATE_INIT_SCALE = 0.01  # w_F, w_I ~ U[-0.01, 0.01] (R&L)
PREPROCESS_P = 10.0  # Andrychowicz et al.'s p


def check_rule(config, name: str = "update_rule") -> None:
    """Config check: ``config.<name>`` is one of ``RULES``."""
    value = getattr(config, name)
    if value not in RULES:
        raise ValueError(f"`{name}` must be one of {list(RULES)}, got {value!r}")


def check_hidden_size(config, name: str = "rule_hidden_size") -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer (the Meta-LSTM's hidden units), "
                         f"got {value!r}")


def preprocess(x: tf.Tensor, p: float = PREPROCESS_P) -> tf.Tensor:
    """Andrychowicz et al. 2016 (appendix A) gradient preprocessing: ``[...] -> [..., 2]``.

    ::

        (log|x| / p, sign(x))   if |x| >= e^-p,      (-1, e^p x)   otherwise
    """
    x = tf.convert_to_tensor(x)
    threshold = math.exp(-p)
    big = tf.abs(x) >= threshold
    # log of a clamped |x| keeps the unused branch finite (and its gradient NaN-free).
    log_mag = tf.math.log(tf.maximum(tf.abs(x), threshold)) / p
    first = tf.where(big, log_mag, -tf.ones_like(x))
    second = tf.where(big, tf.sign(x), math.exp(p) * x)
    return tf.stack([first, second], axis=-1)


def episode_statistics(rewards: tf.Tensor, mask: tf.Tensor, advantages: tf.Tensor) -> tf.Tensor:
    """The meta-policy-gradient rule's per-task context, ``[T, N, H] -> [T, 3]``.

    Columns: mean episode return, standard deviation of the episode returns (over the ``N``
    episodes), mean absolute advantage over valid steps (of the advantages the inner objective
    uses). Constants for the meta-gradient.
    """
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    mask = tf.cast(mask, tf.float32)
    returns = tf.reduce_sum(rewards * mask, axis=-1)  # [T, N]
    mean = tf.reduce_mean(returns, axis=-1)
    std = tf.math.reduce_std(returns, axis=-1)
    abs_adv = tf.reduce_sum(tf.abs(advantages) * mask, axis=[1, 2]) / tf.maximum(
        tf.reduce_sum(mask, axis=[1, 2]), 1.0)
    return tf.stop_gradient(tf.stack([mean, std, abs_adv], axis=-1))


class MetaLSTMState(NamedTuple):
    """Per-coordinate state of the Meta-LSTM, for ``T`` tasks and ``N`` coordinates per task.

    Attributes:
      step: int32 scalar, inner steps taken so far (for error messages).
      h, c: ``[H, T, N]`` the first layer's LSTM state (hidden unit major: the coordinates of all
        tasks lie along the last axes, so the rule's affine maps are matmuls over them).
      forget, input: ``[T, N]`` the previous step's gate values (R&L feed them back).
    """

    step: tf.Tensor
    h: tf.Tensor
    c: tf.Tensor
    forget: tf.Tensor
    input: tf.Tensor


class MetaLSTM(NamedTuple):
    """The Meta-LSTM update rule (see the module docstring for the math).

    Attributes:
      weights: ``[lstm_kernel [D, 4H], lstm_recurrent [H, 4H], lstm_bias [4H], forget_kernel
        [H + 2], forget_bias [], input_kernel [H + 2], input_bias []]`` with ``D = 4 + 2 F`` for
        ``F`` context features; variables (or tensors read from them) so the meta-gradient reaches
        them. ``init_meta_lstm`` makes them.
      context: ``[T, F]`` per-task context features (``F > 0`` only), or None.
      check_finite: raise (``InvalidArgumentError`` naming the inner step) when a gradient or loss
        entering the rule is not finite. XLA compiles the check out.
    """

    weights: Sequence[tf.Tensor]
    context: tf.Tensor | None = None
    check_finite: bool = True

    @property
    def hidden_size(self) -> int:
        return int(self.weights[1].shape[0])

    @property
    def num_context(self) -> int:
        return (int(self.weights[0].shape[0]) - 4) // 2

    def copy_into(self, module: tf.Module) -> "MetaLSTM":
        """Copies the weights into variables of ``module`` (``module.rule_weights``) and returns
        the rule reading them: how an export carries the learned rule in its SavedModel."""
        module.rule_weights = [tf.Variable(w, trainable=False, name=f"rule_weight_{i}")
                               for i, w in enumerate(self.weights)]
        return self._replace(weights=module.rule_weights)

    def with_context(self, context: tf.Tensor) -> "MetaLSTM":
        """The same rule reading per-task features ``context`` ``[T, F]``."""
        return self._replace(context=context)

    def init_state(self, params):
        params = list(params)
        num_tasks = tf.shape(params[0])[0]
        n = sum(_coordinates(p) for p in params)
        dtype = params[0].dtype
        h = tf.zeros(tf.stack([self.hidden_size, num_tasks, n]), dtype)
        gates = tf.zeros(tf.stack([num_tasks, n]), dtype)
        return MetaLSTMState(tf.constant(0, tf.int32), h, tf.identity(h), gates,
                             tf.identity(gates))

    def update(self, params, grads, state, loss):
        params = list(params)
        kernel, recurrent, bias, w_f, b_f, w_i, b_i = (tf.convert_to_tensor(w)
                                                       for w in self.weights)
        dtype = params[0].dtype
        theta, g = _flatten(params), _flatten(grads)  # [T, N]
        loss = tf.convert_to_tensor(loss, dtype)
        if self.check_finite:
            ok = tf.logical_and(tf.reduce_all(tf.math.is_finite(g)),
                                tf.reduce_all(tf.math.is_finite(loss)))
            message = tf.strings.join([
                "Meta-LSTM update rule: a non-finite gradient or loss entered the rule at inner "
                "step ", tf.strings.as_string(state.step + 1), " (counting from 1)"])
            assert_op = tf.debugging.Assert(ok, [message])
            with tf.control_dependencies([assert_op]):
                g = tf.identity(g)
        hidden = self.hidden_size
        num_coords = theta.shape[1]
        # Layout: coordinates along the last axis ([rows, T * N]) so that every per-coordinate
        # affine map is ONE matmul, and so are the gradients of the rule's weights (a [rows, T N]
        # x [T N, cols] product each): as broadcast-multiplies, those gradients became many
        # separate reductions over T N = 44k elements, and the rule's forward + backward ran
        # 2.4-2.7x slower (see docs/algorithms/learned-rules.md, "Cost").
        # x_t = [prep(g), prep(L), prep(s)] times the kernel [D, 4H], split by rows: the
        # per-coordinate part (2 rows, with h_t-1 through the recurrent kernel) and the per-task
        # part (loss, context), added by broadcasting over the task's coordinates.
        # The rule's inputs are always constants to the meta-gradient (R&L's simplification): the
        # derivative of log|g| is 1/g, huge where a gradient is small. Second order
        # (first_order=False) differentiates through the update's g below, never through these.
        prep_g = tf.stop_gradient(tf.transpose(preprocess(g), [2, 0, 1]))  # [2, T, N]
        task_feats = [preprocess(loss)]  # [T, 2]
        if self.num_context:
            if self.context is None:
                raise ValueError(f"this Meta-LSTM reads {self.num_context} context features per "
                                 "task; bind them with `with_context` (or `bind_episodes`)")
            task_feats.append(tf.reshape(preprocess(tf.cast(self.context, dtype)),
                                         [-1, 2 * self.num_context]))
        task_x = tf.stop_gradient(tf.concat(task_feats, axis=-1))  # [T, D - 2]
        task_z = tf.transpose(tf.matmul(task_x, kernel[2:]) + bias)  # [4H, T]
        coord_x = tf.concat([tf.reshape(prep_g, [2, -1]), tf.reshape(state.h, [hidden, -1])], 0)
        coord_w = tf.concat([kernel[:2], recurrent], 0)  # [2 + H, 4H]
        z = tf.reshape(tf.matmul(coord_w, coord_x, transpose_a=True), [4 * hidden, -1, num_coords])
        z = z + task_z[:, :, None]  # [4H, T, N]
        z_i, z_f, z_o, z_c = tf.split(z, 4, axis=0)
        c = tf.sigmoid(z_f) * state.c + tf.sigmoid(z_i) * tf.tanh(z_c)
        h = tf.sigmoid(z_o) * tf.tanh(c)  # [H, T, N]
        # The gated layer: its cell state is the parameter itself. Both gates in one matmul:
        # rows [w_F . [h, theta, f_prev], w_I . [h, theta, i_prev]] over [h; theta; f_prev; i_prev].
        gate_x = tf.concat([tf.reshape(h, [hidden, -1])]
                           + [tf.reshape(t, [1, -1]) for t in (theta, state.forget, state.input)],
                           0)  # [H + 3, T N]
        zero = tf.zeros([1], w_f.dtype)
        gate_w = tf.stack([tf.concat([w_f, zero], 0),
                           tf.concat([w_i[:hidden + 1], zero, w_i[hidden + 1:]], 0)])  # [2, H + 3]
        gates = tf.sigmoid(tf.matmul(gate_w, gate_x) + tf.stack([b_f, b_i])[:, None])  # [2, T N]
        forget = tf.reshape(gates[0], tf.shape(theta))
        rate = tf.reshape(gates[1], tf.shape(theta))
        new_theta = forget * theta - rate * g
        return _unflatten(new_theta, params), MetaLSTMState(state.step + 1, h, c, forget, rate)


def init_meta_lstm(hidden_size: int = 20, num_context: int = 0, inner_lr: float = 0.01,
                   seed: int = 0, forget_bias: float = FORGET_BIAS_INIT) -> list[tf.Variable]:
    """The Meta-LSTM's weights as variables, initialised near SGD with rate ``inner_lr``.

    The first layer follows PyTorch's LSTM default (U[-1/sqrt(H), 1/sqrt(H)], as R&L's code), with
    its own forget-gate bias at 1; the gated layer's weights are U[-0.01, 0.01],
    ``b_F = forget_bias`` and ``b_I = logit(inner_lr)``.
    """
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"`hidden_size` must be a positive integer, got {hidden_size!r}")
    if isinstance(num_context, bool) or not isinstance(num_context, int) or num_context < 0:
        raise ValueError(f"`num_context` must be an integer >= 0, got {num_context!r}")
    if not 0.0 < inner_lr < 1.0:
        raise ValueError("`inner_lr` must be in (0, 1) for the Meta-LSTM (its input gate is a "
                         f"sigmoid), got {inner_lr!r}")
    d = 4 + 2 * num_context
    scale = 1.0 / math.sqrt(hidden_size)
    u = lambda shape, i, s: tf.random.stateless_uniform(  # noqa: E731
        shape, [seed, 2000 + i], -s, s, alg="philox")
    lstm_bias = tf.concat([tf.zeros([hidden_size]), tf.ones([hidden_size]),
                           tf.zeros([2 * hidden_size])], axis=0)
    values = [u([d, 4 * hidden_size], 0, scale), u([hidden_size, 4 * hidden_size], 1, scale),
              lstm_bias, u([hidden_size + 2], 2, GATE_INIT_SCALE), tf.constant(float(forget_bias)),
              u([hidden_size + 2], 3, GATE_INIT_SCALE),
              tf.constant(math.log(inner_lr / (1.0 - inner_lr)))]
    names = ("lstm_kernel", "lstm_recurrent", "lstm_bias", "forget_kernel", "forget_bias",
             "input_kernel", "input_bias")
    return [tf.Variable(v, name=f"meta_lstm_{n}") for v, n in zip(values, names)]


def rule_variables(name: str, param_variables: Sequence[tf.Variable], inner_lr: float,
                   hidden_size: int = 20, num_context: int = 0, seed: int = 0) -> list:
    """The meta-parameters a named rule adds beyond the network's: none for ``sgd``, one rate per
    parameter (all ``inner_lr``, learn2learn's MetaSGD init) for ``metasgd``, the LSTM's weights for
    ``meta_lstm``."""
    if name == "sgd":
        return []
    if name == "metasgd":
        return [tf.Variable(tf.fill(v.shape, float(inner_lr)), name=f"rate_{i}")
                for i, v in enumerate(param_variables)]
    if name == "meta_lstm":
        return init_meta_lstm(hidden_size, num_context, inner_lr, seed)
    raise ValueError(f"`update_rule` must be one of {list(RULES)}, got {name!r}")


def make_rule(name: str, inner_lr: float, variables: Sequence) -> adaptation.UpdateRule:
    """The ``UpdateRule`` of a named rule reading ``variables`` (from ``rule_variables``)."""
    if name == "sgd":
        return adaptation.SGD(inner_lr)
    if name == "metasgd":
        return adaptation.PerParameterSGD(list(variables))
    if name == "meta_lstm":
        return MetaLSTM(list(variables))
    raise ValueError(f"`update_rule` must be one of {list(RULES)}, got {name!r}")


def bind_episodes(rule: adaptation.UpdateRule, rewards, mask, advantages) -> adaptation.UpdateRule:
    """``rule`` reading the episodes' statistics when it takes context (a meta-PG Meta-LSTM);
    any other rule is returned unchanged."""
    if isinstance(rule, MetaLSTM) and rule.num_context:
        if rule.num_context != NUM_EPISODE_FEATURES:
            raise ValueError(f"the meta-policy-gradient rule reads {NUM_EPISODE_FEATURES} episode "
                             f"features, but this Meta-LSTM was built for {rule.num_context}")
        return rule.with_context(episode_statistics(rewards, mask, advantages))
    return rule


# -- flat views of task-batched parameter lists ---------------------------------------------------
def _coordinates(p) -> int:
    return int(math.prod(p.shape[1:]))


def _flatten(tensors) -> tf.Tensor:
    """``[T, *shape_k]`` tensors -> ``[T, sum_k prod(shape_k)]``."""
    return tf.concat([tf.reshape(t, [tf.shape(t)[0], _coordinates(t)]) for t in tensors], axis=1)


def _unflatten(flat: tf.Tensor, like) -> list:
    sizes = [_coordinates(p) for p in like]
    pieces = tf.split(flat, sizes, axis=1)
    return [tf.reshape(piece, tf.shape(p)) for piece, p in zip(pieces, like)]


def weights_metadata(weights: Sequence[tf.Tensor]) -> dict:
    """What an export records about a Meta-LSTM with these weights."""
    rule = MetaLSTM(list(weights))
    return {"inner_rule": "meta_lstm", "rule_hidden_size": rule.hidden_size,
            "rule_num_context": rule.num_context}
