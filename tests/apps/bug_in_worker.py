"""``ceylon-worker --app bug_in_worker``: a worker with a bug planted in its broadcast loop
(the first broadcast it hears raises)."""

from ceylon_net.edge.worker import Worker


def _on_bus(self, frames):
    raise RuntimeError("a planted bug")


Worker._on_bus = _on_bus
