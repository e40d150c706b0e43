"""metarl-tf: meta-learning and meta-reinforcement learning for TensorFlow / Keras 3.

Importing the package registers its gymnasium environments (``metarl_tf/PointNav-v0``,
``metarl_tf/HalfCheetahVel-v0``, ``metarl_tf/ML10-v0``, ...), so that, as gymnasium 1.x suggests::

    import gymnasium as gym
    import metarl_tf

    gym.register_envs(metarl_tf)      # a no-op that keeps linters from dropping the import
    env = gym.make("metarl_tf/PointNav-v0")
"""
__version__ = "0.1.0"

from metarl_tf.envs import register_envs as _register_envs  # noqa: E402

_register_envs()  # by entry-point string: imports gymnasium only, no family module
