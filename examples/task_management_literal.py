"""Seed 001 ("Building a Distributed Task Management System with Ceylon"), ported literally:
the tutorial's own dataclasses, its broadcasts (``broadcast(pickle.dumps(...))``) and its
``on_agent_connected`` trigger, as written. Every change is marked ``# port:``:

- imports come from ceylon_net; ``pickle`` becomes ``ceylon_net.dumps`` / ``loads`` (nothing
  from the network is ever unpickled), so the dataclasses are registered with ``@message``;
- the tutorial calls ``self.end_task_management()`` but never defines it (the run would never
  end): it is added, printing the results and stopping the admin;
- ``CEYLON_PORT`` picks the port (the tutorial's 8000 may be taken) and ``CEYLON_TIME_SCALE``
  shortens the sleeps.

As the tutorial is written, every worker hears every assignment and takes the first one it
hears (``has_task``), so all three run task 1. examples/task_management.py is the idiomatic
port, where each task goes to the worker that fits it.
"""

import asyncio
import os
from typing import List

from loguru import logger

from ceylon_net import DEFAULT_WORKSPACE_ID, message  # port: was ceylon
from ceylon_net import Admin, Worker  # port: was ceylon.base.agents
from ceylon_net import dumps, loads  # port: instead of pickle

TIME_SCALE = float(os.environ.get("CEYLON_TIME_SCALE", "1.0"))  # port: shorter sleeps in tests


@message(name="seed001.Task")  # port: registered (and named apart from ceylon_net's own Task)
class Task:
    id: int
    description: str
    difficulty: int  # 1-10 scale


@message(name="seed001.TaskAssignment")  # port: registered
class TaskAssignment:
    task: Task


@message(name="seed001.TaskResult")  # port: registered
class TaskResult:
    task_id: int
    worker: str
    success: bool


class WorkerAgent(Worker):
    def __init__(self, name: str, skill_level: int,
                 workspace_id=DEFAULT_WORKSPACE_ID,
                 admin_peer="",
                 admin_port=8000):
        self.name = name
        self.skill_level = skill_level
        self.has_task = False
        super().__init__(
            name=name,
            workspace_id=workspace_id,
            admin_peer=admin_peer,
            admin_port=admin_port
        )
        logger.info(f"Worker {name} initialized with skill level {skill_level}")

    async def on_message(self, agent_id: str, data: bytes, time: int):
        try:
            message = loads(data)  # port: was pickle.loads

            if isinstance(message, TaskAssignment) and not self.has_task:
                logger.info(f"{self.name} received task: {message.task.description}")
                self.has_task = True

                # Simulate task execution
                await asyncio.sleep(message.task.difficulty * TIME_SCALE)  # port: * TIME_SCALE
                success = self.skill_level >= message.task.difficulty

                result = TaskResult(task_id=message.task.id, worker=self.name, success=success)
                await self.broadcast(dumps(result))  # port: was pickle.dumps
                logger.info(f"{self.name} completed task {message.task.id} with success={success}")

        except Exception as e:
            logger.error(f"Error processing message in worker: {e}")


class TaskManager(Admin):
    def __init__(self, tasks: List[Task], expected_workers: int,
                 name="task_manager", port=None):  # port: was port=8000 (CEYLON_PORT)
        super().__init__(name=name, port=port)
        self.tasks = tasks
        self.expected_workers = expected_workers
        self.task_results = []
        self.tasks_assigned = False
        logger.info(f"Task Manager initialized with {len(tasks)} tasks")

    async def on_agent_connected(self, topic: str, agent_id: str):
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
        connected_workers = self.get_connected_agents()

        for task, worker in zip(self.tasks, connected_workers):
            assignment = TaskAssignment(task=task)
            await self.broadcast(dumps(assignment))  # port: was pickle.dumps
            logger.info(f"Assigned task {task.id} to worker {worker.name}")

    async def on_message(self, agent_id: str, data: bytes, time: int):
        try:
            message = loads(data)  # port: was pickle.loads
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

    async def end_task_management(self):  # port: called by the tutorial, never defined there
        for r in sorted(self.task_results, key=lambda r: (r.task_id, r.worker)):
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
    admin_details = task_manager.details()

    # Create workers with proper admin_peer
    workers = [
        WorkerAgent("Junior", skill_level=3, admin_peer=admin_details.id),
        WorkerAgent("Intermediate", skill_level=6, admin_peer=admin_details.id),
        WorkerAgent("Senior", skill_level=9, admin_peer=admin_details.id),
    ]

    try:
        logger.info("Starting task management system...")
        await task_manager.arun_admin(b"", workers)
    except KeyboardInterrupt:
        logger.info("Shutting down task management system...")


if __name__ == "__main__":
    logger.info("Initializing task management system...")
    try:  # port: Ctrl-C reaches asyncio.run's caller (main() is cancelled), not main()
        asyncio.run(main())
    except KeyboardInterrupt:
        logger.info("Shutting down task management system...")
