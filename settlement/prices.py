"""Market price ingestion: ``fairshare ingest prices FILE_OR_DIR...``.

Accepted inputs (recognised from content, plain, gzip or one-file zip; ``data/formats/prices.md``):
AEMO PRICE_AND_DEMAND CSV, AEMO MMS DISPATCHPRICE / TRADINGPRICE / MARKET_PRICE_THRESHOLDS C/I/D
archives, and the generic CSV ``region,interval_end,price_per_mwh[,interval_minutes]``.

Each file is one transaction: register (content hash), quarantine bad rows with line and field,
load good rows into ``price_reads_raw`` as new versions, update ``is_current`` for the intervals
touched. The same bytes again are a no-op (``duplicate``). MMS threshold archives are ingested
before the price files of the same call, so their cap/floor history checks those prices.
"""

from __future__ import annotations

import zoneinfo
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from settlement.ingest_common import (
    FileResult,
    IngestReport,
    already_ingested,
    content_sha256,
    expand_paths,
    finish_file,
    quarantine_rows,
    register_file,
    sha256_file,
)
from settlement.prices_prepare import Item, Prepared, check, chunks, prepare, prepare_chunk
from settlement.prices_read import Sniffed, read_bytes, sniff
from settlement.prices_rules import NEM_REGIONS, NEM_TZ, financial_year
from settlement.prices_store import (
    market_thresholds,
    price_batch,
    store_mms_thresholds,
    store_price_rows,
)
from settlement.store import Store
from tariffs.errors import ConfigError, PriceFileError

__all__ = [
    "NEM_REGIONS",
    "NEM_TZ",
    "PRICE_FILE_PATTERNS",
    "financial_year",
    "ingest_price_files",
    "market_thresholds",
]

# any case: a .csv, a gzip (.gz, .csv.gz) or a zip
PRICE_FILE_PATTERNS = ("*.[cC][sS][vV]", "*.[gG][zZ]", "*.[zZ][iI][pP]")
MAX_ERRORS_REPORTED = 20
PARSE_THREADS = 2
PARSE_AHEAD = 2  # chunks parsed ahead of the store

Progress = Callable[[str, int, int | None], None]


def _check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"generic_timezone {name!r} is not an IANA time zone name (e.g. Etc/GMT-10, "
            "Europe/London)"
        ) from exc


def _error_lines(path: Path, bad: pl.DataFrame) -> list[str]:
    rows = bad.sort("source_line", nulls_last=True).head(MAX_ERRORS_REPORTED)
    out = [
        str(PriceFileError(path, r["reason"], r["source_line"], r["field"]))
        for r in rows.iter_rows(named=True)
    ]
    if bad.height > MAX_ERRORS_REPORTED:
        out.append(f"... and {bad.height - MAX_ERRORS_REPORTED:,} more (see the quarantine table)")
    return out


def _reject(
    store: Store, path: Path, result: FileResult, error: PriceFileError, content: str | None
) -> FileResult:
    """Register a refused file and quarantine it as a whole (with line and field when known)."""
    with store.transaction():
        result.file_id = register_file(store, path, "prices", result.sha256, None, content)
        bad = pl.DataFrame(
            {
                "source_line": [error.line],
                "record_type": ["file" if error.line is None else "header"],
                "field": [error.field],
                "reason": [error.reason],
                "raw": [None],
            },
            schema_overrides={"source_line": pl.Int32, "field": pl.Utf8, "raw": pl.Utf8},
        )
        quarantine_rows(store, result.file_id, str(path), bad)
        result.status = "rejected"
        result.rows_quarantined = 1
        result.errors = [str(error)]
        finish_file(store, result)
    return result


def _load(store: Store, prep: Prepared, result: FileResult, content: str | None) -> FileResult:
    """Register, load thresholds and prices, quarantine, finish: one transaction."""
    parsed, checked, batch, path = prep.parsed, prep.checked, prep.batch, prep.path
    assert parsed is not None and checked is not None and batch is not None
    with store.transaction():
        result.file_id = register_file(store, path, "prices", result.sha256, parsed.fmt, content)
        result.warnings = list(parsed.warnings)
        if parsed.thresholds is not None:
            added, present, notes = store_mms_thresholds(store, parsed.thresholds, path.name)
            result.rows_loaded += added
            result.rows_duplicate += present
            result.warnings += notes
            if added:  # this file's own thresholds apply to its prices
                checked = check(parsed, market_thresholds(store))
                batch = price_batch(checked.good, checked.repeats > 0)
        result.warnings += checked.warnings
        bad = checked.bad
        result.rows_quarantined = quarantine_rows(store, result.file_id, str(path), bad)
        loaded, duplicate = store_price_rows(store, result.file_id, batch)
        result.rows_loaded += loaded
        result.rows_duplicate += duplicate
        result.errors = _error_lines(path, bad)
        result.status = "partial" if result.rows_quarantined else "loaded"
        finish_file(store, result)
    return result


def _commit(store: Store, prep: Prepared, content: str | None, recheck: bool = True) -> FileResult:
    """Load a prepared file, unless its bytes or its content (``content``, the content key)
    are already in the store (``duplicate``).

    ``recheck=False`` skips the registry look-up when the caller knows both keys are new.
    """
    result = FileResult(path=str(prep.path), kind="prices", status="loaded", sha256=prep.sha256)
    previous = already_ingested(store, "prices", prep.sha256, content) if recheck else None
    if previous is not None:
        return _duplicate(result, previous)
    if prep.error is not None:
        return _reject(store, prep.path, result, prep.error, content)
    return _load(store, prep, result, content)


def _duplicate(result: FileResult, previous: int) -> FileResult:
    """``result`` as a duplicate of file ``previous`` (same bytes, or the same content)."""
    result.status = "duplicate"
    result.file_id = previous
    result.warnings.append(
        f"the same prices as file_id {previous} (its bytes, or its content in another container"
        " or with other line ends): nothing to load"
    )
    return result


def _content_key(path: Path) -> str | None:
    """The file's content key (:func:`content_sha256` of its decompressed content), or ``None``
    when it cannot be read (the file is then refused with the reason when it is parsed)."""
    try:
        return content_sha256(read_bytes(path))
    except PriceFileError:
        return None


def _sniff_all(files: list[Path]) -> list[tuple[Path, Sniffed | PriceFileError]]:
    """Sniff every file; threshold-only MMS archives first (stable), so they check the prices."""
    sniffed: list[tuple[Path, Sniffed | PriceFileError]] = []
    for path in files:
        try:
            sniffed.append((path, sniff(path)))
        except PriceFileError as exc:
            sniffed.append((path, exc))
    return sorted(
        sniffed, key=lambda item: not (isinstance(item[1], Sniffed) and item[1].is_thresholds_only)
    )


def _pipeline(
    store: Store,
    todo: list[Item],
    contents: dict[Path, str | None],
    timezone: str,
    regions: tuple[str, ...],
) -> Iterator[FileResult]:
    """Parse chunks ahead in worker threads while the store loads one file per transaction."""
    thresholds = market_thresholds(store)
    # the same bytes, or the same content, twice in one call: the later copy is looked up
    repeated = Counter(sha for _, _, sha in todo) + Counter(
        contents[path] for path, _, _ in todo if contents[path] is not None
    )
    with ThreadPoolExecutor(max_workers=PARSE_THREADS) as pool:
        pending: deque[Future[list[Prepared]]] = deque()
        work = iter(chunks(todo))
        while True:
            while len(pending) < PARSE_AHEAD and (chunk := next(work, None)) is not None:
                pending.append(pool.submit(prepare_chunk, chunk, thresholds, timezone, regions))
            if not pending:
                return
            for prep in pending.popleft().result():
                content = contents[prep.path]
                again = repeated[prep.sha256] > 1 or (content is not None and repeated[content] > 1)
                yield _commit(store, prep, content, recheck=again)


@contextmanager
def _small_statements(store: Store) -> Iterator[None]:
    """Run DuckDB single-threaded meanwhile: an ingest is many small statements, for which the
    thread pool costs more than it gives. The previous setting is restored."""
    found = store.con.execute("SELECT current_setting('threads')").fetchone()
    threads = int(found[0]) if found else 1
    store.con.execute("SET threads = 1")
    try:
        yield
    finally:
        store.con.execute(f"SET threads = {threads}")


def ingest_price_files(
    store: Store,
    paths: Iterable[str | Path],
    *,
    generic_timezone: str = NEM_TZ,
    progress: Progress | None = None,
    extra_regions: Collection[str] = (),
) -> IngestReport:
    """Ingest market price files (folders are searched recursively for PRICE_FILE_PATTERNS).

    Parameters
    ----------
    store : an open, writable store.
    paths : files or folders.
    generic_timezone : IANA zone of generic-CSV ``interval_end`` values written without a UTC
        offset (default ``Etc/GMT-10`` = NEM time, UTC+10). AEMO files are always NEM time.
    progress : optional ``(description, advance, total)`` callback, called once per file.
    extra_regions : region codes accepted in generic CSVs besides the NEM regions (e.g. ``GB``);
        their prices are not checked against the NEM floor and cap.

    Returns
    -------
    IngestReport : one :class:`FileResult` per file (``loaded``, ``partial``, ``rejected``,
        ``duplicate``); its ``exit_code`` is 3 when anything was quarantined.
    """
    _check_timezone(generic_timezone)
    regions = tuple(dict.fromkeys([*NEM_REGIONS, *extra_regions]))
    files = expand_paths(paths, PRICE_FILE_PATTERNS)
    report = IngestReport()

    def done(result: FileResult) -> None:
        report.files.append(result)
        if progress is not None:
            progress(f"prices {Path(result.path).name}", 1, len(files))

    todo: list[Item] = []
    contents: dict[Path, str | None] = {}
    for path, sniffed in _sniff_all(files):
        try:
            sha = sha256_file(path)
        except OSError as exc:  # missing or unreadable: nothing to register
            error = str(PriceFileError(path, f"cannot read the file: {exc}"))
            done(FileResult(str(path), "prices", "rejected", rows_quarantined=1, errors=[error]))
            continue
        # the same bytes first (no decompression: a re-ingest of the same files stays cheap)
        previous = already_ingested(store, "prices", sha)
        contents[path] = content = None if previous is not None else _content_key(path)
        if previous is None:
            previous = already_ingested(store, "prices", sha, content)
        if previous is not None:
            done(_duplicate(FileResult(str(path), "prices", "duplicate", sha), previous))
        elif isinstance(sniffed, Sniffed) and sniffed.is_thresholds_only:
            thresholds = market_thresholds(store)
            prep = prepare(path, sniffed, sha, thresholds, generic_timezone, regions)
            done(_commit(store, prep, content))
        else:
            todo.append((path, sniffed, sha))
    with _small_statements(store):
        for result in _pipeline(store, todo, contents, generic_timezone, regions):
            done(result)
    return report
