"""The interpreter `make` builds .venv from (tools/fastest_python.py): each usable build of this Python's
version counted once, the fastest chosen, and a clear exit when none can build a virtual environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tools import fastest_python

VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"


def put_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path, script: str) -> Path:
    """An executable ``pythonX.Y`` in ``folder``, which becomes the whole PATH."""
    path = folder / VERSION
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return path


def test_a_shim_counts_once_as_the_interpreter_it_runs(tmp_path, monkeypatch):
    put_on_path(monkeypatch, tmp_path, f'exec "{sys.executable}" "$@"')  # what pyenv's shims do
    found = [os.path.realpath(p) for p in fastest_python.candidates()]
    assert found.count(os.path.realpath(sys.executable)) == 1
    assert str(tmp_path / VERSION) not in found
    assert len(found) == len(set(found))


def test_an_interpreter_that_cannot_build_a_venv_is_left_out(tmp_path, monkeypatch):
    broken = put_on_path(monkeypatch, tmp_path, "exit 1")  # Debian's python3.X without python3-venv, say
    found = fastest_python.candidates()
    assert str(broken) not in found
    assert os.path.realpath(sys.executable) in {os.path.realpath(p) for p in found}


def test_the_fastest_is_printed_and_every_timing_reported(monkeypatch, capsys):
    timings = {"/opt/source-build/python": 34.3, "/usr/bin/python": 24.7, "/opt/other/python": 30.0}
    monkeypatch.setattr(fastest_python, "candidates", lambda: list(timings))
    monkeypatch.setattr(fastest_python, "milliseconds", timings.__getitem__)
    fastest_python.main()
    out, err = capsys.readouterr()
    assert out == "/usr/bin/python\n"
    assert all(f"{python} {ms:.1f} ms" in err for python, ms in timings.items())


def test_no_usable_interpreter_says_what_to_install(monkeypatch):
    monkeypatch.setattr(fastest_python, "candidates", lambda: [])
    with pytest.raises(SystemExit, match="python3-venv"):
        fastest_python.main()


def test_the_workload_times_a_real_interpreter():
    assert 0 < fastest_python.milliseconds(sys.executable) < 10_000
