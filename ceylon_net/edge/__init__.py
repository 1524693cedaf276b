"""The network edge: sockets and everything that waits on them. Decisions come from
:mod:`ceylon_net.core`; this layer carries them out.

- :mod:`.transport`  ZeroMQ sockets (ROUTER/PUB, DEALER/SUB), CURVE keys: the only zmq user
- :mod:`.admin`      Admin: the shell around AdminState (loops, timers, journal, user API)
- :mod:`.agent`      the agent surface admin and workers share (handlers, broadcast, send)
- :mod:`.worker`     Worker: handshake, heartbeats, credit, results until acknowledged
- :mod:`.runner`     a worker's task runner: queue, concurrency, time limits, cancellation
- :mod:`.handlers`   user task handlers (``@handler``, ``--app``)
- :mod:`.outlet`     the admin's messages encoded and sent or published
- :mod:`.client`     AsyncClient: futures, groups, status, cancel, batches
- :mod:`.sync_client`  Client: the same without asyncio
- :mod:`.dashboard`  the web dashboard
- :mod:`.journal`    SQLite persistence of the admin's state
- :mod:`.metrics`    the Prometheus endpoint
"""
