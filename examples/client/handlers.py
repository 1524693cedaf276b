"""The handlers the README's Client example calls; workers load them with ``--app handlers``."""

import hashlib

from ceylon_net import handler


@handler("sha256")
def sha256_rounds(text: str, rounds: int) -> str:
    """CPU-bound (a worker thread): ``text`` hashed ``rounds`` times, as hex."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@handler("boom")
def boom(message: str) -> None:
    """Always fails: its future raises TaskFailed with this traceback."""
    raise ValueError(message)
