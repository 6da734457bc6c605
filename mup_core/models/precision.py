"""The one choice of device and compute dtype for everything that runs a model.

On CUDA: bfloat16 where the GPU supports it, else float16. On CPU: bfloat16 only
where the CPU computes it natively (AVX-512-BF16 or AMX); on a CPU without it
(AVX2-only x86 is common) PyTorch emulates bf16 matmuls about 100x slower than
fp32, so compute runs in float32 there. Where the CPU's flags cannot tell (not
x86, ``/proc/cpuinfo`` unreadable, oneDNN's ISA capped by ``ONEDNN_MAX_CPU_ISA``)
a sub-second matmul probe decides. The decision is made once per process;
``MUP_DEVICE`` / ``MUP_DTYPE`` override it.

Storage dtypes are another matter: activations are stored in bf16 whatever the
compute dtype (half the bytes, and fp32 -> bf16 is a cheap rounding).

``Precision.autocast()`` is the mixed-precision context of training (weights stay
fp32, matmuls in the reduced dtype) and is a no-op where compute is fp32.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

DTYPES = ("bfloat16", "float16", "float32")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PROBE_SHAPE = (128, 576, 1536)  # (m, k, n): a SmolLM2-135M MLP projection of 128 tokens (0.23 GFLOP)
BF16_MIN_SPEEDUP = 1.2  # bf16 must beat fp32 by this much in the probe to be chosen


@dataclass(frozen=True)
class Precision:
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    reason: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def as_metadata(self) -> dict:
        """What asset metadata records about where and in what a model ran."""
        return {"device": str(self.device), "compute_dtype": self.dtype_name, "dtype_reason": self.reason}

    def matmul_rate(self) -> float:
        """This machine's matmul rate (GFLOP/s) in the compute dtype, measured now
        (``floor_rate``): the compute floor an extraction is compared against."""
        return floor_rate(self.dtype_name, str(self.device))

    def for_training(self) -> "Precision":
        """fp16 autocast without loss scaling under- and overflows gradients: train in fp32
        there (bf16 keeps fp32's range and is used as is)."""
        import torch

        if self.dtype == torch.float16:
            return Precision(self.device, torch.float32, f"{self.reason}; training in fp32 (fp16 needs loss scaling)")
        return self

    def autocast(self):
        """Mixed precision for training and scoring fp32 weights: autocast to the
        chosen reduced dtype, or nothing where the chosen compute dtype is fp32."""
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU feature flags of the first processor, or None where they cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def matmul_gflops(dtype: str, shape: tuple[int, int, int] = PROBE_SHAPE, seconds: float = 0.1, threads: int | None = None,
                  device: str = "cpu") -> float:
    """The measured matmul rate (GFLOP/s) of this process's CPU (or ``device``) in ``dtype``.

    Runs repeated ``(m, k) @ (k, n)`` products for about ``seconds`` after one warm-up
    (at least one timed product, so an emulated dtype costs about two products); on a GPU
    each product is waited for before the clock is read.
    """
    import torch

    wait = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m, k, n = shape
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=gen).to(device, getattr(torch, dtype))
        b = torch.randn(k, n, generator=gen).to(device, getattr(torch, dtype))
        with torch.inference_mode():
            a @ b  # warm-up (oneDNN picks its kernel here)
            wait()
            reps, start = 0, time.perf_counter()
            while True:
                a @ b
                wait()
                reps += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
        return 2 * m * k * n * reps / elapsed / 1e9
    finally:
        torch.set_num_threads(old)


FLOOR_SHAPES = {"cpu": (512, 576, 1536), "cuda": (4096, 4096, 4096)}  # (m, k, n) the floor is measured on


def floor_rate(dtype: str, device: str = "cpu", tries: int = 3, seconds: float = 0.1) -> float:
    """The best of ``tries`` matmul-rate measurements (GFLOP/s) of ``FLOOR_SHAPES`` in
    ``dtype``: the peak the compute floor is derived from (``make bench`` and the
    ``activations`` asset). Measured when asked, next to the work it is compared with: on a
    shared VM one 0.5 s measurement of the same product ranged 116–153 GFLOP/s within an
    hour (docs/PERFORMANCE.md), so the best of a few short ones estimates the peak."""
    shape = FLOOR_SHAPES["cuda" if device.startswith("cuda") else "cpu"]
    return max(matmul_gflops(dtype, shape, seconds=seconds, device=device) for _ in range(tries))


def decide_cpu_dtype(
    flags: Iterable[str] | None, machine: str, onednn_isa_cap: str | None, probe: Callable[[str], float]
) -> tuple[str, str]:
    """``(dtype, reason)`` for CPU compute. Pure apart from ``probe(dtype) -> GFLOP/s``,
    which is only called where the flags are ambiguous."""
    x86 = machine.lower() in ("x86_64", "amd64", "i386", "i686")
    if flags is not None and x86 and not onednn_isa_cap:
        flags = set(flags)
        native = sorted(flags & set(NATIVE_BF16_FLAGS))
        if native:
            return "bfloat16", f"CPU computes bf16 natively ({', '.join(native)})"
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return "float32", f"CPU has no native bf16 ({isa}, no avx512_bf16/amx_bf16): bf16 would be emulated"
    why = (
        f"ONEDNN_MAX_CPU_ISA={onednn_isa_cap}" if onednn_isa_cap
        else "CPU flags unreadable" if flags is None else f"{machine} CPU"
    )
    bf16, fp32 = probe("bfloat16"), probe("float32")
    if bf16 >= BF16_MIN_SPEEDUP * fp32:
        return "bfloat16", f"{why}; matmul probe: bf16 {bf16:.0f} GFLOP/s vs fp32 {fp32:.0f} GFLOP/s"
    return "float32", f"{why}; matmul probe: bf16 {bf16:.1f} GFLOP/s vs fp32 {fp32:.0f} GFLOP/s"


@lru_cache(maxsize=1)
def cpu_compute_dtype() -> tuple[str, str]:
    """The CPU decision for this process (flags first, a matmul probe where ambiguous)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return decide_cpu_dtype(cpu_flags(), platform.machine(), cap, matmul_gflops)


def training_precision(mixed_precision: bool = True, device: str | None = None) -> Precision:
    """Precision of training with fp32 weights: autocast to the hardware's compute dtype
    when ``mixed_precision`` (fp32 where that is fp16), plain fp32 otherwise."""
    return choose_precision(device, None if mixed_precision else "float32").for_training()


def choose_precision(device: str | None = None, dtype: str | None = None) -> Precision:
    """Device and compute dtype for a model run: arguments, then ``MUP_DEVICE`` /
    ``MUP_DTYPE``, then the hardware's own choice."""
    import torch

    device = device or os.environ.get("MUP_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None and os.environ.get("MUP_DTYPE"):
        dtype, reason = os.environ["MUP_DTYPE"], "MUP_DTYPE"
    elif dtype is not None:
        reason = "asked for"
    elif device.startswith("cuda"):
        with torch.cuda.device(torch.device(device)):
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        dtype = "bfloat16" if native else "float16"
        reason = f"GPU {'computes bf16 natively' if native else 'lacks native bf16 (before Ampere)'}"
    else:
        dtype, reason = cpu_compute_dtype()
    if not device.startswith("cuda"):
        tune_cpu_allocator()
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (MUP_DTYPE or a `dtype` setting): use one of {', '.join(DTYPES)}")
    return Precision(torch.device(device), getattr(torch, dtype), reason)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
ALLOCATOR_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit


@lru_cache(maxsize=1)
def tune_cpu_allocator() -> str:
    """Keep freed tensor memory in the process instead of returning it to the OS.

    A forward pass allocates and frees tens of activation-sized buffers (a few MB each);
    glibc serves those with fresh ``mmap``s, so every op's output first page-faults and
    is zeroed by the kernel. With the mmap threshold at its 32 MB maximum and trimming
    off, the buffers are reused from the heap: about +10 % extraction throughput on 2
    cores (docs/PERFORMANCE.md). Blocks above 32 MB (activation shards) are still
    mapped and returned on free, so peak memory stays that of one shard. Once per
    process, glibc only; ``MUP_TUNE_MALLOC=0`` leaves the allocator alone. Returns what
    was done, for the logs."""
    import ctypes

    if os.environ.get("MUP_TUNE_MALLOC", "1") == "0":
        return "allocator untouched (MUP_TUNE_MALLOC=0)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "allocator untouched (not glibc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = (libc.mallopt(_M_MMAP_THRESHOLD, ALLOCATOR_MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
                and libc.mallopt(_M_TOP_PAD, 64 * 2**20))
    except (OSError, AttributeError) as exc:
        return f"allocator untouched ({exc})"
    return "glibc malloc: mmap threshold 32 MB, trim threshold 256 MB" if done else "allocator untouched (mallopt refused)"
