"""Seed 003 (the typed-message version of the task management tutorial), ported literally:
its own dataclasses, ``@on_message(type=...)`` handlers and ``broadcast_data`` calls, as
written. Every change is marked ``# port:``:

- imports come from ceylon_net; the tutorial's pydantic dataclasses become ``@message``
  dataclasses (named apart from ceylon_net's built-in Task, TaskAssignment, TaskResult);
- the manager's check ``len(self.workers) == len(self.tasks)`` compares its own lists (always
  3 == 3), so it broadcast to whoever had joined first; it counts connected agents instead, as
  the tutorial means (and assigns once: three joins may all see three);
- ``CEYLON_PORT`` picks the port and ``CEYLON_TIME_SCALE`` shortens the sleeps.

As the tutorial is written, every worker hears every assignment and runs all three; the
manager stops after the first three results (task 1, the shortest, from each worker).
examples/task_management_typed.py is the idiomatic port.
"""

import asyncio
import os

from loguru import logger

from ceylon_net import Agent, AgentDetail, CoreAdmin, message, on_message  # port: was ceylon

TIME_SCALE = float(os.environ.get("CEYLON_TIME_SCALE", "1.0"))  # port: shorter sleeps in tests


@message(name="seed003.Task")  # port: was @pydantic.dataclasses.dataclass
class Task:
    id: int
    description: str
    difficulty: int  # 1-10 scale


@message(name="seed003.TaskAssignment")  # port: as above
class TaskAssignment:
    task: Task


@message(name="seed003.TaskResult")  # port: as above
class TaskResult:
    task_id: int
    worker: str
    success: bool


class WorkerAgent(Agent):
    def __init__(self, name: str, skill_level: int):
        self.name = name
        self.skill_level = skill_level
        super().__init__(name=name, workspace_id="task_management", admin_port=8000)

    @on_message(type=TaskAssignment)
    async def on_task_assignment(self, data: TaskAssignment):
        logger.info(f"{self.name} received task: {data.task.description}")
        # Simulate task execution
        await asyncio.sleep(data.task.difficulty * TIME_SCALE)  # port: * TIME_SCALE
        success = self.skill_level >= data.task.difficulty
        await self.broadcast_data(TaskResult(task_id=data.task.id, worker=self.name, success=success))


class TaskManager(CoreAdmin):
    tasks = []
    workers = []
    task_results = []

    def __init__(self, tasks, workers):
        self.workers = workers
        self.tasks = tasks
        self.task_results = []  # port: per instance (the tutorial shares the class's list)
        self.tasks_assigned = False  # port: assign once
        super().__init__(name="task_management", workspace_id="task_management")  # port: no port=8000 (CEYLON_PORT)

    async def on_agent_connected(self, topic: str, agent_id: AgentDetail):
        logger.info(f"Worker {agent_id} connected")
        # port: was `if len(self.workers) == len(self.tasks):` (always true: broadcast to the first to join)
        if len(self.get_connected_agents()) == len(self.workers) and not self.tasks_assigned:
            self.tasks_assigned = True
            await self.assign_tasks()

    async def assign_tasks(self):
        for task, worker in zip(self.tasks, self.workers):
            await self.broadcast_data(TaskAssignment(task=task))

    @on_message(type=TaskResult)
    async def on_task_result(self, result: TaskResult):
        self.task_results.append(result)
        logger.info(
            f"Received result for task {result.task_id} from {result.worker}: {'Success' if result.success else 'Failure'}")
        if len(self.task_results) == len(self.tasks):
            await self.end_task_management()

    async def end_task_management(self):
        for r in sorted(self.task_results, key=lambda r: (r.task_id, r.worker)):  # port: printed
            print(f"task {r.task_id} -> {r.worker}: {'success' if r.success else 'failure'}")
        success_rate = sum(1 for result in self.task_results if result.success) / len(self.task_results)
        logger.info(f"All tasks completed. Success rate: {success_rate:.2%}")
        print(f"All tasks completed. Success rate: {success_rate:.2%}")  # port: printed
        await self.stop()


if __name__ == '__main__':
    # Create tasks
    tasks = [
        Task(id=1, description="Simple calculation", difficulty=2),
        Task(id=2, description="Data analysis", difficulty=5),
        Task(id=3, description="Machine learning model training", difficulty=8),
    ]

    # Create workers
    workers = [
        WorkerAgent("Junior", skill_level=3),
        WorkerAgent("Intermediate", skill_level=6),
        WorkerAgent("Senior", skill_level=9),
    ]

    # Create and run task manager
    task_manager = TaskManager(tasks, workers)
    task_manager.run_admin(inputs=b"", workers=workers)
