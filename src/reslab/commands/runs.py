"""`reslab-runs`: the training runs under a log dir, newest first, one line each: when, run
name, status (completed, failed, running, or stopped: a dir with no record whose process is
gone), steps, test error and dir. Finds single runs and sweep jobs alike."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from reslab.commands.task import one_line_errors
from reslab.errors import ConfigError
from reslab.runs import layout as run_layout
from reslab.runs import record as run_record


def run_dirs(log_dir: Path) -> list[Path]:
    """Every training run dir (one with Hydra's saved config) under `log_dir`, newest first."""
    found = {p.parent.parent for p in log_dir.glob(f"**/{run_layout.CONFIG}")}
    return sorted(found, key=lambda p: (p / run_layout.CONFIG).stat().st_mtime, reverse=True)


def describe(run_dir: Path) -> list[str]:
    """time, run name, status, steps, test error (%), dir."""
    when = (run_dir / run_layout.CONFIG).stat().st_mtime  # the latest start or resume
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
    try:
        record = run_record.read(run_dir) or {}
    except run_record.UnreadableRecord:
        record = {"status": "unreadable summary.json"}
    status = run_record.status(run_dir, record)
    err = record.get("test_err")
    return [
        stamp,
        str(record.get("run_name") or run_dir.name),
        str(status),
        str(record.get("steps", "")),
        f"{err:.2f}" if isinstance(err, int | float) else "",
        str(run_dir),
    ]


def table(rows: list[list[str]]) -> str:
    head = ["time", "run", "status", "steps", "test err", "dir"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in [head, *rows]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="reslab-runs", description=__doc__)
    default = Path(os.environ.get("RESLAB_LOG_DIR", "logs")) / "train"
    parser.add_argument("log_dir", type=Path, nargs="?", default=default,
                        help=f"where to look (default: {default})")  # fmt: skip
    return parser.parse_args(argv)


@one_line_errors
def main(argv: Sequence[str] | None = None) -> None:
    log_dir = parse_args(argv).log_dir
    if not log_dir.is_dir():
        raise ConfigError(f"{log_dir} does not exist; pass a log dir, e.g. reslab-runs logs/train")
    rows = [describe(d) for d in run_dirs(log_dir)]
    print(table(rows) if rows else f"no runs under {log_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
