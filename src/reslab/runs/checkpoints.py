"""Checkpoint files: written atomically beside their target with a checksum, and read by one
loader that checks it and whose errors name the file and the fix (`ckpt_path`, `weights`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from reslab.errors import ConfigError
from reslab.runs import layout as run_layout
from reslab.runs.atomic import write_atomic

log = logging.getLogger("reslab")
SHA256 = re.compile(r"[0-9a-f]{64}")
# The first record of a legacy-format torch file: torch.save's magic number, pickled.
LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with the temporary file in the checkpoint's own directory
    and a checksum written beside every checkpoint.

    Lightning writes through an fsspec transaction whose temporary file lives in the system temp
    dir; on another filesystem its final "move" is a copy, and a full disk then leaves a
    truncated `last.ckpt`. Here the previous file stays until the new one is complete.

    Damaged bytes inside an intact zip (a bad disk sector, a faulty copy) load without an error
    and train on garbage; `<file>.sha256` (`sha256sum -c` reads it) lets every read find them.
    It lists the new digest and the previous one while the checkpoint is replaced, then the new
    one alone, so a crash at any point leaves a checkpoint that matches its checksum file.

    A save inside `held()` is serialised at once (the state of that moment) and written by
    `commit()`, or dropped by `discard()`: Lightning logs a step's metrics after the hooks that
    save, so a checkpoint on disk before them, and a kill in between, lost those rows
    (`reslab.training.callbacks.LastCheckpoint` commits once they are logged)."""

    def __init__(self) -> None:
        super().__init__()
        self._holding = False
        self.pending: dict[Path, bytes] = {}

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Saves made inside wait for `commit()`."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path = Path(path)
        if self._holding:
            self.pending[path] = buffer.getvalue()
            return
        self.pending.pop(path, None)  # superseded by this newer save
        self.write(path, buffer.getvalue())

    def commit(self) -> None:
        """Write the held saves."""
        while self.pending:
            self.write(*self.pending.popitem())

    def discard(self) -> None:
        """Drop the held saves: the files on disk stay as they are."""
        self.pending.clear()

    def write(self, path: Path, data: bytes) -> None:
        """`data` (a serialised checkpoint) to `path`, with its checksum beside it."""
        sums = run_layout.checksum_file(path)
        new = hashlib.sha256(data).hexdigest()
        previous = []
        if path.is_file():  # a file of an older run has no checksum file yet
            previous = _digests(sums) or [_file_digest(path)]
        write_atomic(sums, _checksum_text([new, *previous], path.name))
        write_atomic(path, data)
        write_atomic(sums, _checksum_text([new], path.name))

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        run_layout.checksum_file(path).unlink(missing_ok=True)


def _checksum_text(digests: list[str], name: str) -> bytes:
    return "".join(f"{d}  {name}\n" for d in dict.fromkeys(digests)).encode()


def _digests(sums: Path) -> list[str]:
    """The digests a checksum file lists (none when it is missing or unreadable)."""
    try:
        lines = sums.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [d for line in lines if SHA256.fullmatch(d := line.split(" ", 1)[0])]


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per version of it (`size`, `mtime_ns`) in a process: resume
    reads its checkpoint more than once."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_checksum(path: Path, key: str) -> None:
    """`path` matches the checksum written beside it, if one was: files without one (older
    runs, torchvision's downloads) are read unchecked."""
    sums = run_layout.checksum_file(path)
    if not sums.is_file():
        return
    expected = _digests(sums)
    if not expected:
        raise ConfigError(
            f"{key}={path}: its checksum file {sums} lists no sha256; restore it, or delete it "
            "to read the checkpoint unchecked"
        )
    if _file_digest(path) not in expected:
        raise ConfigError(
            f"{key}={path} is damaged: its sha256 differs from the one written beside it when it "
            f"was saved ({sums.name}); pass another checkpoint, e.g. checkpoints/best.ckpt"
        )


def _torch_format(path: Path) -> str | None:
    """ "zip" (torch.save's format since torch 1.6), "legacy" (the format before it, in which
    older torchvision weights ship) or None (not a torch file, or a truncated zip whose
    directory at its end is missing)."""
    if zipfile.is_zipfile(path):
        return "zip"
    with path.open("rb") as f:
        return "legacy" if f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC else None


def check_file(path: str | Path, key: str) -> Path:
    """`path` exists, is a torch file (zip or legacy format; an empty, truncated or text file
    fails) and matches the checksum written beside it, without loading it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist; pass a checkpoint or state_dict file")
    if _torch_format(path) is None:
        size = path.stat().st_size
        raise ConfigError(
            f"{key}={path} is not a readable torch file ({size} bytes: empty, truncated or not "
            "written by torch.save); pass another file, e.g. checkpoints/best.ckpt"
        )
    _check_checksum(path, key)
    return path


def load(path: str | Path, key: str, weights_only: bool = False) -> Any:
    """The object saved in `path`; any failure is one line naming `key=path`."""
    path = check_file(path, key)
    try:
        # Memory-mapped where the format allows it (zip): the legacy format cannot be.
        mmap = _torch_format(path) == "zip"
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
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
