"""The inner loop: the one implementation of "take k gradient steps on a task".

Training differentiates through it (second-order MAML), first-order mode stops the inner gradients,
Meta-SGD passes learned per-parameter rates, Reptile runs it without an outer gradient, evaluation
steps it one update at a time, and the exported ``adapt`` signature traces it with a run-time step
count. Nothing else in the library computes an adapted parameter.

Everything is batched over tasks: parameters carry a leading task axis ``T`` and ``task_loss``
returns one loss per task, shape ``[T]``. Because task ``t``'s loss depends only on slice ``t`` of
the parameters, the gradient of ``sum_t loss_t`` with respect to the batched parameters is exactly
the stack of per-task gradients, so one tape computes all of them.

The update, for every parameter tensor ``theta`` and step ``i``::

    g_i        = d loss_support(theta_i) / d theta_i      (stop_gradient(g_i) when first order)
    theta_i+1  = theta_i - alpha * g_i                     (SGD; alpha a scalar)
    theta_i+1  = theta_i - alpha (*) g_i                   (Meta-SGD; alpha per parameter, (*) = elementwise)
    theta_i+1  = theta_i - alpha_i (*) g_i                 (per-step Meta-SGD; alpha_i per step and
                                                            parameter, as MAML++'s per-step rates)
    theta_i+1, s_i+1 = rule(theta_i, g_i, s_i, L_i)        (learned rules, e.g. the Meta-LSTM in
                                                            ``metarl_tf.update_rules``; state s_0
                                                            from ``rule.init_state`` per adaptation)

In first-order mode the loss ``L_i`` handed to a rule is a constant too (as the gradients), which is
what the Meta-LSTM papers do; the rule's own weights still get the meta-gradient through its output.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, Sequence

import tensorflow as tf

TaskLoss = Callable[[list], tf.Tensor]  # batched params -> per-task losses [T]


class UpdateRule(Protocol):
    """Maps (parameters, gradients, rule state, loss) to new parameters and state.

    Plain SGD and Meta-SGD's learned rates are stateless; learned rules (an LSTM optimiser) keep
    state across inner steps. ``init_state`` is called once per adaptation.
    """

    def init_state(self, params: Sequence[tf.Tensor]):
        ...

    def update(self, params: Sequence[tf.Tensor], grads: Sequence[tf.Tensor], state,
               loss: tf.Tensor) -> tuple[list, object]:
        ...


class SGD(NamedTuple):
    """``theta - lr * g`` with one scalar rate (a Python float or a scalar tensor)."""

    learning_rate: float | tf.Tensor

    def init_state(self, params):
        return ()

    def update(self, params, grads, state, loss):
        lr = tf.cast(self.learning_rate, params[0].dtype)
        return [p - lr * g for p, g in zip(params, grads)], state


class PerParameterSGD(NamedTuple):
    """Meta-SGD (Li et al. 2017, arXiv:1707.09835): ``theta - alpha (*) g``, one rate per parameter.

    ``rates`` has one tensor per parameter tensor, with the parameter's unbatched shape; it broadcasts
    over the task axis. When the rates are variables read inside a tape, the meta-gradient reaches them.
    """

    rates: Sequence[tf.Tensor]

    def init_state(self, params):
        return ()

    def update(self, params, grads, state, loss):
        return [p - tf.cast(a, p.dtype) * g for p, a, g in zip(params, self.rates, grads)], state


class PerStepSGD(NamedTuple):
    """Per-step, per-parameter rates: step ``i`` is ``theta - alpha_i (*) g``.

    ``rates`` has one tensor per parameter tensor, of shape ``[S] + unbatched parameter shape``:
    row ``i`` is step ``i``'s rates, and steps past the last row reuse it. Learned per-step rates
    are MAML++'s "per-step learning rates" (Antoniou et al. 2019, arXiv:1810.09502: there per
    layer and step; here per parameter and step, Meta-SGD's granularity). The rule's state is the
    step index (an int32 scalar), so it runs in the unrolled loop and in the run-time
    ``tf.while_loop`` alike.
    """

    rates: Sequence[tf.Tensor]

    def init_state(self, params):
        return tf.constant(0, tf.int32)

    def update(self, params, grads, state, loss):
        new = []
        for p, a, g in zip(params, self.rates, grads):
            a = tf.convert_to_tensor(a)
            # a one-hot contraction rather than a gather: the rates' gradient stays dense
            pick = tf.one_hot(tf.minimum(state, tf.shape(a)[0] - 1), tf.shape(a)[0], dtype=a.dtype)
            row = tf.tensordot(pick, a, axes=1)
            new.append(p - tf.cast(row, p.dtype) * g)
        return new, state + 1


class Adapted(NamedTuple):
    """Result of ``adapt``.

    Attributes:
      params: adapted, task-batched parameters.
      state: the update rule's final state.
      support_loss: ``[T]`` support loss before the first step (None when no step was taken).
      trajectory: with ``keep_trajectory=True`` (unrolled loop only), the parameters after every
        step, ``[theta_1, ..., theta_K]``; otherwise None.
    """

    params: list
    state: object
    support_loss: tf.Tensor | None
    trajectory: list | None = None


def inner_step(task_loss: TaskLoss, params: Sequence[tf.Tensor], rule: UpdateRule, state,
               first_order: bool = False):
    """One inner update of every task's parameters.

    Returns:
      ``(new_params, new_state, loss)`` where ``loss`` is the ``[T]`` support loss at ``params``.
    """
    params = list(params)
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = task_loss(params)
        total = tf.reduce_sum(loss)
    grads = tape.gradient(total, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    rule_loss = loss
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
        rule_loss = tf.stop_gradient(loss)
    new_params, new_state = rule.update(params, grads, state, rule_loss)
    return list(new_params), new_state, loss


def adapt(task_loss: TaskLoss, params: Sequence[tf.Tensor], rule: UpdateRule,
          num_steps: int | tf.Tensor, first_order: bool = False,
          keep_trajectory: bool = False, support_loss: bool = True) -> Adapted:
    """Runs ``num_steps`` inner updates from ``params`` (task-batched).

    Args:
      task_loss: batched params -> ``[T]`` support losses.
      params: task-batched starting parameters (``FunctionalModel.tile`` of the meta-parameters).
      rule: the update rule (``SGD``, ``PerParameterSGD`` or a learned rule).
      num_steps: a Python int unrolls the loop (what training differentiates through); a scalar
        int32 tensor runs a ``tf.while_loop`` whose trip count is decided at run time (what an
        exported signature uses).
      first_order: stop the gradient through the inner gradients (FOMAML).
      keep_trajectory: also return the parameters after every step (``Adapted.trajectory``), e.g.
        for a meta-loss summed over the steps (Andrychowicz et al. 2016); needs an int ``num_steps``.
      support_loss: with False, the run-time loop does not carry the first step's support loss
        (``Adapted.support_loss`` is None): one ``tf.cond`` less per step, for callers that only
        want the parameters (the exported ``adapt``). The unrolled loop ignores it (its first loss
        costs nothing).

    Returns:
      An ``Adapted`` tuple.
    """
    params = list(params)
    state = rule.init_state(params)
    if isinstance(num_steps, int):
        if num_steps < 0:
            raise ValueError(f"`num_steps` must be >= 0, got {num_steps}")
        first_loss = None
        trajectory = []
        for i in range(num_steps):
            params, state, loss = inner_step(task_loss, params, rule, state, first_order)
            trajectory.append(params)
            if i == 0:
                first_loss = loss
        return Adapted(params, state, first_loss, trajectory if keep_trajectory else None)

    if keep_trajectory:
        raise ValueError("`keep_trajectory` needs a Python int `num_steps` (the unrolled loop)")
    num_steps = tf.convert_to_tensor(num_steps, tf.int32)
    if not support_loss:
        def bare_body(i, params, state):
            new_params, new_state, _ = inner_step(task_loss, params, rule, state, first_order)
            return i + 1, new_params, new_state

        _, params, state = tf.while_loop(lambda i, *_: i < num_steps, bare_body,
                                         (tf.constant(0), params, state))
        return Adapted(list(params), state, None)

    def body(i, params, state, first_loss):
        new_params, new_state, loss = inner_step(task_loss, params, rule, state, first_order)
        first_loss = tf.cond(tf.equal(i, 0), lambda: loss, lambda: first_loss)
        return i + 1, new_params, new_state, first_loss

    t = tf.shape(params[0])[0]
    init_loss = tf.fill([t], tf.constant(float("nan"), params[0].dtype))
    _, params, state, first_loss = tf.while_loop(
        lambda i, *_: i < num_steps, body, (tf.constant(0), params, state, init_loss))
    return Adapted(list(params), state, first_loss)
