"""The nightly inbox: ingest every new file, then move it to the archive after its commit.

Order: customers, prices, meter (so a meter file's account exists when it is settled). A file is
moved only after the transaction holding its data has committed; a run killed in between finds
the file again next time, sees its content hash already registered (``duplicate``) and moves it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from settlement.customers import ingest_customer_files
from settlement.failpoints import failpoint
from settlement.ingest_common import FileResult, IngestReport, expand_paths
from settlement.store import Store

KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("customers", ("*.csv",)),
    ("prices", ("*.csv", "*.csv.gz", "*.CSV", "*.zip", "*.ZIP")),
    ("meter", ("*.csv", "*.CSV", "*.zip", "*.ZIP")),
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
        from settlement.prices import ingest_price_files

        return ingest_price_files(store, [path]).files[0]
    from settlement.nem12 import ingest_meter_files

    return ingest_meter_files(store, [path]).files[0]


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
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            if on_file:
                on_file(kind, result)
    return report
