"""The DuckDB store: opening, locking, schema migrations.

The default store is an embedded DuckDB file, ``./fairshare.duckdb``, overridden by ``--db`` or the
``FAIRSHARE_DB`` environment variable (resolved in the CLI, passed here as a path). DuckDB lets one
process write a file at a time; a second writer gets :class:`~tariffs.errors.LockHeldError` at once.
Every connection runs with ``TimeZone = 'UTC'`` so TIMESTAMPTZ values print and compare in UTC.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from settlement.schema import LATEST_VERSION, MIGRATIONS
from tariffs.errors import LockHeldError, SchemaBehindError, StoreError

DEFAULT_DB = "fairshare.duckdb"
DB_ENV = "FAIRSHARE_DB"
MEMORY_ENV = "FAIRSHARE_MEMORY_LIMIT"  # e.g. "3GB": DuckDB's buffer limit (default 80% of RAM)


def with_literals(sql: str, values: Mapping[str, dt.date]) -> str:
    """``sql`` with each ``$name`` of ``values`` written in as a typed literal: a date as
    ``DATE '...'``, an aware datetime as ``TIMESTAMPTZ '...'``.

    For the few large scans that DuckDB 1.5 cannot prune by a bound parameter (it plans the
    prepared statement before it knows the value, so zone maps go unused on ``meter_values``).
    The text is made here from date objects, never taken from input; anything else is refused.
    """
    for name in sorted(values, key=len, reverse=True):  # $date_from before a shorter $date
        value = values[name]
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise TypeError(f"${name}: a naive datetime has no SQL literal here")
            literal = f"TIMESTAMPTZ '{value.isoformat()}'"
        elif isinstance(value, dt.date):
            literal = f"DATE '{value.isoformat()}'"
        else:
            raise TypeError(f"${name} must be a date or datetime, not {type(value).__name__}")
        sql = sql.replace(f"${name}", literal)
    return sql


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the connection sees a table or view ``name`` (temporary ones included)."""
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(rows[0][0])


def market_day_no(column: str) -> str:
    """SQL for the NEM market day (UTC+10) of TIMESTAMPTZ ``column`` as days since 1970-01-01:
    integer arithmetic, not a time-zone conversion per row (``DATE '1970-01-01' + n`` is the
    date). ``column`` is a column name written by this code, never input."""
    return f"(epoch_us({column}) // 1000000 + 36000) // 86400"


def in_market_days(column: str, first: str = "$1", last: str = "$2") -> str:
    """SQL: TIMESTAMPTZ ``column`` lies in the market days (UTC+10) numbered ``first`` to
    ``last`` (parameters or columns holding :func:`market_day_no` numbers): a range on the
    column itself, so DuckDB prunes row groups by it. Written by this code, never input."""
    day0 = "make_timestamptz(1970, 1, 1, 0, 0, 0, 'UTC')"
    return (
        f"{column} >= {day0} + to_days({first}) - INTERVAL 10 HOUR"
        f" AND {column} < {day0} + to_days({last} + 1) - INTERVAL 10 HOUR"
    )


def default_db_path() -> Path:
    """The store path from ``FAIRSHARE_DB``, else ``./fairshare.duckdb``."""
    return Path(os.environ.get(DB_ENV, DEFAULT_DB))


class Store:
    """An open fairshare store (one DuckDB connection).

    Use :meth:`open` (or the context manager form) rather than the constructor.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path | None) -> None:
        self.con = con
        self.path = path
        self.migrated: list[int] = []  # the versions :meth:`open` applied to this file

    @classmethod
    def open(cls, path: str | Path | None = None, *, read_only: bool = False) -> Store:
        """Open (creating and migrating if needed) the store at ``path``.

        ``path=":memory:"`` opens a throw-away in-memory store (tests). Raises
        :class:`LockHeldError` when another process holds the file.
        """
        target = default_db_path() if path is None else Path(path)
        in_memory = str(path) == ":memory:"
        if read_only and not in_memory and not target.exists():
            raise StoreError(f"store {target} does not exist (run an ingest first)")
        config: dict[str, str | bool | int | float | list[str]]
        config = {"memory_limit": limit} if (limit := os.environ.get(MEMORY_ENV)) else {}
        try:
            con = duckdb.connect(
                ":memory:" if in_memory else str(target), read_only=read_only, config=config
            )
        except (duckdb.InvalidInputException, duckdb.ParserException) as exc:
            raise StoreError(f"{MEMORY_ENV}={limit!r}: {exc}") from exc
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise LockHeldError(
                    f"store {target} is in use by another fairshare process; "
                    "try again when it has finished"
                ) from exc
            raise StoreError(f"cannot open store {target}: {exc}") from exc
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # progress is the CLI's job
        store = cls(con, None if in_memory else target)
        try:
            if not read_only:
                store.migrated = store.migrate()
            else:
                store.check_version(read_only=True)
        except BaseException:
            con.close()  # a refused store leaves no connection behind (nor its file lock)
            raise
        return store

    def schema_version(self) -> int:
        """The highest migration applied to this file (0 for a new file)."""
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchone()
        if not exists or exists[0] == 0:
            return 0
        row = self.con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def check_version(self, *, read_only: bool = False) -> None:
        """Raise :class:`StoreError` when the file is newer than this code understands, and,
        opened ``read_only`` (nothing can be migrated), :class:`SchemaBehindError` when it is
        older: its queries would name columns it does not have yet."""
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {current}, newer than this fairshare "
                f"({LATEST_VERSION}); upgrade fairshare"
            )
        if read_only and current < LATEST_VERSION:
            if current == 0:
                raise SchemaBehindError(f"{self.path} is not a fairshare store (no schema version)")
            raise SchemaBehindError(
                f"store {self.path} has schema version {current}; this fairshare reads version "
                f"{LATEST_VERSION}. Migrate it once: `fairshare migrate --db {self.path}` (every "
                "command that writes, such as ingest or nightly, migrates it first too)"
            )

    def migrate(self) -> list[int]:
        """Apply the migrations this file has not seen; return their versions."""
        self.check_version()
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMPTZ)"
        )
        done = {
            int(r[0]) for r in self.con.execute("SELECT version FROM schema_version").fetchall()
        }
        applied = []
        for m in sorted(MIGRATIONS, key=lambda m: m.version):
            if m.version in done:  # by set, not by maximum: a gap is filled, never skipped
                continue
            with self.transaction():
                self.con.execute(m.sql)
                if m.fill is not None:
                    m.fill(self.con)
                self.con.execute(
                    "INSERT INTO schema_version VALUES (?, ?, now())", [m.version, m.description]
                )
            applied.append(m.version)
        return applied

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction: commit on success, roll back on any error."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def query(self, sql: str, params: list[Any] | None = None) -> duckdb.DuckDBPyRelation:
        """Run a parameterised query and return the relation (``.pl()`` for polars)."""
        return self.con.sql(sql, params=params)

    def close(self) -> None:
        """Checkpoint (when writable) and close the connection."""
        with suppress(duckdb.Error):
            self.con.execute("CHECKPOINT")
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
