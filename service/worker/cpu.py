"""What this CPU means for ONNX Runtime's CPU kernels, read from ``/proc/cpuinfo`` (Linux, where the service runs):
the channel block of their blocked layout, and whether their fast int8 kernel sums exactly."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort

VNNI = frozenset({"avx512_vnni", "avx_vnni"})


def cpu_flags(cpuinfo: str) -> frozenset[str] | None:
    """An x86 CPU's feature flags from ``/proc/cpuinfo``'s text; None where there is no flags line (an Arm CPU
    lists "Features")."""
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return None if line is None else frozenset(line.split(":", 1)[1].split())


@cache
def this_cpus_flags() -> frozenset[str] | None:
    """``cpu_flags`` of the CPU this process runs on, read once (None where ``/proc/cpuinfo`` cannot be read)."""
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def nchwc_block(flags: frozenset[str] | None) -> int | None:
    """The channel block of ONNX Runtime's NCHWc layout for a CPU's ``cpu_flags``, as its MLAS library picks it
    (``platform.cpp``): 16 on x86-64 with AVX-512F, 8 on other x86-64; None on other architectures, whose block is
    not known here."""
    return None if flags is None else 16 if "avx512f" in flags else 8


def this_cpus_block() -> int | None:
    return nchwc_block(this_cpus_flags())


def int8_sums_saturate(flags: frozenset[str] | None) -> bool:
    """Whether ONNX Runtime's fast u8×s8 kernel saturates on a CPU with these ``cpu_flags``: on x86-64 without VNNI
    (AVX2, or AVX-512 without it) it adds pairs of products in 16 bits, as its session-options header warns; with
    VNNI's dot products the sums are exact."""
    return flags is not None and not flags & VNNI


def exact_int8(options: ort.SessionOptions) -> ort.SessionOptions:
    """``options`` with int8 products summed exactly (ONNX Runtime's u8×u8 kernel) where this CPU's fast kernel
    would saturate. The manifests' int8 figures were measured with exact sums; with saturating ones an AVX2 core
    lost up to 1.5 pt of accuracy on scikit-learn's digits and put inception_small's ECE at 0.040. Float graphs
    are unaffected; int8 runs there take 1.04–1.41× as long (docs/PERFORMANCE.md)."""
    if int8_sums_saturate(this_cpus_flags()):
        options.add_session_config_entry("session.x64quantprecision", "1")
    return options
