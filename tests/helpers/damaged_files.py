"""Checkpoint files damaged as disks and copies damage them, for the fault tests."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import torch

DAMAGED = 20_000  # bytes of a tensor overwritten


def damage(path: Path, where: str = "tensor") -> None:
    """Overwrite bytes inside one record of a torch zip file; the zip around them stays intact
    (as a bad sector or a faulty copy leaves it), so the file still opens. `tensor`: 20 kB of
    the largest tensor (the file still loads, to NaN weights); `pickle`: the middle of the
    pickled object tree (loading it fails deep inside torch)."""
    with zipfile.ZipFile(path) as z:
        if where == "tensor":
            info = max(z.infolist(), key=lambda i: i.file_size)
            start, size = 64, DAMAGED
        else:
            info = next(i for i in z.infolist() if i.filename.endswith("/data.pkl"))
            start, size = info.file_size // 3, info.file_size // 3
    assert info.file_size > start + size
    with path.open("r+b") as f:
        f.seek(info.header_offset)
        header = f.read(30)  # a zip local file header: its name and extra field follow
        name, extra = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name + extra + start)
        f.write(b"\xff" * size)
    assert zipfile.is_zipfile(path)
    if where == "tensor":
        torch.load(path, weights_only=True)  # loads: only the checksum tells
