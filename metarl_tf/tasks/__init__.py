"""Task distributions."""
from metarl_tf.tasks.regression import (SinusoidTasks, sample_task_batch, task_batch_from_params)

__all__ = ["SinusoidTasks", "sample_task_batch", "task_batch_from_params"]
