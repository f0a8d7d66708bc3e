"""What the training device computes fast: bf16 autocast where the hardware has bf16 units,
full fp32 elsewhere (emulated bf16 is slower than fp32)."""

from __future__ import annotations

import torch


def native_bf16(accelerator: str = "auto") -> bool:
    """NVIDIA Ampere or newer; a CPU with AVX512-BF16 or AMX (torch has no public query for
    these CPU flags, so this reads the private ones its own kernels dispatch on)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def fast_precision(accelerator: str = "auto") -> str:
    """`trainer.precision` for `${fast_precision:${trainer.accelerator}}`."""
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"
