"""Seed 000 ("Building a Distributed Task Processing System"), ported.

Changes from the tutorial: imports come from ceylon_net; after the goal is reached the program
waits for the remaining tasks and prints the final statistics (the tutorial's "System can stop
while tasks continue"), and ``main`` takes an optional playground so tests can watch it.
CEYLON_PORT picks the port.
"""

import asyncio
import uuid
from typing import Callable, Dict

from ceylon_net import (
    GoalStatus,
    TaskExecutionAgent,
    TaskGroup,
    TaskGroupGoal,
    TaskManager,
    TaskMessage,
    TaskPlayGround,
)


def create_goal_checker(required_tasks: int) -> Callable:
    def check_completion(task_groups: Dict[str, TaskGroup],
                         completed_tasks: Dict[str, TaskMessage]) -> bool:
        completed_group_tasks = sum(
            1 for task in completed_tasks.values()
            if hasattr(task, 'group_id') and
            task.group_id in task_groups
        )
        print(f"Progress: {completed_group_tasks}/{required_tasks} tasks completed")
        return completed_group_tasks >= required_tasks

    return check_completion


async def main(playground: TaskPlayGround | None = None):
    playground = playground or TaskPlayGround()
    workers = [
        TaskExecutionAgent("worker1", "processor", max_concurrent_tasks=2),
        TaskExecutionAgent("worker2", "processor", max_concurrent_tasks=2),
    ]

    processing_group = TaskManager.create_task_group(
        name="Data Processing",
        description="Process 10 data items, goal achieves at 5",
        subtasks=[
            TaskMessage(
                task_id=str(uuid.uuid4()),
                name=f"Process Data Item {i}",
                description=f"Processing task {i}",
                duration=1,
                required_role="processor"
            )
            for i in range(10)
        ],
        goal=TaskGroupGoal(
            name="Partial Processing Complete",
            description="Complete at least 5 processing tasks",
            check_condition=create_goal_checker(required_tasks=5),
            success_message="Successfully completed minimum required tasks!",
            failure_message="Failed to complete minimum required tasks."
        ),
        priority=1
    )

    async with playground.play(workers=workers) as active_playground:
        await active_playground.assign_task_groups([processing_group])

        # Monitor progress
        while True:
            await asyncio.sleep(1)
            current_group = active_playground.task_manager.task_groups[processing_group.id]

            print(f"\nGroup Status: {current_group.status}")
            if current_group.goal:
                print(f"Goal Status: {current_group.goal.status}")

            if (current_group.goal and
                    current_group.goal.status == GoalStatus.ACHIEVED):
                print("\nGoal achieved! System can stop while tasks continue.")
                break

        await active_playground.wait_for_completion()
        done = [t for t in current_group.subtasks if t.result is not None]
        print(f"\nFinal Statistics: {current_group.completed}/{current_group.total} tasks "
              f"completed by {sorted({t.result.worker for t in done})}; "
              f"group {current_group.status.value}, goal {current_group.goal.status.value}")


if __name__ == "__main__":
    asyncio.run(main())
