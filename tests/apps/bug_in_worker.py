"""``ceylon-worker --app bug_in_worker``: a worker with a bug planted in its task runner (the
first task it starts raises inside the runner itself, not in the task)."""

from ceylon_net.edge.runner import TaskRunner


async def _execute(self, assignment, *how):
    raise RuntimeError("a planted bug")


TaskRunner._execute = _execute
