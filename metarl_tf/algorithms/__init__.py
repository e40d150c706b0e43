"""Meta-learning algorithms: one module each, a frozen config plus a learner."""
from metarl_tf.algorithms.maml import MAMLConfig, MAMLLearner
from metarl_tf.algorithms.metasgd import MetaSGDConfig, MetaSGDLearner
from metarl_tf.algorithms.reptile import ReptileConfig, ReptileLearner, reptile_direction
from metarl_tf.algorithms.pg_losses import inner_pg_loss
from metarl_tf.algorithms.maml_rl import (MAMLRLConfig, MAMLRLLearner, MetaSGDRLLearner,
                                          ReptileRLConfig, ReptileRLLearner, pretrained_baseline)

__all__ = ["MAMLConfig", "MAMLLearner", "MetaSGDConfig", "MetaSGDLearner", "ReptileConfig",
           "ReptileLearner", "reptile_direction", "inner_pg_loss", "MAMLRLConfig", "MAMLRLLearner",
           "MetaSGDRLLearner", "ReptileRLConfig", "ReptileRLLearner", "pretrained_baseline"]
from metarl_tf.algorithms.rl2 import (RL2Config, RL2Learner, ppo_loss,  # noqa: E402
                                      rl2_policy_for, trial_advantages)

__all__ += ["RL2Config", "RL2Learner", "ppo_loss", "rl2_policy_for", "trial_advantages"]
