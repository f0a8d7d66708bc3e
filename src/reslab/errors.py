"""User-facing errors: the entry points print these as one line and exit non-zero."""


class ReslabError(Exception):
    """A mistake in the user's config, data or environment, fixable without reading code."""


class ConfigError(ReslabError, ValueError):
    """A config value that cannot work; the message names it and the valid choices."""


class DataError(ReslabError):
    """Missing, corrupt or mismatched data; the message names the file and the fix."""
