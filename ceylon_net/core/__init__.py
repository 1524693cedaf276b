"""Policy: pure code with no sockets, no asyncio and no clock of its own (``now`` is an
argument). It decides; the network edge (:mod:`ceylon_net.edge`) carries the decisions out.

- :mod:`.tasks`          Task, TaskAssignment, TaskResult, TaskStatus, RunReport (plain data)
- :mod:`.workfile`       tasks files (JSON/TOML, tasks and groups), checked field by field
- :mod:`.checks`         unique ids, no dependency cycles
- :mod:`.scheduler`      which ready task goes to which worker (skill, role, free slots)
- :mod:`.board`          every task's state and legal transitions, in-flight sets, gates
- :mod:`.groups`         task groups, goals, TaskManager (seed 000)
- :mod:`.batches`        batches submitted by clients
- :mod:`.workers`        who the workers are; worker life and its legal transitions
- :mod:`.membership`     registration, reconciliation, heartbeats, drain, leave, lost
- :mod:`.guard`          hostile peers: bad-frame bans, HELLO rate limits, token checks
- :mod:`.unassignable`   tasks no connected worker can take: said once, given up in time
- :mod:`.followup`       what follows a task's end: groups, batches, Finished, the run's end
- :mod:`.broadcasts`     numbered broadcasts: the admin's ring, an agent's in-order inbox
- :mod:`.watchers`       clients waiting on tasks and groups (futures)
- :mod:`.restore`        state rebuilt from a journal's rows
- :mod:`.commands`       what the admin state asks the edge to do (Send, Assign, Finished...)
- :mod:`.admin_state`    AdminState: every decision of the admin
- :mod:`.stats`          counters and histograms
- :mod:`.snapshot`       status, metrics and progress views of the state
"""
