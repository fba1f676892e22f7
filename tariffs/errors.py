"""The fairshare error hierarchy and the process exit codes it maps to.

Every error names the offending value and the rule it broke (QuantLib style). Errors live in
``tariffs`` because it is the bottom layer: every other package may import it.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes of every ``fairshare`` command (documented in the README)."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    QUARANTINED = 3
    AUDIT_FAILED = 4
    LOCK_HELD = 5
    HELD = 6


class FairshareError(Exception):
    """Base class of every error fairshare raises on purpose."""

    exit_code: ExitCode = ExitCode.UNEXPECTED


class ConfigError(FairshareError):
    """A setting or argument is invalid."""

    exit_code = ExitCode.USAGE


class InputFileError(FairshareError):
    """An input file (or one of its records) breaks its format.

    Parameters
    ----------
    path : file that holds the problem.
    line : 1-based line number, or ``None`` when the problem concerns the whole file.
    field : name of the offending field, or ``None``.
    reason : what rule was broken, quoting the offending value.
    """

    exit_code = ExitCode.QUARANTINED

    def __init__(
        self, path: str | Path, reason: str, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field {field!r}" if field else ""
        super().__init__(f"{where}:{what} {reason}")


class MeterFileError(InputFileError):
    """A NEM12 / interval meter file cannot be read."""


class PriceFileError(InputFileError):
    """A market price file cannot be read."""


class CustomerFileError(InputFileError):
    """A customer file cannot be read."""


class ProductFileError(FairshareError):
    """A product file is invalid; names the file and the key."""

    exit_code = ExitCode.USAGE

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}: {key}: {reason}")


class RateNotFoundError(FairshareError):
    """A dated parameter has no value in force on the requested day."""

    exit_code = ExitCode.USAGE

    def __init__(self, name: str, day: object) -> None:
        self.name = name
        self.day = day
        super().__init__(f"rate {name!r} has no value in force on {day} (before its first entry)")


class StoreError(FairshareError):
    """The DuckDB store is unusable (wrong schema version, corrupt, ...)."""


class SchemaBehindError(StoreError):
    """A store opened read-only has an older schema than this code reads: migrate it first."""

    exit_code = ExitCode.USAGE


class LockHeldError(FairshareError):
    """Another fairshare process holds the store's write lock."""

    exit_code = ExitCode.LOCK_HELD


class AuditFailedError(FairshareError):
    """A post-run audit query returned rows."""

    exit_code = ExitCode.AUDIT_FAILED
