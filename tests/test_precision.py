"""The one device/dtype choice: native bf16 only where the CPU has it, a probe where unsure."""

import os
import subprocess
import sys

import pytest
import torch

from mup_core.models.precision import Precision, choose_precision, cpu_flags, decide_cpu_dtype


def _no_probe(dtype):
    raise AssertionError("the matmul probe must not run when the CPU flags decide")


AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl"}
ZEN4 = AVX512_NO_BF16 | {"avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = AVX512_NO_BF16 | {"amx_bf16", "amx_tile"}


@pytest.mark.parametrize(
    "flags, dtype, words",
    [
        (ZEN4, "bfloat16", "avx512_bf16"),
        (SAPPHIRE_RAPIDS, "bfloat16", "amx_bf16"),
        (AVX2_ONLY, "float32", "AVX2"),
        (AVX512_NO_BF16, "float32", "AVX-512"),
    ],
)
def test_x86_flags_decide_without_a_probe(flags, dtype, words):
    chosen, reason = decide_cpu_dtype(flags, "x86_64", None, _no_probe)
    assert chosen == dtype and words in reason


@pytest.mark.parametrize(
    "flags, machine, cap",
    [(None, "x86_64", None), ({"fp", "asimd", "bf16"}, "aarch64", None), (ZEN4, "x86_64", "AVX2")],
)
def test_ambiguous_cpus_are_decided_by_the_matmul_probe(flags, machine, cap):
    emulated = {"bfloat16": 1.3, "float32": 160.0}  # the AVX2 EPYC of the issue
    native = {"bfloat16": 420.0, "float32": 185.0}  # the AVX-512-BF16 EPYC
    chosen, reason = decide_cpu_dtype(flags, machine, cap, emulated.__getitem__)
    assert chosen == "float32" and "matmul probe" in reason and "1.3" in reason
    chosen, reason = decide_cpu_dtype(flags, machine, cap, native.__getitem__)
    assert chosen == "bfloat16" and "420" in reason


def test_this_machines_flags_are_read():
    flags = cpu_flags()
    if flags is None:
        pytest.skip("/proc/cpuinfo is not readable here")
    assert flags and all(isinstance(f, str) for f in flags)


def test_overrides_and_errors(monkeypatch):
    monkeypatch.delenv("MUP_DEVICE", raising=False)
    monkeypatch.setenv("MUP_DTYPE", "float32")
    p = choose_precision("cpu")
    assert (p.device, p.dtype, p.reason) == (torch.device("cpu"), torch.float32, "MUP_DTYPE")
    assert choose_precision("cpu", "bfloat16").dtype == torch.bfloat16  # an argument beats the environment
    monkeypatch.setenv("MUP_DTYPE", "float8")
    with pytest.raises(ValueError, match="unknown dtype 'float8'.*bfloat16, float16, float32"):
        choose_precision("cpu")
    monkeypatch.delenv("MUP_DTYPE")
    hw = choose_precision("cpu")
    assert hw.dtype in (torch.bfloat16, torch.float32) and hw.reason
    assert hw.as_metadata() == {"device": "cpu", "compute_dtype": hw.dtype_name, "dtype_reason": hw.reason}


def test_autocast_follows_the_choice():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with Precision(torch.device("cpu"), torch.float32, "test").autocast():
        assert (a @ b).dtype == torch.float32
    with Precision(torch.device("cpu"), torch.bfloat16, "test").autocast():
        assert (a @ b).dtype == torch.bfloat16


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="oneDNN's ISA cap is x86's")
def test_a_cpu_without_native_bf16_computes_in_fp32():
    """oneDNN capped at AVX2 emulates bf16 (as on an AVX2-only CPU): a real process,
    real matmuls, and the probe must pick fp32 and say why."""
    code = "from mup_core.models.precision import choose_precision as c; p = c('cpu'); print(p.dtype_name, '|', p.reason)"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env.pop("MUP_DTYPE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    dtype, reason = out.stdout.strip().split(" | ")
    assert "ONEDNN_MAX_CPU_ISA=AVX2; matmul probe" in reason
    assert dtype == "float32", reason
