"""What the CPU means for ONNX Runtime's kernels: its layout's channel block, and int8 sums kept exact where its fast
kernel saturates (checked against the shipped int8 versions' recorded scores in tests/models)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from service.settings import Settings
from service.worker import cpu
from service.worker.runtime import session_options
from tests.helpers import MODELS

# What /proc/cpuinfo says of a core, cut to the lines that matter.
AVX512_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni\n"
AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\nbugs\t\t: sysret_ss_attrs\n"
AVX2_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx_vnni\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.mark.parametrize("cpuinfo,block,saturates", [
    (AVX512_VNNI, 16, False), (AVX512, 16, True), (AVX2, 8, True), (AVX2_VNNI, 8, False), (ARM, None, False),
    ("", None, False)])
def test_the_block_and_the_int8_kernel_are_the_ones_onnx_runtime_picks(cpuinfo, block, saturates):
    """MLAS's choices (its platform.cpp): 16 channels with AVX-512F, 8 on other x86-64, not known elsewhere; u8×s8
    products summed in 16 bits on x86-64 without VNNI."""
    flags = cpu.cpu_flags(cpuinfo)
    assert cpu.nchwc_block(flags) == block
    assert cpu.int8_sums_saturate(flags) == saturates


def test_this_machine_is_read():
    """Linux on x86-64, where CI and the service's image run: /proc/cpuinfo has a flags line."""
    assert cpu.this_cpus_block() in (8, 16)


@pytest.mark.parametrize("cpuinfo", [AVX2, AVX512_VNNI])
def test_workers_sum_int8_exactly_only_where_the_fast_kernel_saturates(cpuinfo, monkeypatch):
    monkeypatch.setattr(cpu, "this_cpus_flags", lambda: cpu.cpu_flags(cpuinfo))
    options = session_options(Settings())
    if cpu.int8_sums_saturate(cpu.cpu_flags(cpuinfo)):
        assert options.get_session_config_entry("session.x64quantprecision") == "1"
    else:
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry("session.x64quantprecision")


def test_exact_sums_change_no_float_answer_nor_an_int8_one_where_sums_are_exact_anyway():
    """Real ONNX Runtime runs of lenet5, float and int8, with and without exact sums."""
    batch = np.random.default_rng(0).random((8, 1, 32, 32), np.float32)

    def logits(version: str, exact: bool) -> np.ndarray:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if exact:
            options.add_session_config_entry("session.x64quantprecision", "1")
        session = ort.InferenceSession(str(MODELS / "lenet5" / version / "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"input": batch})[0]

    assert np.array_equal(logits("1", False), logits("1", True))
    if not cpu.int8_sums_saturate(cpu.this_cpus_flags()):
        assert np.allclose(logits("2", False), logits("2", True), atol=1e-5)
