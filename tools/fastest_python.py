"""Print the interpreter `make` should build .venv from: the fastest of this Python's version on the machine.

Why: the service's server process is Python from end to end, and CPython's speed depends on how it was built.
A distribution's interpreter (Debian's, Ubuntu's, the official container images') is compiled with
profile-guided and link-time optimisation; a plain source build (pyenv's default, without
``--enable-optimizations``) takes about a third longer over the same code, and on a 2-core machine that is a
fifth of the service's throughput (docs/PERFORMANCE.md). Which is first on PATH is an accident of the
machine's setup, so the candidates of the same minor version are timed on a short pure-Python workload and
the fastest wins; only the same minor version is considered, since pinned wheels (torch) are built for it.

Run with the ``python3`` the machine offers; prints the chosen path on stdout and the timings on stderr.
``make PYTHON=/path/to/python3`` bypasses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Parsing, dicts, attribute access and calls: what a request costs the server, in miniature.
WORKLOAD = """
import json, time
class Item:
    def __init__(self, i): self.index, self.label = i, str(i)
def answer(i):
    items = [Item(j) for j in range(10)]
    ranked = sorted(items, key=lambda item: -item.index)[:5]
    return json.dumps({"predictions": [{"index": it.index, "label": it.label} for it in ranked], "n": i})
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    for i in range(2000):
        json.loads(answer(i))
    best = min(best, time.perf_counter() - start)
print(best * 1000)
"""
# Rounds of the workload on each interpreter, interleaved. A 2-vCPU VM here ran the same interpreter at two
# speeds for seconds at a time (Debian's 22 or 35-46 ms, pyenv's 31 or 51-58), and 5 rounds once caught Debian's
# only at its slower one and chose pyenv's build.
ROUNDS = 11
# Debian ships ensurepip apart (python3-venv): without it no .venv. A shim (pyenv's) names its interpreter.
USABLE = "import ensurepip, sys, venv; print(sys.executable)"


def candidates() -> list[str]:
    """This version's interpreters that can build a virtual environment, each once, by their real path."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [sys.executable, shutil.which(version), f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    usable: dict[str, str] = {}
    for path in filter(None, found):
        if os.access(path, os.X_OK):
            check = subprocess.run([path, "-c", USABLE], capture_output=True, text=True)
            if check.returncode == 0:
                usable.setdefault(os.path.realpath(check.stdout.strip()), check.stdout.strip())
    return list(usable.values())


def milliseconds(python: str) -> float:
    return float(subprocess.run([python, "-c", WORKLOAD], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    pythons = candidates()
    if not pythons:
        sys.exit(f"no Python {sys.version_info.major}.{sys.version_info.minor} here can build a virtual environment: "
                 "install its venv module (Debian: python3-venv), or name one with PYTHON=...")
    timed = dict.fromkeys(pythons, float("inf"))
    for _ in range(ROUNDS):  # the best of each kept: a moment of other load on the machine must not decide
        for python in pythons:
            timed[python] = min(timed[python], milliseconds(python))
    fastest = min(timed, key=lambda python: timed[python])
    listing = ", ".join(f"{python} {ms:.1f} ms" for python, ms in timed.items())
    print(f"python for .venv: {fastest} (a pure-Python workload: {listing}; PYTHON=... to choose)", file=sys.stderr)
    print(fastest)


if __name__ == "__main__":
    main()
