"""The inbox's skipped ranges: a SKIP of millions from the admin (a worker far behind) is
kept as a range, not walked a number at a time (it took the worker's memory), and an inbox
that never heard anything ends with nothing lost. Each test failed on 7080786 (a review of
that commit; its finding of numbers above ``top`` counted lost is answered by a SKIP
raising ``top``: the admin saying a number is gone says it existed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from ceylon_net.core.broadcasts import BroadcastInbox

# ---------------------------------------------------------------------------------------
# 2. drain() of an inbox that never heard counted one broadcast lost.

@pytest.mark.timeout(10)
def test_s24_drain_of_an_inbox_that_never_heard_counts_nothing_lost():
    inbox = BroadcastInbox()
    assert list(inbox.drain()) == []
    assert inbox.skipped == 0, f"drain() of an inbox that heard nothing: skipped={inbox.skipped}"


# ---------------------------------------------------------------------------------------
# 3. (older code, not 7080786) BroadcastInbox.skip() puts a _SKIPPED marker in _held for
#    every number of the admin's SKIP before delivering any: a worker paused long behind a
#    busy admin is told "[next, next+10**8] are gone" (membership._skip sends the whole
#    range) and builds a 10**8-entry dict. Under a 1 GiB address-space limit, MemoryError.

@pytest.mark.timeout(60)
def test_s24_a_large_skip_from_the_admin_does_not_take_the_workers_memory():
    code = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from ceylon_net.core.broadcasts import BroadcastInbox
        inbox = BroadcastInbox()
        inbox.hear(0)
        assert list(inbox.accept(2, "two")) == []     # 1 missing
        inbox.hear(10**8)                               # the worker fell far behind
        assert list(inbox.skip(3, 10**8)) == []         # SKIP for the later range first
        assert list(inbox.skip(1, 1)) == ["two"]
        assert inbox.skipped == 10**8 - 1 and inbox.next == 10**8 + 1, inbox.skipped
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=50)
    assert proc.returncode == 0 and "ok" in proc.stdout, (
        f"a SKIP of 10**8 numbers behind a gap: rc={proc.returncode}\n{proc.stderr[-800:]}")
