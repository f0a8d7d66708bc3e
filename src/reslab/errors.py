"""User-facing errors: the commands print these as one line and exit non-zero."""

from __future__ import annotations

import sys


class ReslabError(Exception):
    """A mistake in the user's config, data or environment, fixable without reading code."""


class ConfigError(ReslabError, ValueError):
    """A config value that cannot work; the message names it and the valid choices."""


class DataError(ReslabError):
    """Missing, corrupt or mismatched data; the message names the file and the fix."""


class RunFailed(Exception):
    """A started run that could not go on for a reason outside its config (a process of the
    run gone): one line that says why and how to continue, exit 1, the record says failed."""


def one_line(error: BaseException) -> str:
    """The message a user needs. An error raised in a DataLoader worker comes back wrapped in
    the worker's whole traceback; its last line is the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(error).__name__


def reslab_cause(error: BaseException | None) -> ReslabError | None:
    """The `ReslabError` behind a library's wrapper (Hydra's instantiation error, OmegaConf's
    interpolation error around a resolver's), if any."""
    while error is not None:
        if isinstance(error, ReslabError):
            return error
        error = error.__cause__ or error.__context__
    return None


def print_error(error: BaseException) -> None:
    """The one line a command prints for a user's mistake."""
    print(f"reslab: error: {one_line(error)}", file=sys.stderr)
