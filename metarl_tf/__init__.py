"""metarl-tf: meta-learning and meta-reinforcement learning for TensorFlow / Keras 3."""
__version__ = "0.1.0"
