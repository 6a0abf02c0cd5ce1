"""The zoo's jobs keep the memory they free: a large block, once freed, stays in the process for the next."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from training.allocator import GLIBC_TUNABLES, retain_freed_memory_in_children

# Prints how many MB of a 128 MB array, filled and freed, the process still holds.
FREE_A_BLOCK = """
import numpy as np
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
before = resident_mb()
np.ones(1 << 24).sum()
print(round(resident_mb() - before))
"""

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc tunables")


def held_after_free_mb() -> int:
    return int(subprocess.run([sys.executable, "-c", FREE_A_BLOCK], env=dict(os.environ), capture_output=True,
                              text=True, check=True).stdout)


def test_a_child_started_after_the_call_keeps_a_freed_block(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert held_after_free_mb() < 16  # glibc's default: unmapped on free, to be faulted in afresh next time
    retain_freed_memory_in_children()
    assert os.environ["GLIBC_TUNABLES"] == GLIBC_TUNABLES
    assert held_after_free_mb() >= 120


def test_the_users_own_tunables_are_left_alone(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    retain_freed_memory_in_children()
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1"
