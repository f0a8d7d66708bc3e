"""Checkpoint files: written atomically beside their target, and read by one loader whose
errors name the file and the fix (`ckpt_path`, `weights`)."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from reslab.atomic import write_atomic
from reslab.errors import ConfigError

log = logging.getLogger("reslab")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with the temporary file in the checkpoint's own directory.

    Lightning writes through an fsspec transaction whose temporary file lives in the system temp
    dir; on another filesystem its final "move" is a copy, and a full disk then leaves a
    truncated `last.ckpt`. Here the previous file stays until the new one is complete."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(path, buffer.getvalue())


def check_file(path: str | Path, key: str) -> Path:
    """`path` exists and is a complete torch file (a zip archive whose directory, at its end,
    is intact: an empty, truncated or text file fails), without loading it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist; pass a checkpoint or state_dict file")
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise ConfigError(
            f"{key}={path} is not a readable torch file ({size} bytes: empty, truncated or not "
            "written by torch.save); pass another file, e.g. checkpoints/best.ckpt"
        )
    return path


def load(path: str | Path, key: str, weights_only: bool = False) -> Any:
    """The object saved in `path`; any failure is one line naming `key=path`."""
    path = check_file(path, key)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"{key}={path} cannot be loaded ({type(e).__name__}: {first}); pass another file"
        ) from None


def check_lightning(path: str | Path, key: str) -> Path:
    """`path` is a Lightning checkpoint: a plain state_dict (torchvision's weights) has no
    training state to resume, and Lightning would fail on it with a bare KeyError."""
    stored = load(path, key, weights_only=True)
    if not isinstance(stored, dict) or "pytorch-lightning_version" not in stored:
        raise ConfigError(
            f"{key}={path} is not a Lightning checkpoint (no training state to resume); pass a "
            "checkpoint of reslab-train, e.g. <run dir>/checkpoints/last.ckpt"
        )
    return Path(path)


def net_weights(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The network weights in a loaded reslab checkpoint (`net.*` of its state_dict) or plain
    state_dict (torchvision's `resnet50-0676ba61.pth`); `source` names the file in errors."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{source} holds no state_dict of tensors; pass a weights file")
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    return state


def init_weights(net: nn.Module, path: str | Path, key: str) -> None:
    """Initialise `net` from the network weights in `path` (a torchvision state_dict or a reslab
    checkpoint), for fine-tuning: every tensor must fit, except a head (`fc`) for another class
    count, which keeps its fresh initialisation. Training state (optimizer, schedule, step) is
    not read: that is `ckpt_path`."""
    state = net_weights(load(path, key, weights_only=True), f"{key}={path}")
    ours = net.state_dict()
    theirs_fc, ours_fc = state.get("fc.weight"), ours.get("fc.weight")
    new_head = (
        theirs_fc is not None
        and ours_fc is not None
        and theirs_fc.shape[1:] == ours_fc.shape[1:]
        and theirs_fc.shape[0] != ours_fc.shape[0]
    )
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = [k for k in ours if not (new_head and k.startswith("fc."))]
    bad = [k for k in expected if k not in state or state[k].shape != ours[k].shape]
    bad += [k for k in state if k not in ours]
    if bad:
        raise ConfigError(
            f"{key}={path} does not fit the model config (first mismatch: {bad[0]}); use the "
            "model the weights were trained with (e.g. model=resnet50 for torchvision's)"
        )
    net.load_state_dict(state, strict=not new_head)
    if new_head:
        log.info(
            "%s=%s: network initialised from the file; the head (fc) is re-initialised for %d "
            "classes (the file's has %d)",
            key, path, ours_fc.shape[0], theirs_fc.shape[0],
        )  # fmt: skip
    else:
        log.info("%s=%s: network initialised from the file, head included", key, path)
