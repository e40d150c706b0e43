"""Keras models used by the meta-learners."""
from metarl_tf.networks.mlp import mlp
from metarl_tf.networks.policies import (GaussianHead, GaussianPolicyApply, categorical_entropy,
                                         categorical_kl, categorical_log_prob,
                                         categorical_mlp_policy, categorical_sample,
                                         gaussian_entropy, gaussian_kl, gaussian_log_prob,
                                         gaussian_mlp_policy, gaussian_policy_apply,
                                         gaussian_policy_apply_numpy, gaussian_sample,
                                         policy_apply_fn, split_gaussian)

__all__ = ["mlp", "GaussianHead", "GaussianPolicyApply", "categorical_entropy", "categorical_kl",
           "categorical_log_prob", "categorical_mlp_policy", "categorical_sample",
           "gaussian_entropy", "gaussian_kl", "gaussian_log_prob", "gaussian_mlp_policy",
           "gaussian_policy_apply", "gaussian_policy_apply_numpy", "gaussian_sample",
           "policy_apply_fn", "split_gaussian"]
from metarl_tf.networks.recurrent import (RecurrentApply, recurrent_policy, rl2_input,  # noqa: E402
                                          rl2_input_dim)

__all__ += ["RecurrentApply", "recurrent_policy", "rl2_input", "rl2_input_dim"]
