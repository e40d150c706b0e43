"""Keras models used by the meta-learners."""
from metarl_tf.networks.mlp import mlp

__all__ = ["mlp"]
