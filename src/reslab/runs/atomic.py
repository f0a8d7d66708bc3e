"""Writing a file so that a crash or a full disk leaves either the old file or the new one,
never a truncated mix: a temporary file beside the target (same filesystem, so the rename is
atomic), flushed to disk, then renamed over it."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path

from reslab.errors import ReslabError


class WriteError(ReslabError):
    """A file could not be written (disk full, no permission); the previous version is kept."""


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path`; first removes what an earlier write of `path` that was killed
    (kill -9, power loss) left beside it. One process writes a given file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise WriteError(f"cannot write {path}: {e.strerror or e}; {kept}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
