"""Adapters to other ecosystems' protocols.

Each adapter is a module of its own, imported on demand, so that this package imports with the core
install alone:

* ``metarl_tf.integrations.metaworld``: Meta-World's official evaluation protocol
  (``metaworld.evaluation.metalearning_evaluation`` at its ML10/ML45 defaults) for the library's
  learners, adapted and unadapted, per task.
* ``metarl_tf.integrations.tf_agents``: task families as TF-Agents environments and exported
  SavedModels as TF-Agents policies. It needs TF-Agents, which lives in its own environment
  (``make venv-tf-agents``, the extra ``metarl-tf[tf-agents]``, ``TF_USE_LEGACY_KERAS=1``);
  see docs/TF_AGENTS.md.
"""
