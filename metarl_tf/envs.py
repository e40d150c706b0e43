"""The gymnasium ids of the task families, registered by entry-point string.

Registering needs gymnasium alone: no family module (nor TensorFlow, MuJoCo or Meta-World) is
imported until ``gymnasium.make`` asks for its environment. ``import metarl_tf`` calls
``register_envs()``, so ``gymnasium.make("metarl_tf/PointNav-v0")`` works after it.
"""
from __future__ import annotations

# id -> (entry point, max_episode_steps, kwargs). Horizons: PointNav 100 (MAML paper), the
# locomotion tasks MAML-RL's 200, Meta-World's max_path_length 500, tabular MDPs 10 (RL² paper),
# CartPole-v0's and MountainCar-v0's 200, the grid-world 20; a bandit episode is one pull.
ENV_SPECS = {
    "metarl_tf/PointNav-v0": ("metarl_tf.tasks.pointnav:PointNavEnv", 100, {}),
    "metarl_tf/BernoulliBandit-v0": ("metarl_tf.tasks.bandits:BanditEnv", None, {}),
    "metarl_tf/TabularMDP-v0": ("metarl_tf.tasks.tabular_mdp:TabularMDPEnv", 10, {}),
    "metarl_tf/CartPoleDir-v0": ("metarl_tf.tasks.cartpole:CartPoleDirEnv", 200, {}),
    "metarl_tf/GridWorld-v0": ("metarl_tf.tasks.gridworld:GridWorldEnv", 20, {}),
    "metarl_tf/MountainCarLR-v0": ("metarl_tf.tasks.mountaincar:MountainCarLREnv", 200, {}),
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


def register_envs() -> None:
    """Registers every id above that gymnasium does not know yet; safe to call twice."""
    import gymnasium

    for env_id, (entry_point, steps, kwargs) in ENV_SPECS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=steps,
                               kwargs=dict(kwargs))
