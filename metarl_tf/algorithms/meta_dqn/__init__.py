"""Meta-DQN: a task-conditioned Q-network whose task embedding z is inferred by a few gradient steps.

Context adaptation in the spirit of CAVIA (Zintgraf et al. 2019, arXiv:1810.03642) applied to deep
Q-learning (DQN, Mnih et al. 2015; double DQN, van Hasselt et al. 2016, arXiv:1509.06461). One
network ``Q(s, a; theta, z)`` serves a whole task family; only the low-dimensional embedding ``z``
is adapted to a task, from ``z_0``, by a few gradient steps on a handful of that task's
transitions (their TD loss, or the error of a z-conditioned reward or one-step model head). The
network, ``z_0``, the per-dimension inner rates and the head are meta-learned through the
adaptation.

Split by role, as Acme splits an agent:

* ``config.py``: ``MetaDQNConfig`` and the settings fixed for every preset.
* ``losses.py``: pure functions: the TD losses, the heads' losses, the inner loss and
  ``adapt_embedding`` (the inner loop, which the export traces), the fine-tuning baseline's steps.
* ``learning.py``: ``MetaDQNLearner`` (acting, replay, the meta-update, evaluation) and
  ``FineTuneDQNLearner`` (the fine-tuning baseline). The per-task from-scratch reference is
  ``metarl_tf.algorithms.dqn.PerTaskDQNLearner``.
"""
from metarl_tf.algorithms.meta_dqn.config import MetaDQNConfig
from metarl_tf.algorithms.meta_dqn.learning import (FineTuneDQNLearner, MetaDQNLearner,
                                                    MetaParams)
from metarl_tf.algorithms.meta_dqn.losses import adapt_embedding

__all__ = ["MetaDQNConfig", "MetaDQNLearner", "FineTuneDQNLearner", "MetaParams",
           "adapt_embedding"]
