"""The errors a user can act on. Each says which file, key or artifact is wrong and what to do.

Every one is a :class:`SeldError`; the CLI turns a ``SeldError`` into a one-line message and
exit code 2, and lets anything else show its traceback (a bug must never pass for bad input).
Each also keeps the builtin base it always had (``ValueError``, ``FileNotFoundError``,
``RuntimeError``), so code that catches those still does.
"""

from __future__ import annotations


class SeldError(Exception):
    """Bad input or a missing prerequisite that the user can fix."""


class ConfigError(SeldError, ValueError):
    """An experiment config (or option) that cannot be used: names the file or override, the
    dotted key and what is allowed."""


class MissingArtifactError(SeldError, FileNotFoundError):
    """Something an earlier step makes is not there (features, a stage's checkpoint, a run's
    config): names it and the command that makes it."""


class ClusterError(SeldError):
    """A cluster definition, address or job that cannot be used."""
