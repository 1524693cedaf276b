"""Seed 001 ("Building a Distributed Task Management System with Ceylon"), ported.

Changes from the tutorial: imports come from ceylon_net; pickle is gone (ceylon_net.dumps /
loads only ever build registered message types); Task/TaskAssignment/TaskResult are the
built-in messages; the manager *sends* each assignment to the worker that fits it instead of
broadcasting it to all; CEYLON_PORT picks the port and CEYLON_TIME_SCALE shortens the sleeps.
"""

import asyncio
import os

from loguru import logger

from ceylon_net import (
    DEFAULT_WORKSPACE_ID,
    Admin,
    Task,
    TaskAssignment,
    TaskResult,
    Worker,
    dumps,
    loads,
)

TIME_SCALE = float(os.environ.get("CEYLON_TIME_SCALE", "1.0"))


class WorkerAgent(Worker):
    def __init__(self, name: str, skill_level: int,
                 workspace_id=DEFAULT_WORKSPACE_ID,
                 admin_peer="",
                 admin_port=None):
        self.name = name
        self.skill_level = skill_level
        self.has_task = False
        super().__init__(
            name=name,
            workspace_id=workspace_id,
            admin_peer=admin_peer,
            admin_port=admin_port,
            skill=skill_level,
        )
        logger.info(f"Worker {name} initialized with skill level {skill_level}")

    async def on_message(self, agent_id: str, data: bytes, time: float):
        try:
            message = loads(data)

            if isinstance(message, TaskAssignment) and not self.has_task:
                logger.info(f"{self.name} received task: {message.task.description}")
                self.has_task = True

                # Simulate task execution
                await asyncio.sleep(message.task.difficulty * TIME_SCALE)
                success = self.skill_level >= message.task.difficulty

                result = TaskResult(task_id=message.task.id, worker=self.name, success=success)
                await self.broadcast(dumps(result))
                logger.info(f"{self.name} completed task {message.task.id} with success={success}")

        except Exception as e:
            logger.error(f"Error processing message in worker: {e}")


class TaskManager(Admin):
    def __init__(self, tasks: list[Task], expected_workers: int,
                 name="task_manager", port=None):
        super().__init__(name=name, port=port)
        self.tasks = tasks
        self.expected_workers = expected_workers
        self.task_results = []
        self.tasks_assigned = False
        logger.info(f"Task Manager initialized with {len(tasks)} tasks")

    async def on_agent_connected(self, topic: str, agent_id):
        await super().on_agent_connected(topic, agent_id)
        connected_count = len(self.get_connected_agents())
        logger.info(f"Worker connected. {connected_count}/{self.expected_workers} workers connected.")

        if connected_count == self.expected_workers and not self.tasks_assigned:
            logger.info("All workers connected. Starting task distribution.")
            await self.assign_tasks()

    async def assign_tasks(self):
        if self.tasks_assigned:
            return

        self.tasks_assigned = True
        # Easiest task to the least skilled worker, and so on: skill-based assignment.
        connected_workers = sorted(self.get_connected_agents(), key=lambda w: w.skill)
        tasks = sorted(self.tasks, key=lambda t: t.difficulty)

        for task, worker in zip(tasks, connected_workers, strict=False):
            assignment = TaskAssignment(task=task)
            await self.send(worker.id, dumps(assignment))
            logger.info(f"Assigned task {task.id} to worker {worker.name}")

    async def on_message(self, agent_id: str, data: bytes, time: float):
        try:
            message = loads(data)
            if isinstance(message, TaskResult):
                self.task_results.append(message)
                logger.info(
                    f"Received result for task {message.task_id} from {message.worker}: "
                    f"{'Success' if message.success else 'Failure'}"
                )

                if len(self.task_results) == len(self.tasks):
                    await self.end_task_management()

        except Exception as e:
            logger.error(f"Error processing message in manager: {e}")

    async def end_task_management(self):
        for r in sorted(self.task_results, key=lambda r: r.task_id):
            print(f"task {r.task_id} -> {r.worker}: {'success' if r.success else 'failure'}")
        success_rate = sum(1 for r in self.task_results if r.success) / len(self.task_results)
        print(f"All tasks completed. Success rate: {success_rate:.2%}")
        await self.stop()


async def main():
    # Create tasks
    tasks = [
        Task(id=1, description="Simple calculation", difficulty=2),
        Task(id=2, description="Data analysis", difficulty=5),
        Task(id=3, description="Machine learning model training", difficulty=8),
    ]

    # Create task manager
    task_manager = TaskManager(tasks, expected_workers=3)

    # Create workers; arun_admin connects in-process workers to this admin itself
    workers = [
        WorkerAgent("Junior", skill_level=3),
        WorkerAgent("Intermediate", skill_level=6),
        WorkerAgent("Senior", skill_level=9),
    ]

    logger.info("Starting task management system...")
    await task_manager.arun_admin(b"", workers)


if __name__ == "__main__":
    logger.info("Initializing task management system...")
    try:  # (Ctrl-C: asyncio.run cancels main(), then raises KeyboardInterrupt here)
        asyncio.run(main())
    except KeyboardInterrupt:
        logger.info("Shutting down task management system...")
