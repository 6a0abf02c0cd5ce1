"""What a benchmark ran on, recorded with its results: the interpreter's build moves every figure (a distribution's
optimised CPython runs the same code in about a quarter less time than a plain source build:
tools/fastest_python.py)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import onnxruntime as ort

INTERPRETER = str(Path(sys.executable).resolve())  # the build itself, not the virtual environment's link to it


def software() -> dict[str, str]:
    return {"python": platform.python_version(), "interpreter": INTERPRETER, "onnxruntime": ort.__version__}
