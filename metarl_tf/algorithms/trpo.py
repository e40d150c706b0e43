"""Trust-region policy optimisation (Schulman et al. 2015, arXiv:1502.05477): MAML-RL's outer loop.

One TRPO step on meta-parameters ``theta`` with a surrogate loss ``L`` and a mean KL ``D`` (both
functions of ``theta``; in MAML-RL they go through the inner adaptation ``theta -> theta'``)::

    g     = grad L(theta_0)
    H v   = grad (grad D(theta_0) . v) + damping v          Hessian-vector product, nested tapes
            (or its Gauss-Newton form J^T F J v, equal at theta_0: ``gauss_newton_vector_product``)
    s     = H^-1 g                                          conjugate gradient, ``cg_iters`` steps
    beta  = sqrt(2 delta / (s^T H s))                       the step that reaches KL ~ delta
            (s^T H s = s^T (g - r) with CG's final residual r: no extra product)
    theta = theta_0 - ratio^k beta s,  k = 0, 1, ..., max_backtracks - 1
            (the first k with L(theta) < L(theta_0) and D(theta) <= delta; theta_0 if none)

The settings of cbfinn/maml_rl and pytorch-maml-rl (``PAPERS.md`` section 2): ``delta = 0.01``,
10 CG iterations, damping 1e-5, backtrack ratio 0.8, 15 tries. The originals form ``H v`` by finite
differences (MAML-RL, ProMP) or double back-propagation (pytorch-maml-rl); here it is exact, by
nested ``tf.GradientTape``s through the inner step: third order in the inner loss when the KL's
gradient is differentiated again (``hessian_vector_product``), second order in the Gauss-Newton
form that MAML-RL uses (``gauss_newton_vector_product``; 1.4x faster on PointNav, same numbers;
``symmetric_gauss_newton_product`` when the inner step's Jacobian is symmetric: reverse passes only,
the inner adaptation recorded once for all CG products).

Everything is pure TensorFlow over flat parameter vectors (``flatten`` / ``unflatten``), with
``tf.while_loop``s for the conjugate gradient and the line search, so a whole TRPO step traces into
one ``tf.function`` (and XLA).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf


def flatten(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates tensors into one flat vector."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat: tf.Tensor, like: Sequence[tf.Tensor]) -> list:
    """Splits a flat vector into tensors shaped like ``like`` (static shapes)."""
    sizes = [int(tf.TensorShape(t.shape).num_elements()) for t in like]
    parts = tf.split(flat, sizes)
    return [tf.reshape(p, t.shape) for p, t in zip(parts, like)]


def hessian_vector_product(f: Callable[[list], tf.Tensor], params: Sequence[tf.Tensor],
                           vector: Sequence[tf.Tensor]) -> list:
    """``(d^2 f / d params^2) vector`` by differentiating ``grad f . vector`` (nested tapes).

    Args:
      f: params (a list of tensors) -> scalar.
      params: the point.
      vector: tensors shaped like ``params``.
    """
    params = [tf.convert_to_tensor(p) for p in params]
    with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
            inner.watch(params)
            value = f(params)
        grads = inner.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_dot_v = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(v))
                               for g, v in zip(grads, vector)])
    return outer.gradient(grad_dot_v, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def gauss_newton_vector_product(inner_map: Callable[[list], list],
                                kl_fn: Callable[[list], tf.Tensor], params: Sequence[tf.Tensor],
                                vector: Sequence[tf.Tensor]) -> list:
    """``H v`` for ``D(theta) = kl_fn(inner_map(theta))`` at a point where ``kl_fn`` is minimal.

    With ``phi = inner_map(theta)`` (MAML: the adapted parameters) and ``J = d phi / d theta``::

        grad^2 D = J^T (grad^2_phi kl) J + sum_i (d kl / d phi_i) grad^2 phi_i
                 = J^T (grad^2_phi kl) J        at the old policy, where d kl / d phi = 0

    so the product needs ``J v`` (forward mode through ``inner_map``), a Hessian-vector product of
    ``kl_fn`` alone (nested tapes) and ``J^T w`` (reverse mode): second order through the inner
    step where differentiating ``grad D . v`` would be third order. Exact at the old policy, which
    is where TRPO evaluates it.

    Args:
      inner_map: params -> list of tensors (``phi``).
      kl_fn: ``phi`` -> scalar mean KL, minimal (zero gradient) at ``inner_map(params)``.
      params: the point ``theta_0``.
      vector: tensors shaped like ``params``.
    """
    params = [tf.convert_to_tensor(p) for p in params]
    vector = [tf.convert_to_tensor(v) for v in vector]
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape() as tape:
        tape.watch(params)
        with tf.autodiff.ForwardAccumulator(params, vector) as acc:
            phi = inner_map(params)
    j_v = acc.jvp(phi, unconnected_gradients=zero)
    f_j_v = hessian_vector_product(kl_fn, [tf.stop_gradient(p) for p in phi], j_v)
    return tape.gradient(phi, params, output_gradients=f_j_v, unconnected_gradients=zero)


def output_gauss_newton_product(output_map: Callable[[list], tf.Tensor],
                                kl_of_outputs: Callable[[tf.Tensor], tf.Tensor],
                                phi: Sequence[tf.Tensor]) -> Callable[[list], list]:
    """``u -> (grad^2_phi D) u`` for ``D(phi) = kl_of_outputs(output_map(phi))`` at a minimum of
    the KL, through the policy's outputs: ``J_out^T (grad^2_out kl) J_out u``.

    At the old policy every per-sample KL is minimal in the outputs (``d kl / d out = 0``), so the
    second-derivative term of the outputs drops out and this equals the full Hessian product (the
    Fisher-vector product): ``J_out u`` by forward mode through the plain network, the KL's Hessian
    in output space (an elementwise function: cheap), ``J_out^T`` by reverse mode on a tape recorded
    once. About half the time of differentiating the network's backward pass again
    (``hessian_vector_product`` of the composition) on the PointNav policy.

    Args:
      output_map: ``phi`` -> policy outputs (e.g. ``concat([mean, log_std])`` per sample).
      kl_of_outputs: outputs -> scalar mean KL from the old policy, minimal at ``output_map(phi)``.
      phi: the point (the old policy's parameters).
    """
    phi = [tf.convert_to_tensor(p) for p in phi]
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(phi)
        out = output_map(phi)
    out_at = tf.stop_gradient(out)

    def product(vector):
        vector = [tf.convert_to_tensor(v) for v in vector]
        with tf.autodiff.ForwardAccumulator(phi, vector) as acc:
            tangent_out = output_map(phi)
        j_u = acc.jvp(tangent_out, unconnected_gradients=zero)
        f_j_u = hessian_vector_product(lambda o: kl_of_outputs(o[0]), [out_at], [j_u])[0]
        return tape.gradient(out, phi, output_gradients=f_j_u, unconnected_gradients=zero)

    return product


def symmetric_gauss_newton_product(inner_map: Callable[[list], list], kl_fn: Callable,
                                   params: Sequence[tf.Tensor], num_tasks,
                                   output_map: Callable[[list], tf.Tensor] | None = None
                                   ) -> Callable[[list], list]:
    """``v -> H v`` as ``gauss_newton_vector_product``, for a task-batched ``inner_map`` whose
    per-task Jacobians are symmetric; the inner map is recorded once and reused by every product.

    ``inner_map`` takes task-batched parameters ``[num_tasks, *shape]`` (every task starting from
    ``params``) to the adapted ``phi_t``. When ``J_t = d phi_t / d theta_t`` is symmetric -- one
    plain gradient step ``phi_t = theta_t - alpha grad L_t(theta_t)`` has ``J_t = I - alpha grad^2
    L_t``, a Hessian; no adaptation, or first-order steps, have ``J_t = I`` -- the forward product
    ``J_t v`` equals the reverse product ``J_t^T v``, so both halves of ``J^T F J v`` are reverse
    passes through one recording of the inner map::

        J v   = [J_t^T v]_t            tape.gradient(phi, theta_tiled, output_gradients=tile(v))
        F J v                          the KL's Hessian product at phi
        J^T w = sum_t J_t^T w_t        tape.gradient(phi, theta, output_gradients=w)

    No forward-mode pass through the inner gradient and no re-running of the inner adaptation per
    product: TRPO's 10 CG products on MAML-TRPO PointNav take 1.23x less time than with
    ``gauss_newton_vector_product``, same solution to 4e-6 (``benchmarks/maml_rl_pointnav.py``,
    ``part=kl_products_in_cg``; the tests check the products agree with the exact ones).
    Not valid for several differentiated inner steps (``J_2 J_1`` is not symmetric), per-parameter
    rates (``I - diag(alpha) H``) or a learned rule: use ``gauss_newton_vector_product`` there.

    Args:
      inner_map: task-batched params -> list of task-batched tensors (``phi``).
      kl_fn: ``phi`` -> scalar mean KL, minimal (zero gradient) at ``inner_map(tile(params))``;
        or, with ``output_map``, the policy outputs -> that KL.
      params: the point ``theta_0`` (unbatched).
      num_tasks: the task-axis size of ``inner_map``'s input.
      output_map: ``phi`` -> policy outputs: the KL's Hessian product goes through the outputs
        (``output_gauss_newton_product``) instead of nested tapes on ``kl_fn(phi)``.

    Returns:
      A function ``vector -> H vector`` (lists of tensors shaped like ``params``), callable inside
      ``tf.while_loop`` bodies (the conjugate gradient).
    """
    params = [tf.convert_to_tensor(p) for p in params]
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(params)
        tiled = [tf.tile(p[None], [num_tasks] + [1] * len(p.shape)) for p in params]
        phi = list(inner_map(tiled))
    phi_at = [tf.stop_gradient(p) for p in phi]
    if output_map is None:
        kl_product = lambda u: hessian_vector_product(kl_fn, phi_at, u)  # noqa: E731
    else:
        kl_product = output_gauss_newton_product(output_map, kl_fn, phi_at)

    def product(vector):
        tiled_v = [tf.broadcast_to(tf.convert_to_tensor(v)[None], tf.shape(t))
                   for v, t in zip(vector, tiled)]
        j_v = tape.gradient(phi, tiled, output_gradients=tiled_v, unconnected_gradients=zero)
        return tape.gradient(phi, params, output_gradients=kl_product(j_v),
                             unconnected_gradients=zero)

    return product


def conjugate_gradient(matvec: Callable[[tf.Tensor], tf.Tensor], b: tf.Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> tf.Tensor:
    """Approximately solves ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec``.

    Standard CG from ``x_0 = 0`` (Hestenes & Stiefel 1952)::

        r_0 = p_0 = b
        alpha_i = r_i.r_i / p_i.A p_i;   x_i+1 = x_i + alpha_i p_i;   r_i+1 = r_i - alpha_i A p_i
        p_i+1 = r_i+1 + (r_i+1.r_i+1 / r_i.r_i) p_i

    Stops after ``iters`` products or once ``r.r < residual_tol``. ``b`` is a flat vector.
    """
    return _conjugate_gradient(matvec, b, iters, residual_tol)[0]


def _conjugate_gradient(matvec, b, iters, residual_tol):
    """CG returning ``(x, r)`` with the final residual ``r = b - A x``."""
    b = tf.convert_to_tensor(b)
    rdotr = tf.tensordot(b, b, 1)

    def cond(i, x, r, p, rdotr):
        return tf.logical_and(i < iters, rdotr >= residual_tol)

    def body(i, x, r, p, rdotr):
        ap = matvec(p)
        alpha = rdotr / tf.tensordot(p, ap, 1)
        x = x + alpha * p
        r = r - alpha * ap
        new_rdotr = tf.tensordot(r, r, 1)
        p = r + (new_rdotr / rdotr) * p
        return i + 1, x, r, p, new_rdotr

    _, x, r, _, _ = tf.while_loop(cond, body, (tf.constant(0), tf.zeros_like(b), b, b, rdotr))
    return x, r


def trust_region_step_size(direction: tf.Tensor, h_direction: tf.Tensor,
                           max_kl: float) -> tf.Tensor:
    """``beta = sqrt(2 delta / (s^T H s))``: the quadratic model of the KL reaches ``delta`` at
    ``beta s`` (``0.5 beta^2 s^T H s = delta``)."""
    shs = tf.tensordot(direction, h_direction, 1)
    return tf.sqrt(2.0 * max_kl / (shs + 1e-8))


class LineSearchResult(NamedTuple):
    """Result of ``backtracking_line_search``.

    Attributes:
      x: the accepted point (``x0`` when no try was accepted).
      accepted: bool scalar.
      loss: loss at ``x``.
      kl: KL at ``x`` (0 when rejected: ``x0`` is the old policy).
      backtracks: int32 number of shrinkings before acceptance (``max_backtracks`` if none).
    """

    x: tf.Tensor
    accepted: tf.Tensor
    loss: tf.Tensor
    kl: tf.Tensor
    backtracks: tf.Tensor


def backtracking_line_search(evaluate: Callable[[tf.Tensor], tuple], x0: tf.Tensor,
                             full_step: tf.Tensor, loss0, max_kl: float,
                             backtrack_ratio: float = 0.8,
                             max_backtracks: int = 15) -> LineSearchResult:
    """Tries ``x0 + ratio^k full_step`` for ``k = 0 .. max_backtracks - 1``.

    Accepts the first point whose loss is below ``loss0`` and whose KL is at most ``max_kl`` (the
    rllab rule used by MAML-RL); NaNs never pass. If no point passes, returns ``x0``.

    Args:
      evaluate: flat params -> ``(loss, kl)`` scalars.
      x0: flat starting point; ``loss0`` its loss.
      full_step: the flat step at ``k = 0`` (``-beta s`` for TRPO).
    """
    x0 = tf.convert_to_tensor(x0)
    loss0 = tf.convert_to_tensor(loss0, x0.dtype)

    def cond(k, accepted, x, loss, kl):
        return tf.logical_and(k < max_backtracks, tf.logical_not(accepted))

    def body(k, accepted, x, loss, kl):
        shrink = tf.pow(tf.cast(backtrack_ratio, x0.dtype), tf.cast(k, x0.dtype))
        candidate = x0 + shrink * full_step
        new_loss, new_kl = evaluate(candidate)
        new_loss, new_kl = tf.cast(new_loss, x0.dtype), tf.cast(new_kl, x0.dtype)
        ok = tf.logical_and(new_loss < loss0, new_kl <= max_kl)   # False for NaN
        return (tf.where(ok, k, k + 1), ok, tf.where(ok, candidate, x),
                tf.where(ok, new_loss, loss), tf.where(ok, new_kl, kl))

    zero = tf.zeros([], x0.dtype)
    k, accepted, x, loss, kl = tf.while_loop(
        cond, body, (tf.constant(0), tf.constant(False), x0, loss0, zero))
    return LineSearchResult(x, accepted, loss, kl, k)


class TRPOResult(NamedTuple):
    """Result of ``trpo_step``: the new parameters and what the step did."""

    params: list
    loss_before: tf.Tensor
    loss_after: tf.Tensor
    kl: tf.Tensor
    accepted: tf.Tensor
    backtracks: tf.Tensor
    step_size: tf.Tensor


def trpo_step(objective: Callable[[list], tuple], params: Sequence[tf.Tensor], max_kl: float = 0.01,
              cg_iters: int = 10, cg_damping: float = 1e-5, residual_tol: float = 1e-10,
              backtrack_ratio: float = 0.8, max_backtracks: int = 15,
              kl_hvp: Callable[[list], list] | None = None) -> TRPOResult:
    """One step of ``min L(theta) s.t. D(theta_0, theta) <= max_kl`` (see the module docstring).

    Args:
      objective: params (list of tensors) -> ``(loss, kl)`` scalars, where ``kl`` is the mean KL
        from the policy at ``params`` (the old one, held fixed inside ``objective``) to the policy
        at its argument: 0 with zero gradient at ``params``.
      params: the current parameters ``theta_0``.
      max_kl, cg_iters, cg_damping, residual_tol, backtrack_ratio, max_backtracks: as named.
      kl_hvp: ``v -> (grad^2 kl) v`` at ``params`` (lists of tensors); default
        ``hessian_vector_product`` of ``objective``'s KL. MAML-RL passes
        ``gauss_newton_vector_product``, equal at ``params`` and cheaper.

    Returns:
      A ``TRPOResult``; ``params`` is ``theta_0`` if the line search accepted nothing.
    """
    params = [tf.convert_to_tensor(p) for p in params]
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss0, _ = objective(params)
    grads = tape.gradient(loss0, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    g = flatten(grads)

    if kl_hvp is None:
        kl_hvp = lambda v: hessian_vector_product(lambda p: objective(p)[1], params, v)  # noqa

    def fisher_vector_product(v):
        return flatten(kl_hvp(unflatten(v, params))) + cg_damping * v

    direction, residual = _conjugate_gradient(fisher_vector_product, g, cg_iters, residual_tol)
    # H s = g - r for CG's iterate s and residual r: s^T H s without another product.
    beta = trust_region_step_size(direction, g - residual, max_kl)
    x0 = flatten(params)
    search = backtracking_line_search(lambda x: objective(unflatten(x, params)), x0,
                                      -beta * direction, loss0, max_kl, backtrack_ratio,
                                      max_backtracks)
    return TRPOResult(unflatten(search.x, params), loss0, search.loss, search.kl, search.accepted,
                      search.backtracks, beta)
