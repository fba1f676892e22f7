"""What every ingestion shares: the content-hash file registry, quarantine and the report.

Idempotency rule: a file is identified by ``(kind, sha256 of its bytes)``. Ingesting the same bytes
again (under any name) is a no-op reported as ``duplicate``; so is a price file whose content,
decompressed and with CRLF line ends as LF, is that of an ingested one (``content_sha256``). A
file is registered, its good rows loaded and its bad rows quarantined in ONE transaction, so a
crash leaves either all or nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from settlement.failpoints import failpoint
from settlement.store import Store
from tariffs.errors import ExitCode

FileKind = Literal["meter", "prices", "customers"]
FileStatus = Literal["loaded", "partial", "rejected", "duplicate"]

QUARANTINE_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    "source_line": pl.Int32,
    "record_type": pl.Utf8,
    "field": pl.Utf8,
    "reason": pl.Utf8,
    "raw": pl.Utf8,
}


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def expand_paths(paths: Iterable[str | Path], patterns: Sequence[str]) -> list[Path]:
    """Files named directly plus those matching ``patterns`` below named folders, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = {f for pat in patterns for f in p.rglob(pat) if f.is_file()}
            out.extend(sorted(found))
        else:
            out.append(p)
    return out


@dataclass
class FileResult:
    """What happened to one input file."""

    path: str
    kind: FileKind
    status: FileStatus
    sha256: str = ""
    file_id: int | None = None
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    """The outcome of one ingest command over many files."""

    files: list[FileResult] = field(default_factory=list)

    @property
    def rows_loaded(self) -> int:
        """Rows loaded across files."""
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        """Rows quarantined across files (a rejected file counts at least one)."""
        return sum(f.rows_quarantined for f in self.files)

    @property
    def exit_code(self) -> ExitCode:
        """``QUARANTINED`` when any row or file was quarantined, else ``OK``."""
        bad = any(f.status in ("partial", "rejected") for f in self.files)
        return ExitCode.QUARANTINED if bad else ExitCode.OK

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "files": [f.__dict__ for f in self.files],
            "rows_loaded": self.rows_loaded,
            "rows_quarantined": self.rows_quarantined,
            "exit_code": int(self.exit_code),
        }


def content_sha256(content: bytes) -> str:
    """Hex SHA-256 of a file's decompressed content with CRLF line ends read as LF: the key under
    which the same data delivered in another container or with other line ends is the same file
    (schema v9, ``ingested_files.content_sha256``)."""
    return hashlib.sha256(content.replace(b"\r\n", b"\n")).hexdigest()


def already_ingested(
    store: Store, kind: FileKind, sha256: str, content: str | None = None
) -> int | None:
    """The file_id of a file of ``kind`` already ingested with the same bytes (``sha256``) or,
    when given, the same content key (``content``, see :func:`content_sha256`), else ``None``."""
    rows = store.con.execute(
        "SELECT min(file_id) FROM ingested_files WHERE kind = ? "
        "AND (sha256 = ? OR content_sha256 = ?)",
        [kind, sha256, content],
    ).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def register_file(
    store: Store,
    path: Path,
    kind: FileKind,
    sha256: str,
    fmt: str | None,
    content: str | None = None,
) -> int:
    """Insert the registry row (status ``loaded``, counts 0) and return the new file_id.

    ``content`` is the file's content key (:func:`content_sha256`) where its kind has one.
    Call inside the ingestion transaction; finish with :func:`finish_file`.
    """
    row = store.con.execute(
        "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, status,"
        " format, content_sha256) VALUES (nextval('file_id_seq'), ?, ?, ?, ?, now(), 'loaded', ?,"
        " ?) RETURNING file_id",
        [kind, str(path), sha256, path.stat().st_size, fmt, content],
    ).fetchall()
    return int(row[0][0])


def quarantine_rows(store: Store, file_id: int, source_file: str, rows: pl.DataFrame) -> int:
    """Append quarantined records (frame with :data:`QUARANTINE_SCHEMA` columns); return count."""
    if rows.height == 0:
        return 0
    frame = rows.select(
        [
            pl.col(c).cast(t) if c in rows.columns else pl.lit(None, t).alias(c)
            for c, t in QUARANTINE_SCHEMA.items()
        ]
    )
    store.con.register("_q", frame.to_arrow())
    try:
        store.con.execute(
            "INSERT INTO quarantine SELECT ?, ?, source_line, record_type, field, reason, raw, now()"
            " FROM _q",
            [file_id, source_file],
        )
    finally:
        store.con.unregister("_q")
    return rows.height


def quarantine_file(store: Store, file_id: int, source_file: str, reason: str) -> None:
    """Record that a whole file was refused (line NULL) with its reason."""
    store.con.execute(
        "INSERT INTO quarantine VALUES (?, ?, NULL, NULL, NULL, ?, NULL, now())",
        [file_id, source_file, reason],
    )


def finish_file(store: Store, result: FileResult) -> None:
    """Write the final counts and status of a registered file (the last step before commit)."""
    failpoint("ingest.before_commit")
    store.con.execute(
        "UPDATE ingested_files SET status = ?, rows_loaded = ?, rows_duplicate = ?, "
        "rows_quarantined = ?, warnings = ? WHERE file_id = ?",
        [
            result.status,
            result.rows_loaded,
            result.rows_duplicate,
            result.rows_quarantined,
            result.warnings,
            result.file_id,
        ],
    )


def quarantine_listing(
    store: Store, *, file_pattern: str | None = None, limit: int = 100
) -> pl.DataFrame:
    """Quarantined records, newest file first: file, line, record type, field, reason, raw.

    ``file_pattern`` is a SQL LIKE pattern on the file path, passed as a parameter.
    """
    return store.con.execute(
        "SELECT source_file, source_line, record_type, field, reason, raw, quarantined_at "
        "FROM quarantine WHERE ? IS NULL OR source_file LIKE ? "
        "ORDER BY file_id DESC, source_line NULLS FIRST LIMIT ?",
        [file_pattern, file_pattern, limit],
    ).pl()
