"""User-facing errors.

Every problem a user can cause (an unknown algorithm, a bad architecture spec, a missing dataset,
a shape that does not fit) raises :class:`LocalearnError`. The CLI prints its message as one line
and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LocalearnError(Exception):
    """A problem with the user's input, reported as one clear line."""


class ConfigError(LocalearnError, ValueError):
    """An option, spec or argument that cannot be used as given."""


class DataNotFoundError(LocalearnError, FileNotFoundError):
    """A dataset whose files are not where they were looked for."""
