"""A process started with malloc_tunables keeps a large block it frees, for the next one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from service.heap import malloc_tunables

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


def held_after_free_mb(env: dict[str, str]) -> int:
    return int(subprocess.run([sys.executable, "-c", FREE_A_BLOCK], env=env, capture_output=True, text=True,
                              check=True).stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc tunables")
def test_a_process_started_with_the_tunables_keeps_a_freed_block(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert held_after_free_mb(dict(os.environ)) < 16  # glibc's default: unmapped on free, faulted in afresh next time
    assert held_after_free_mb({**os.environ, **malloc_tunables(1 << 30, 1 << 30)}) >= 120
    assert held_after_free_mb({**os.environ, **malloc_tunables(64 << 20, 1 << 30)}) < 16  # above the threshold


def test_the_users_own_tunables_are_kept(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    assert malloc_tunables(1 << 30, 1 << 30) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
