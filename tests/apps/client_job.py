"""A program that drives a running admin through ceylon_net.Client, as a user's script would:
N sha256 tasks as futures, gathered; prints {"n", "right"} as JSON.

    python tests/apps/client_job.py PORT N
"""

import hashlib
import json
import sys

from ceylon_net import Client, as_completed


def expected(text: str, rounds: int) -> str:
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def main(port: int, n: int) -> None:
    with Client(f"127.0.0.1:{port}", timeout=30) as c:
        futures = [c.submit("sha256", f"text-{i}", 50) for i in range(n)]
        values = c.gather(futures, timeout=300)
        seen = sum(1 for _ in as_completed(futures, timeout=10))
    right = sum(v == expected(f"text-{i}", 50) for i, v in enumerate(values))
    print(json.dumps({"n": len(values), "right": right, "completed": seen}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
