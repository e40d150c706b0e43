"""Task distributions.

Importing this package registers the gymnasium environments (``metarl_tf/PointNav-v0``).
"""
from metarl_tf.tasks.pointnav import (PointNavEnv, PointNavState, PointNavTasks, PointNavTF)
from metarl_tf.tasks.regression import (SinusoidTasks, sample_task_batch, task_batch_from_params)

__all__ = ["SinusoidTasks", "sample_task_batch", "task_batch_from_params", "PointNavEnv",
           "PointNavState", "PointNavTasks", "PointNavTF"]
