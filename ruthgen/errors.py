"""Errors of the generator and the validation record shared by discovery and its helpers.

Every exception the generator raises on purpose derives from :class:`RuthgenError` and carries
an ``exit_code`` that the CLI returns. Validation problems of one plugin are not exceptions:
they are :class:`ValidationIssue` records collected in that plugin's report, so that one broken
plugin never stops the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ValidationIssue:
    """One failed (or warned) check of a plugin.

    ``check`` is a stable machine name (see docs/plugin-contract.md), ``message`` says what to do,
    ``path`` is the offending field (``input.format``) or file (``inference.py``), "" when none.
    """

    check: str
    message: str
    path: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class RuthgenError(Exception):
    """Root of every error the generator raises on purpose."""

    exit_code = 1


class UsageError(RuthgenError):
    """The command line or library call asked for something impossible."""

    exit_code = 2


class BuildError(RuthgenError):
    """The repository could not be written; the previous repository is left as it was."""

    exit_code = 3


class EntryNotWritten(BuildError):
    """One plugin version's entry was not written: the version is gone or invalid (the message says)."""


class EnvironmentBuildError(BuildError):
    """A plugin's Python environment (requirements.txt) could not be built."""


class RepositoryError(RuthgenError):
    """A generated repository is missing, unreadable or inconsistent."""

    exit_code = 1
