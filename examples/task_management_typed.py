"""Seed 003 (the typed-message version of the task management tutorial), ported.

Changes from the tutorial: imports come from ceylon_net (its Task/TaskAssignment/TaskResult are
built-in registered messages, so no pydantic); the manager counts *connected* workers before
assigning (the tutorial compared its local list, assigning before anyone had joined), and
assigns once (callbacks run concurrently, so three joins can all see three workers), and
sends each assignment to the worker that fits it instead of broadcasting it to all;
CEYLON_PORT picks the port and CEYLON_TIME_SCALE shortens the sleeps.
"""

import asyncio
import os

from loguru import logger

from ceylon_net import Agent, AgentDetail, CoreAdmin, Task, TaskAssignment, TaskResult, on_message

TIME_SCALE = float(os.environ.get("CEYLON_TIME_SCALE", "1.0"))


class WorkerAgent(Agent):
    def __init__(self, name: str, skill_level: int):
        self.name = name
        self.skill_level = skill_level
        super().__init__(name=name, workspace_id="task_management", skill=skill_level)

    @on_message(type=TaskAssignment)
    async def on_task_assignment(self, data: TaskAssignment):
        logger.info(f"{self.name} received task: {data.task.description}")
        # Simulate task execution
        await asyncio.sleep(data.task.difficulty * TIME_SCALE)
        success = self.skill_level >= data.task.difficulty
        await self.broadcast_data(TaskResult(task_id=data.task.id, worker=self.name, success=success))


class TaskManager(CoreAdmin):
    tasks = []
    workers = []
    task_results = []

    def __init__(self, tasks, workers):
        self.workers = workers
        self.tasks = tasks
        self.task_results = []
        self.tasks_assigned = False
        super().__init__(name="task_management", workspace_id="task_management")

    async def on_agent_connected(self, topic: str, agent_id: AgentDetail):
        logger.info(f"Worker {agent_id.name} connected")
        if len(self.get_connected_agents()) == len(self.tasks) and not self.tasks_assigned:
            self.tasks_assigned = True
            await self.assign_tasks()

    async def assign_tasks(self):
        workers = sorted(self.get_connected_agents(), key=lambda w: w.skill)
        for task, worker in zip(sorted(self.tasks, key=lambda t: t.difficulty), workers, strict=False):
            await self.send(worker.id, TaskAssignment(task=task))

    @on_message(type=TaskResult)
    async def on_task_result(self, result: TaskResult):
        self.task_results.append(result)
        logger.info(
            f"Received result for task {result.task_id} from {result.worker}: {'Success' if result.success else 'Failure'}")
        if len(self.task_results) == len(self.tasks):
            await self.end_task_management()

    async def end_task_management(self):
        for r in sorted(self.task_results, key=lambda r: r.task_id):
            print(f"task {r.task_id} -> {r.worker}: {'success' if r.success else 'failure'}")
        success_rate = sum(1 for result in self.task_results if result.success) / len(self.task_results)
        logger.info(f"All tasks completed. Success rate: {success_rate:.2%}")
        print(f"All tasks completed. Success rate: {success_rate:.2%}")
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
