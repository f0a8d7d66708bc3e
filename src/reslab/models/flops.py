"""Multiply-adds of a model, in total and per top-level part, via `torch.utils.flop_counter`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> dict[str, int]:
    """MACs (= FLOPs / 2, the unit of the paper's Table 1) for one image of `input_size`:
    one entry per direct child that does work (`conv1`, `layer1`.., `fc`) plus `total`."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, *input_size, dtype=param.dtype, device=param.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    root = type(model).__name__
    per_part = {}
    for name, _ in model.named_children():
        flops = sum(counter.get_flop_counts().get(f"{root}.{name}", {}).values())
        if flops:
            per_part[name] = int(flops) // 2
    per_part["total"] = int(counter.get_total_flops()) // 2
    return per_part
