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

from metarl_tf.envs import register_envs

from metarl_tf.tasks.pointnav import (PointNavEnv, PointNavState, PointNavTasks, PointNavTF)
from metarl_tf.tasks.regression import (SinusoidTasks, sample_task_batch, task_batch_from_params)
from metarl_tf.tasks.cartpole import CartPoleDirEnv, CartPoleDirTasks, CartPoleTF
from metarl_tf.tasks.gridworld import GridWorldEnv, GridWorldTasks, GridWorldTF
from metarl_tf.tasks.mountaincar import MountainCarLREnv, MountainCarLRTasks, MountainCarTF
from metarl_tf.tasks.bandits import BanditEnv, BanditTF, BernoulliBanditTasks  # RL² families
from metarl_tf.tasks.tabular_mdp import MDPTask, TabularMDPEnv, TabularMDPTasks, TabularMDPTF

# name -> module of the lazily exported optional families.
_LAZY = {
    "HalfCheetahVelTasks": "mujoco", "HalfCheetahDirTasks": "mujoco", "AntDirTasks": "mujoco",
    "HalfCheetahVelEnv": "mujoco", "HalfCheetahDirEnv": "mujoco", "AntDirEnv": "mujoco",
    "MetaWorldTasks": "metaworld", "MetaWorldEnv": "metaworld",
    "ML10Tasks": "metaworld", "ML45Tasks": "metaworld",
}


def register_optional_envs() -> None:
    """Registers every family's id (``metarl_tf.envs``); kept for callers of the old name."""
    register_envs()


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"metarl_tf.tasks.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_envs()

__all__ = ["SinusoidTasks", "sample_task_batch", "task_batch_from_params", "PointNavEnv",
           "PointNavState", "PointNavTasks", "PointNavTF", "register_optional_envs",
           "CartPoleDirEnv", "CartPoleDirTasks", "CartPoleTF", "GridWorldEnv", "GridWorldTasks",
           "GridWorldTF", "MountainCarLREnv", "MountainCarLRTasks", "MountainCarTF"]
__all__ += ["BanditEnv", "BanditTF", "BernoulliBanditTasks", "MDPTask", "TabularMDPEnv",
            "TabularMDPTasks", "TabularMDPTF"]
# (the lazy names stay out of __all__, so that `import *` does not need MuJoCo or Meta-World)
