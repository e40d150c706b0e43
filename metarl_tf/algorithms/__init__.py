"""Meta-learning algorithms: one module each, a frozen config plus a learner."""
from metarl_tf.algorithms.maml import MAMLConfig, MAMLLearner
from metarl_tf.algorithms.metasgd import MetaSGDConfig, MetaSGDLearner
from metarl_tf.algorithms.reptile import ReptileConfig, ReptileLearner, reptile_direction

__all__ = ["MAMLConfig", "MAMLLearner", "MetaSGDConfig", "MetaSGDLearner", "ReptileConfig",
           "ReptileLearner", "reptile_direction"]
