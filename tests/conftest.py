import asyncio
import json
from pathlib import Path

import pytest


def run(coro):
    """Run one async test body on a fresh event loop."""
    return asyncio.run(coro)


@pytest.fixture
def tasks_file(tmp_path):
    """Write a tasks file and return its path: tasks_file([{...}, ...])."""

    def write(tasks, name="tasks.json"):
        path = tmp_path / name
        path.write_text(json.dumps({"tasks": tasks}) if not isinstance(tasks, str) else tasks)
        return path

    return write


REPO = Path(__file__).resolve().parent.parent
