"""``ceylon-admin`` with a bug planted in its decisions: the round that finishes the first task
raises. Run as ``python bug_in_admin.py ARGS...`` with ceylon-admin's arguments."""

from ceylon_net.cli.admin import main
from ceylon_net.core import commands
from ceylon_net.core.admin_state import AdminState

_receive_many = AdminState.receive_many


def receive_many(self, messages, now):
    cmds = _receive_many(self, messages, now)
    if any(isinstance(cmd, commands.Finished) for cmd in cmds):
        raise RuntimeError("a planted bug")
    return cmds


AdminState.receive_many = receive_many

if __name__ == "__main__":
    main()
