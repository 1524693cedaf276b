"""User handlers the benchmark's W1 variants load on their workers (``--app bench_handlers``):
the same work as the peers' scripts do per task (call a function that returns its argument)."""

from ceylon_net import handler


@handler("noop_sync")
def noop_sync(x):
    return x


@handler("noop_async")
async def noop_async(x):
    return x
