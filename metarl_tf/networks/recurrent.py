"""Recurrent policies for RL²: a GRU or LSTM that adapts in its hidden state.

RL² (Duan et al. 2016, arXiv:1611.02779) feeds a recurrent policy, at every step ``t`` of a trial,
the tuple ``(o_t, a_t-1, r_t-1, d_t-1)``: the observation, the previous action (one-hot for a
discrete action space), the previous reward and the flag that the previous step ended an episode.
The hidden state is **reset between trials** (a new task) and **kept between the episodes of a
trial**, so what the network learned about the task in episode 1 steers episode 2::

    x_t          = concat(o_t, onehot(a_t-1), r_t-1, d_t-1)            (rl2_input)
    h_t+1        = Cell(MLP(x_t), h_t)                                  GRU or LSTM
    pi(. | h_t+1) = softmax(W_pi h_t+1)  or  N(W_mu h_t+1, exp(log_std))
    V(h_t+1)     = w_v h_t+1

With ``separate_value=True`` the value has a cell (and MLP) of its own reading the same ``x_t``,
``V = w_v h^v_t+1``, and the state is ``concat(policy state, value state)``: the policy's cell is
then shaped by the policy loss alone, as in lucaslingle/pytorch_rl2 (separate policy and value
networks). On the RL² tabular MDPs the shared cell learned far slower (``docs/algorithms/rl2.md``).

The model is one step of that recursion, an ordinary functional Keras model
``[x [B, input_dim], state [B, state_size]] -> [head, value [B, 1], next_state [B, state_size]]``
(``head`` = logits ``[B, A]``, or ``concat(mean, log_std)`` ``[B, 2 act_dim]``). The state is one
flat tensor: ``h`` for a GRU (``state_size = units``), ``concat(h, c)`` for an LSTM
(``state_size = 2 units``), so that it can be carried by a client of the exported policy. Whole
trials are ``tf.scan``s over this step (``unroll``): the same function in the rollout, in the
PPO loss and in the export, so the three agree exactly.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from metarl_tf.networks.policies import GaussianHead

CELLS = ("gru", "lstm")


def _check_size(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")


def rl2_input_dim(obs_dim: int, action_size: int) -> int:
    """Width of ``rl2_input``: observation + previous action + reward + done."""
    return obs_dim + action_size + 2


def rl2_input(observation, prev_action, prev_reward, done, num_actions: int | None) -> tf.Tensor:
    """``concat(o_t, a_t-1, r_t-1, d_t-1)`` for any leading batch shape.

    Args:
      observation: ``[..., obs_dim]`` float32.
      prev_action: ``[...]`` int (categorical; one-hot encoded here, ``-1`` = none yet: all zeros)
        or ``[..., act_dim]`` float32 (Gaussian).
      prev_reward: ``[...]`` float32.
      done: ``[...]`` (bool or float): the previous step ended an episode.
      num_actions: the number of discrete actions, or ``None`` for a continuous action.
    """
    observation = tf.cast(observation, tf.float32)
    if num_actions is not None:
        prev = tf.one_hot(tf.cast(prev_action, tf.int32), num_actions, dtype=tf.float32)
    else:
        prev = tf.cast(prev_action, tf.float32)
    return tf.concat([observation, prev, tf.cast(prev_reward, tf.float32)[..., None],
                      tf.cast(done, tf.float32)[..., None]], axis=-1)


def recurrent_policy(input_dim: int, num_actions: int | None = None, act_dim: int | None = None,
                     units: int = 256, cell: str = "gru", hidden: Sequence[int] = (),
                     activation: str = "tanh", init_log_std: float = 0.0, seed: int = 0,
                     separate_value: bool = False,
                     name: str = "recurrent_policy") -> keras.Model:
    """A one-step recurrent actor-critic (categorical or Gaussian head, value head).

    Args:
      input_dim: width of ``rl2_input`` (``rl2_input_dim(obs_dim, action_size)``).
      num_actions: give it for a categorical policy (logits head) ...
      act_dim: ... or this for a diagonal Gaussian (mean head + learned state-independent log-std).
      units: cell width (RL² paper / pytorch_rl2: a GRU of 256; garage: 64).
      cell: ``"gru"`` or ``"lstm"``.
      hidden: widths of an optional MLP between the input and the cell.
      activation: the MLP's activation.
      init_log_std: the Gaussian head's initial log-std.
      seed: initializer seed.
      separate_value: give the value head its own MLP and cell (same widths and cell type); the
        state becomes ``concat(policy state, value state)`` (``state_size`` doubles).

    Returns:
      A built functional Keras model ``[x, state] -> [head, value [B, 1], next_state]``; its
      ``state_size`` attribute is the width of ``state``, ``distribution`` is ``"categorical"`` or
      ``"gaussian"``, ``num_actions`` / ``act_dim`` the head's size.
    """
    _check_size("input_dim", input_dim)
    _check_size("units", units)
    if cell not in CELLS:
        raise ValueError(f"`cell` must be one of {CELLS}, got {cell!r}")
    if (num_actions is None) == (act_dim is None):
        raise ValueError("give exactly one of `num_actions` (categorical) and `act_dim` (Gaussian)")
    if num_actions is not None:
        _check_size("num_actions", num_actions, minimum=2)
    else:
        _check_size("act_dim", act_dim)
    hidden = tuple(hidden)
    for width in hidden:
        _check_size("hidden", width)
    if not isinstance(separate_value, bool):
        raise ValueError(f"`separate_value` must be a bool, got {separate_value!r}")
    cell_size = units if cell == "gru" else 2 * units
    state_size = 2 * cell_size if separate_value else cell_size
    glorot = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731

    x_in = keras.Input((input_dim,), name="x")
    state_in = keras.Input((state_size,), name="state")
    k = len(hidden)

    def tower(prefix: str, offset: int, state):
        """MLP + cell on ``x``: ``(output h, next cell state)``."""
        z = x_in
        for i, width in enumerate(hidden):
            z = keras.layers.Dense(width, activation=activation,
                                   kernel_initializer=glorot(offset + i),
                                   name=f"{prefix}dense_{i}")(z)
        orth = keras.initializers.Orthogonal(seed=seed + offset + k)
        if cell == "gru":
            rnn = keras.layers.GRUCell(units, kernel_initializer=glorot(offset + k),
                                       recurrent_initializer=orth, name=f"{prefix}gru")
            h, _ = rnn(z, [state])
            return h, h
        rnn = keras.layers.LSTMCell(units, kernel_initializer=glorot(offset + k),
                                    recurrent_initializer=orth, name=f"{prefix}lstm")
        h, (h2, c2) = rnn(z, [state[:, :units], state[:, units:]])
        return h, keras.layers.Concatenate(name=f"{prefix}lstm_state")([h2, c2])

    if separate_value:
        h, pi_state = tower("", 0, state_in[:, :cell_size])
        h_v, v_state = tower("value_", k + 3, state_in[:, cell_size:])
        next_state = keras.layers.Concatenate(name="policy_value_state")([pi_state, v_state])
    else:
        h, next_state = tower("", 0, state_in)
        h_v = h
    if num_actions is not None:
        head = keras.layers.Dense(num_actions, kernel_initializer=keras.initializers.GlorotUniform(
            seed=seed + k + 1), name="logits")(h)
    else:
        mean = keras.layers.Dense(act_dim, kernel_initializer=keras.initializers.GlorotUniform(
            seed=seed + k + 1), name="mean")(h)
        head = GaussianHead(init_log_std, name="log_std")(mean)
    value = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(
        seed=seed + k + 2), name="value")(h_v)
    model = keras.Model([x_in, state_in], [head, value, next_state], name=name)
    model.state_size = state_size
    model.units = units
    model.cell_type = cell
    model.separate_value = separate_value
    model.input_dim = input_dim
    model.distribution = "categorical" if num_actions is not None else "gaussian"
    model.num_actions = num_actions
    model.act_dim = act_dim
    return model


class RecurrentApply:
    """The model as pure functions of explicit parameters (``stateless_call``).

    Args:
      model: a ``recurrent_policy`` model.
      non_trainable: values for its non-trainable variables (default: the model's own; an
        export passes its copies).

    ``step(params, x, state) -> (head, value [B], next_state)``; ``unroll(params, xs, state0,
    reset=None)`` runs a ``tf.scan`` over the time axis of ``xs`` ``[B, T, input_dim]`` and returns
    ``(heads [B, T, ...], values [B, T], states [B, T, state_size], final_state)``, where
    ``states[:, t]`` is the state *before* step ``t`` (what the export's client would send).
    ``reset`` ``[B, T]`` (optional, bool) zeroes the state before step ``t`` (a new trial).
    """

    def __init__(self, model: keras.Model, non_trainable=None):
        self.model = model
        self.state_size = int(model.state_size)
        self.non_trainable = list(model.non_trainable_variables if non_trainable is None
                                  else non_trainable)

    def initial_state(self, batch_size) -> tf.Tensor:
        return tf.zeros([batch_size, self.state_size], tf.float32)

    def step(self, params, x, state):
        (head, value, next_state), _ = self.model.stateless_call(
            list(params), self.non_trainable, [x, state], training=False)
        return head, value[..., 0], next_state

    def unroll(self, params, xs, state0, reset=None):
        xs_t = tf.transpose(xs, [1, 0, 2])
        if reset is None:
            reset_t = tf.zeros(tf.shape(xs_t)[:2], tf.bool)
        else:
            reset_t = tf.transpose(tf.cast(reset, tf.bool), [1, 0])
        batch = tf.shape(xs)[0]
        head_width = self.model.outputs[0].shape[-1]

        def body(carry, elem):
            state = carry[3]
            x_t, r_t = elem
            state = tf.where(r_t[:, None], tf.zeros_like(state), state)
            head, value, nxt = self.step(params, x_t, state)
            return head, value, state, nxt

        init = (tf.zeros([batch, head_width]), tf.zeros([batch]), state0, state0)
        heads, values, states, finals = tf.scan(body, (xs_t, reset_t), initializer=init)
        return (tf.transpose(heads, [1, 0, 2]), tf.transpose(values, [1, 0]),
                tf.transpose(states, [1, 0, 2]), finals[-1])
