"""Tooling for tests, benchmarks and demos, apart from the runtime.

- :mod:`.testing`  run the real CLIs as processes on free loopback ports; watch the PUB bus
- :mod:`.netns`    hosts as Linux network namespaces (multi-host tests, ``bin/cluster``)
- :mod:`.cluster`  ``bin/cluster``: compose.yaml's services as namespaced hosts, no Docker
  (:mod:`.compose` reads the compose file, :mod:`.cluster_cli` is the command line)
- :mod:`.demo`     ``bin/demo``: an admin and three workers run the tutorial's tasks
"""
