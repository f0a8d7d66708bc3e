"""The default numeric precision of a run, from what the training device computes fast."""

from __future__ import annotations

import torch


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 units on this CPU (torch has no public query for these CPU
    flags, so this reads the private ones its own kernels dispatch on)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def trains_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` setting picks the CPU on this machine."""
    if accelerator == "auto":
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return accelerator == "cpu"


def default_precision(accelerator: str = "auto") -> str:
    """`trainer.precision`'s default: bf16 autocast on a CPU with bf16 units, where it trains
    CIFAR ResNets 1.6-1.7x faster than fp32 to the same error (docs/performance.md); fp32 on
    other CPUs (emulated bf16 is slower than fp32) and on GPUs, where the paper's fp32 stays
    the default until measured otherwise (`trainer.precision=bf16-mixed` chooses it)."""
    return "bf16-mixed" if trains_on_cpu(accelerator) and cpu_has_bf16() else "32-true"
