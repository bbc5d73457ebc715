"""benchmarks/process_memory.py: an address space is counted once, however many processes share it."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil
import pytest

from configuration.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import process_memory

pytestmark = pytest.mark.skipif(
    not process_memory.can_compare(), reason="this kernel refuses kcmp(2): the benchmarks count every process"
)


def test_a_thread_shares_the_address_space_and_a_child_process_does_not():
    me = psutil.Process()
    ready, done = threading.Event(), threading.Event()
    tids: list[int] = []

    def worker() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        done.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_memory.same_address_space(me.pid, tids[0])  # a thread: one memory, as a vfork child
        assert not process_memory.same_address_space(me.pid, child.pid)
    finally:
        done.set()
        thread.join()
        child.kill()
        child.wait()


def test_a_process_sharing_a_counted_ones_memory_is_left_out_of_the_sum():
    me = psutil.Process()
    rss = me.memory_info().rss / 2**20
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other = psutil.Process(child.pid)
        taken = process_memory.resident([me, other, me])  # `me` again stands for a vfork child of me
        assert [pid for _, pid, _ in taken.parts] == [me.pid, child.pid]
        assert [pid for _, pid, _ in taken.shared] == [me.pid]
        # RSS moves between the calls by a few pages: compare loosely with our own reading.
        assert abs(taken.mb - (rss + other.memory_info().rss / 2**20)) < 20
        assert abs(sum(mb for _, _, mb in taken.shared) - rss) < 20  # what a plain sum would have added
    finally:
        child.kill()
        child.wait()
