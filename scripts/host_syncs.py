"""Count the calls that make the host wait for the device.

On a GPU each such call drains the launch queue: the device idles while Python prepares the
next step's kernels, so a training step with syncs runs at host speed plus device speed
instead of the slower of the two. CUDA's sync debug mode needs a GPU; `HostSyncs` spots the
same calls on any device (a CPU test holds the training step to zero), at the Python level.

A measuring tool, not part of training: it lives in the package because both the tests and
the speed harness (`scripts/benchmark.py`, which cannot import from `tests/`) use it, and a
user can count the syncs of their own callbacks the same way.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

Tensor = torch.Tensor

# Calls whose result needs the device's values on the host: conversions, and ops whose output
# size depends on the data.
SYNCING = {
    Tensor.item, Tensor.tolist, Tensor.numpy, Tensor.cpu, Tensor.__bool__, Tensor.__float__,
    Tensor.__int__, Tensor.__index__, Tensor.__complex__, Tensor.__array__, Tensor.__format__,
    Tensor.__repr__, Tensor.nonzero, torch.nonzero, Tensor.unique, torch.unique,
    torch.unique_consecutive, Tensor.masked_select, torch.masked_select, Tensor.bincount,
    torch.bincount, Tensor.repeat_interleave, torch.repeat_interleave,
}  # fmt: skip
_TORCH_DIR = str(Path(torch.__file__).parent)
_LIGHTNING = Path("lightning", "pytorch")
_LIGHTNING_ENTRY = tuple(
    str(_LIGHTNING / p)
    for p in (
        "trainer/call.py",
        "loops/training_epoch_loop.py",
        "loops/evaluation_loop.py",
        "loops/fit_loop.py",
    )
)


class HostSyncs(TorchFunctionMode):
    """Within `with HostSyncs() as syncs:`, `syncs.calls` counts each syncing call by
    `"<call> at <file>:<line>"` of the first caller outside torch, followed by
    `" in <hook> (<file>:<line>)"` when it ran under a Lightning hook or loop step."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        if _syncs(func, args, kwargs or {}):
            self.calls[f"{getattr(func, '__name__', func)} at {_caller()}"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _syncs(func: Any, args: tuple, kwargs: dict) -> bool:
    if func in SYNCING:
        return func not in (Tensor.repeat_interleave, torch.repeat_interleave) or (
            "output_size" not in kwargs
        )
    if func in (Tensor.__getitem__, Tensor.__setitem__):  # a boolean mask needs its nonzero()
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in index)
    if func in (Tensor.to, Tensor.copy_):  # device -> host copies
        source = args[0] if func is Tensor.to else args[1]
        target = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, str | torch.device)]
        if func is Tensor.copy_:
            target = [args[0].device]
        return source.device.type != "cpu" and any(torch.device(t).type == "cpu" for t in target)
    return False


def _caller() -> str:
    """The first frame outside torch, and the Lightning hook or loop step it ran under if
    any (the frame that Lightning's loops or hook dispatcher called)."""
    frame = sys._getframe(2)
    while frame.f_back and frame.f_code.co_filename.startswith(_TORCH_DIR):
        frame = frame.f_back
    hook = frame
    while hook.f_back and not hook.f_back.f_code.co_filename.endswith(_LIGHTNING_ENTRY):
        hook = hook.f_back
    if hook.f_back is None or hook is frame:
        return _where(frame)
    return f"{_where(frame)} in {hook.f_code.co_name} ({_where(hook)})"


def _where(frame: FrameType) -> str:
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
