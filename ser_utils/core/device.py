"""Where and how inference runs: device, precision and batch size chosen from the hardware.

* CUDA: bf16 autocast where the GPU supports it, batches of 16 clips.
* CPU with native bf16 arithmetic (AVX512-BF16 or AMX): bf16 autocast, one clip at a time.
* Other CPUs: float32, one clip at a time.

On a CPU, batching buys nothing (the cores are busy either way) and padding costs compute, so one
clip at a time is fastest; measured in ``benchmarks/bench_wav2vec2.py``. ``SER_PRECISION=fp32``
forces float32 everywhere (bit-for-bit comparisons, CPUs where bf16 misbehaves).
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (else bf16 is emulated and slow)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """bf16 where the hardware runs it natively, ``None`` (float32) otherwise or with SER_PRECISION=fp32."""
    if os.environ.get("SER_PRECISION", "auto").lower() in ("fp32", "float32"):
        return None
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if kind == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def inference_batch_size(device: str | torch.device) -> int:
    return 16 if torch.device(device).type == "cuda" else 1


@contextmanager
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread for the block (tiny models: more threads only add contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def release_memory() -> None:
    """Hand the heap's freed memory back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Call it at the end of a joblib job that made large temporaries: with psutil installed, loky restarts a
    worker whose resident memory grew by 300 MB since its first job, taking it for a leak; freed but untrimmed
    heap memory counted as such, so every few splits a worker was replaced (a torch import each time) and
    "A worker stopped while some jobs were given to the executor" was printed into the reports."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def autocast(device: str | torch.device, dtype: torch.dtype | None):
    """The one mixed-precision context of the package: autocast to ``dtype`` on ``device``'s type, off
    for ``None`` or float32 (full precision)."""
    enabled = dtype not in (None, torch.float32)
    return torch.autocast(torch.device(device).type, dtype=dtype if enabled else None, enabled=enabled)
