"""The nightly inbox: ingest every new file, then move it to the archive after its commit.

Order: customers, prices, meter (so a meter file's account exists when it is settled). A file is
moved only after the transaction holding its data has committed; a run killed in between finds
the file again next time, sees its content hash already registered (``duplicate``) and moves it.
The archive never overwrites: a name taken by other content gets the new file's hash in its name.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from settlement.customers import ingest_customer_files
from settlement.failpoints import failpoint
from settlement.ingest_common import FileResult, IngestReport, expand_paths, sha256_file
from settlement.nem12 import PATTERNS as METER_FILE_PATTERNS
from settlement.nem12 import ingest_meter_files
from settlement.prices import PRICE_FILE_PATTERNS, ingest_price_files
from settlement.store import Store

# the names each ingest command accepts from a folder, in any case (a narrower list here left
# files such as ``..._SA1.gz`` or ``CUSTOMERS.CSV`` in the inbox for good, unreported)
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("customers", ("*.[cC][sS][vV]",)),
    ("prices", PRICE_FILE_PATTERNS),
    ("meter", METER_FILE_PATTERNS),
)


def pending_files(inbox: Path) -> dict[str, list[Path]]:
    """Files waiting in ``inbox/<kind>/`` for each kind, sorted by name."""
    return {
        kind: expand_paths([inbox / kind], patterns) if (inbox / kind).is_dir() else []
        for kind, patterns in KINDS
    }


def _ingest(kind: str, store: Store, path: Path) -> FileResult:
    if kind == "customers":
        return ingest_customer_files(store, [path]).files[0]
    if kind == "prices":
        return ingest_price_files(store, [path]).files[0]
    return ingest_meter_files(store, [path]).files[0]


def archive_target(target: Path, sha256: str) -> tuple[Path, bool]:
    """Where a file with content hash ``sha256`` meant for ``target`` is archived, and whether
    the archive already holds these very bytes there: a name taken by other content gives
    ``<stem>.<sha256[:12]><suffixes>``."""
    if target.exists() and sha256_file(target) != sha256:
        suffixes = "".join(target.suffixes)
        stem = target.name[: len(target.name) - len(suffixes)] if suffixes else target.name
        target = target.with_name(f"{stem}.{sha256[:12]}{suffixes}")
        # the hashed name may already hold these bytes (delivered before under the taken name)
        return target, target.exists() and sha256_file(target) == sha256
    return target, target.exists()  # hashed just above: these very bytes


def archive_file(
    path: Path,
    target: Path,
    sha256: str,
    before_move: Callable[[str, Path], None] | None = None,
) -> Path:
    """Move ``path`` to ``target``, never over an earlier file: when the name is taken by other
    content the file is archived as ``<stem>.<sha256[:12]><suffixes>``; when the archive already
    holds these very bytes the inbox copy is removed (nothing is lost). Works across file
    systems (copy, then remove: a crash in between leaves an inbox copy that the next run sees
    as a duplicate and archives again). ``before_move(sha256, where)`` is called once the place
    is chosen, before anything moves. Returns where the file is archived."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sha256 = sha256 or sha256_file(path)
    where, same = archive_target(target, sha256)
    if before_move:
        before_move(sha256, where)
    if same:
        path.unlink()
        return where
    try:
        os.replace(path, where)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(path, where)
        path.unlink()
    return where


def _recorder(store: Store, kind: str, path: Path) -> Callable[[str, Path], None]:
    """Records in ``archived_files`` where ``path`` goes, before it moves: a run killed in
    between leaves the file in the inbox, and the next run finds it a duplicate and archives
    (and records) it to the same place."""

    def record(sha256: str, where: Path) -> None:
        store.con.execute(
            "INSERT INTO archived_files VALUES (?, ?, ?, ?, now()) ON CONFLICT DO NOTHING",
            [sha256, kind, str(path), str(where)],
        )

    return record


def ingest_inbox(
    store: Store,
    inbox: Path,
    archive: Path,
    *,
    on_file: Callable[[str, FileResult], None] | None = None,
) -> IngestReport:
    """Ingest all pending inbox files, moving each to ``archive/<kind>/`` once committed."""
    report = IngestReport()
    for kind, paths in pending_files(inbox).items():
        for path in paths:
            result = _ingest(kind, store, path)
            report.files.append(result)
            failpoint("ingest.after_commit")
            target = archive / kind / path.relative_to(inbox / kind)
            archive_file(path, target, result.sha256, _recorder(store, kind, path))
            if on_file:
                on_file(kind, result)
    return report
