"""The command-line programs. They parse options, build settings and call the library; what
they print is drawn in :mod:`.render` and :mod:`.progress`.

- :mod:`.start`     the entry points: a Ctrl-C while a program loads ends it quietly
- :mod:`.common`    option types, logging, signals, exit codes, a client's target
- :mod:`.admin`     ``ceylon-admin``
- :mod:`.worker`    ``ceylon-worker``
- :mod:`.clients`   ``ceylon-status``, ``ceylon-submit``, ``ceylon-cancel``, ``ceylon-keygen``
- :mod:`.render`    the report's and the status's tables
- :mod:`.progress`  live progress bars on a terminal

Exit codes: 0 done, 1 runtime failure (rejected, unreachable), 2 bad configuration or input,
3 some tasks could not be assigned to any worker, 4 no admin answered (ceylon-submit).
"""
