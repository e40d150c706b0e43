"""The linear feature baseline of MAML-RL and ProMP, fitted per task in TensorFlow.

rllab's ``LinearFeatureBaseline`` (used by cbfinn/maml_rl, jonasrothfuss/ProMP and
tristandeleu/pytorch-maml-rl; see ``PAPERS.md`` section 2b) regresses each task's discounted returns
on hand-made features of the observation and the time step, by ridge regression::

    o      = clip(obs, -10, 10),    u = h / 100           (h = step index in the episode)
    phi    = [o, o^2, u, u^2, u^3, 1]                       (2 obs_dim + 4 features)
    w      = (Phi^T Phi + c I)^-1 Phi^T G                   (valid steps of the task's episodes)
    c      = 1e-5, then x10 while w is not finite (at most 5 tries)
    V(s_h) = phi(s_h)^T w

Here every task of a meta-batch is fitted at once: ``Phi^T Phi`` is ``[T, F, F]``; one symmetric
eigendecomposition per task gives the ridge solution for every ``c`` in the ladder, and each task
keeps the first finite one. The solve runs in float64 (as rllab's NumPy does) because the normal
equations of cubic time features are badly conditioned in float32.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from metarl_tf._checks import check_float, check_int


@dataclasses.dataclass(frozen=True)
class LinearFeatureBaseline:
    """Per-task linear value baseline on ``[o, o^2, u, u^2, u^3, 1]`` features.

    Example::

        baseline = LinearFeatureBaseline()
        returns = discounted_returns(ep.rewards, ep.mask, 0.99)            # [T, N, H]
        values = baseline.fit_predict(ep.observations, returns, ep.mask)  # [T, N, H]
        advantages = gae(ep.rewards, values, ep.mask, 0.99, 1.0)
    """

    reg_coeff: float = 1e-5  # Ridge coefficient c of the first try.
    num_tries: int = 5  # Tries, multiplying c by 10 each time, until the weights are finite.
    obs_clip: float = 10.0  # Observations are clipped to [-obs_clip, obs_clip].
    time_scale: float = 100.0  # The time feature is u = step / time_scale.

    def __post_init__(self):
        check_float(self, "reg_coeff")
        check_int(self, "num_tries")
        check_float(self, "obs_clip")
        check_float(self, "time_scale")

    def features(self, observations) -> tf.Tensor:
        """``[T, N, H, d]`` observations -> ``[T, N, H, 2 d + 4]`` features (same dtype)."""
        obs = tf.convert_to_tensor(observations)
        o = tf.clip_by_value(obs, -self.obs_clip, self.obs_clip)
        horizon = tf.shape(obs)[-2]
        u = tf.cast(tf.range(horizon), obs.dtype) / tf.cast(self.time_scale, obs.dtype)   # [H]
        u = tf.broadcast_to(u[:, None], tf.concat([tf.shape(obs)[:-1], [1]], 0))      # [T, N, H, 1]
        return tf.concat([o, tf.square(o), u, u ** 2, u ** 3, tf.ones_like(u)], axis=-1)

    def fit(self, observations, returns, mask) -> tf.Tensor:
        """Fits one weight vector per task.

        Args:
          observations: ``[T, N, H, d]``.
          returns: ``[T, N, H]`` regression targets (discounted returns).
          mask: ``[T, N, H]``, 1 on the steps that enter the fit.

        Returns:
          ``[T, 2 d + 4]`` float64 weights.
        """
        phi = tf.cast(self.features(observations), tf.float64)
        m = tf.cast(mask, tf.float64)
        phi_m = phi * m[..., None]
        g = tf.cast(returns, tf.float64) * m
        gram = tf.einsum("tnhf,tnhg->tfg", phi_m, phi_m)                  # Phi^T Phi  [T, F, F]
        rhs = tf.einsum("tnhf,tnh->tf", phi_m, g)                          # Phi^T G    [T, F]
        eigval, eigvec = tf.linalg.eigh(gram)                             # [T, F], [T, F, F]
        proj = tf.einsum("tfe,tf->te", eigvec, rhs)                       # V^T Phi^T G
        regs = self.reg_coeff * 10.0 ** tf.range(self.num_tries, dtype=tf.float64)    # [K]
        # w_k = V diag(1 / (lambda + c_k)) V^T Phi^T G for every c_k of the ladder: [K, T, F]
        w = tf.einsum("tfe,cte->ctf", eigvec, proj[None] / (eigval[None] + regs[:, None, None]))
        finite = tf.reduce_all(tf.math.is_finite(w), axis=-1)              # [K, T]
        # First finite try per task (the last try if none is finite, like rllab).
        first = tf.argmax(tf.cast(finite, tf.int32), axis=0, output_type=tf.int32)
        first = tf.where(tf.reduce_any(finite, axis=0), first, self.num_tries - 1)
        return tf.gather(tf.transpose(w, [1, 0, 2]), first, axis=1, batch_dims=1)

    def predict(self, weights, observations, mask) -> tf.Tensor:
        """``V(s_h) = phi(s_h)^T w_task`` ``[T, N, H]`` in the observations' dtype, 0 on padding."""
        obs = tf.convert_to_tensor(observations)
        phi = tf.cast(self.features(obs), tf.float64)
        values = tf.einsum("tnhf,tf->tnh", phi, tf.cast(weights, tf.float64))
        return tf.cast(values, obs.dtype) * tf.cast(mask, obs.dtype)

    def fit_predict(self, observations, returns, mask) -> tf.Tensor:
        """Fits on the episodes and predicts their values (what MAML-RL does each inner step)."""
        return self.predict(self.fit(observations, returns, mask), observations, mask)
