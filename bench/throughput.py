"""W1 and W2 alone, as before bench/run.py existed (kept because the top-level README lists
this file); it is ``bench/run.py --only w1,w2`` with one W1 size and worker count:

    .venv/bin/python bench/throughput.py [--compare] [--runs 3] [--tasks 10000] [--workers 4]
        [--window 8] [--rtt-count 2000] [--warmup 100] [--only w1|w2]

Every option of bench/run.py works here too; see bench/README.md.
"""

from __future__ import annotations

import sys

from run import main  # bench/run.py (this directory is first on sys.path)

DEFAULTS = ["--only", "w1,w2", "--w1-tasks", "10000", "--w1-workers", "4"]

if __name__ == "__main__":
    sys.exit(main([*DEFAULTS, *sys.argv[1:]]))
