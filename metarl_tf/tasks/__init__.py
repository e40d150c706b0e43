"""Task distributions.

Importing this package registers the gymnasium environments: ``metarl_tf/PointNav-v0`` and, by
entry-point string (nothing optional is imported until ``gymnasium.make`` asks for it),
``metarl_tf/HalfCheetahVel-v0``, ``metarl_tf/HalfCheetahDir-v0``, ``metarl_tf/AntDir-v0`` (need
``gymnasium[mujoco]``), ``metarl_tf/ML1-v0``, ``metarl_tf/ML10-v0`` and ``metarl_tf/ML45-v0`` (need ``metaworld``).

The MuJoCo and Meta-World families are exported lazily: ``from metarl_tf.tasks import
HalfCheetahVelTasks`` imports ``metarl_tf.tasks.mujoco`` (and MuJoCo) on first use only, so this
package imports without them.
"""
import importlib

import gymnasium

from metarl_tf.tasks.pointnav import (PointNavEnv, PointNavState, PointNavTasks, PointNavTF)
from metarl_tf.tasks.regression import (SinusoidTasks, sample_task_batch, task_batch_from_params)
from metarl_tf.tasks.cartpole import CartPoleDirEnv, CartPoleDirTasks, CartPoleTF
from metarl_tf.tasks.gridworld import GridWorldEnv, GridWorldTasks, GridWorldTF
from metarl_tf.tasks.mountaincar import MountainCarLREnv, MountainCarLRTasks, MountainCarTF
from metarl_tf.tasks.bandits import BanditEnv, BanditTF, BernoulliBanditTasks  # RL² families
from metarl_tf.tasks.tabular_mdp import MDPTask, TabularMDPEnv, TabularMDPTasks, TabularMDPTF

# id -> (entry point, max_episode_steps, kwargs): the optional families (horizons: MAML-RL's 200
# steps for the locomotion tasks, Meta-World's max_path_length 500).
_OPTIONAL_ENVS = {
    "metarl_tf/HalfCheetahVel-v0": ("metarl_tf.tasks.mujoco:HalfCheetahVelEnv", 200, {}),
    "metarl_tf/HalfCheetahDir-v0": ("metarl_tf.tasks.mujoco:HalfCheetahDirEnv", 200, {}),
    "metarl_tf/AntDir-v0": ("metarl_tf.tasks.mujoco:AntDirEnv", 200, {}),
    "metarl_tf/ML1-v0": ("metarl_tf.tasks.metaworld:MetaWorldEnv", 500,
                         {"benchmark": "ML1", "env_name": "reach-v3"}),
    "metarl_tf/ML10-v0": ("metarl_tf.tasks.metaworld:MetaWorldEnv", 500,
                          {"benchmark": "ML10", "env_name": None}),
    "metarl_tf/ML45-v0": ("metarl_tf.tasks.metaworld:MetaWorldEnv", 500,
                          {"benchmark": "ML45", "env_name": None}),
}

# name -> module of the lazily exported optional families.
_LAZY = {
    "HalfCheetahVelTasks": "mujoco", "HalfCheetahDirTasks": "mujoco", "AntDirTasks": "mujoco",
    "HalfCheetahVelEnv": "mujoco", "HalfCheetahDirEnv": "mujoco", "AntDirEnv": "mujoco",
    "MetaWorldTasks": "metaworld", "MetaWorldEnv": "metaworld",
    "ML10Tasks": "metaworld", "ML45Tasks": "metaworld",
}


def register_optional_envs() -> None:
    """Registers the MuJoCo and Meta-World ids by entry-point string; safe to call twice."""
    for env_id, (entry_point, steps, kwargs) in _OPTIONAL_ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=steps,
                               kwargs=dict(kwargs))


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"metarl_tf.tasks.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_optional_envs()

# The discrete-action families of Meta-DQN (horizons: CartPole-v0's 200, MountainCar-v0's 200).
for _id, _entry, _steps in (("metarl_tf/CartPoleDir-v0", "metarl_tf.tasks.cartpole:CartPoleDirEnv", 200),
                            ("metarl_tf/GridWorld-v0", "metarl_tf.tasks.gridworld:GridWorldEnv", 20),
                            ("metarl_tf/MountainCarLR-v0",
                             "metarl_tf.tasks.mountaincar:MountainCarLREnv", 200)):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=_steps)

__all__ = ["SinusoidTasks", "sample_task_batch", "task_batch_from_params", "PointNavEnv",
           "PointNavState", "PointNavTasks", "PointNavTF", "register_optional_envs",
           "CartPoleDirEnv", "CartPoleDirTasks", "CartPoleTF", "GridWorldEnv", "GridWorldTasks",
           "GridWorldTF", "MountainCarLREnv", "MountainCarLRTasks", "MountainCarTF"]
__all__ += ["BanditEnv", "BanditTF", "BernoulliBanditTasks", "MDPTask", "TabularMDPEnv",
            "TabularMDPTasks", "TabularMDPTF"]
# (the lazy names stay out of __all__, so that `import *` does not need MuJoCo or Meta-World)
