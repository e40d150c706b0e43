"""PEARL (Rakelly et al. 2019, arXiv:1903.08254): SAC with a probabilistic context encoder.

Split Acme-style: ``config`` (PEARLConfig), ``networks`` (encoder, actor, twin critics as weight-
list functions), ``losses`` (pure math), ``buffers`` (per-task TF replay), ``learning``
(PEARLLearner: collection, the compiled gradient steps, evaluation).
"""
from metarl_tf.algorithms.pearl.config import PEARLConfig
from metarl_tf.algorithms.pearl.learning import PEARLLearner
from metarl_tf.algorithms.pearl.networks import PEARLNetworks, make_networks

__all__ = ["PEARLConfig", "PEARLLearner", "PEARLNetworks", "make_networks"]
