"""The README's Client section as a program: futures, a map, a group with a goal, a failure.

    python job.py [HOST:PORT]     (default: CEYLON_ADMIN_PEER:CEYLON_PORT, else 127.0.0.1:8000;
                                   CEYLON_TOKEN if the admin wants one)
"""

import sys
import uuid

from ceylon_net import Client, TaskFailed, as_completed


def main(address: str | None) -> None:
    with Client(address) as c:
        f = c.submit("sha256", "x", 1000, difficulty=3)  # handler, its args, task options
        print("sha256 of x, 1000 rounds:", f.result(timeout=60))
        futures = c.map("sha256", ["a", "b", "c"], [10, 20, 30])  # one batch
        for done in as_completed(futures, timeout=60):
            print("done:", done.key, done.result()[:16])
        print("gathered:", len(c.gather(futures)), "values")
        name = f"items-{uuid.uuid4().hex[:8]}"  # a group's name is unique on its admin
        g = c.submit_group(name, [{"handler": "sha256", "args": [str(i), 100]}
                                  for i in range(10)],
                           goal={"kind": "at_least", "count": 5},
                           on_event=lambda news: print("group event:", news.message))
        print("group:", g.result(timeout=60))
        try:
            c.submit("boom", "bad news").result(timeout=60)
        except TaskFailed as e:
            print("boom failed:", e.reason.strip().splitlines()[-1])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
