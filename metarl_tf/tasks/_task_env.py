"""The ``task`` attribute every task environment exposes."""


class TaskAttribute:
    """Mixin: ``env.task`` reads ``get_task()`` and assigning it calls ``set_task``.

    Vector environments set tasks with ``set_attr("task", ...)``, so the attribute is the one
    interface the sampler needs; the subclass defines ``get_task`` and ``set_task``.
    """

    @property
    def task(self):
        return self.get_task()

    @task.setter
    def task(self, value):
        self.set_task(value)
