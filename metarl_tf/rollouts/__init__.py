"""Episodes for meta-RL: vectorized collection into padded tensors, returns, GAE, baselines.

* ``episodes``: the ``Episodes`` batch ``[T tasks, N episodes, H steps, ...]`` with a mask;
* ``sampler``: collection with gymnasium's vector API (``collect_episodes``, ``LocalSampler``);
* ``ray_sampler``: the same episodes collected on Ray actors (``RaySampler``; the ``ray`` extra,
  imported only from its module);
* ``tf_rollout``: in-graph rollouts on the pure-TF PointNav (``rollout_pointnav``);
* ``returns``: discounted returns, GAE and advantage normalization as pure functions;
* ``baselines``: the linear feature baseline of MAML-RL / ProMP, fitted per task.
"""
from metarl_tf.rollouts.baselines import LinearFeatureBaseline
from metarl_tf.rollouts.episodes import Episodes, check_episodes
from metarl_tf.rollouts.returns import discounted_returns, gae, normalize_advantages
from metarl_tf.rollouts.sampler import (EnvFaults, EnvStepError, LocalSampler, PolicyFn, TaskEnv,
                                        collect_episodes, episode_seed, restart_vector_env,
                                        make_vector_env, policy_from_params)
from metarl_tf.rollouts.tf_rollout import (pointnav_oracle, rollout_pointnav,
                                           rollout_pointnav_actions)

__all__ = ["EnvFaults", "EnvStepError", "Episodes", "LinearFeatureBaseline", "LocalSampler",
           "PolicyFn", "TaskEnv", "episode_seed",
           "check_episodes", "collect_episodes", "discounted_returns", "gae", "make_vector_env",
           "normalize_advantages", "pointnav_oracle", "policy_from_params", "rollout_pointnav",
           "restart_vector_env", "rollout_pointnav_actions"]
