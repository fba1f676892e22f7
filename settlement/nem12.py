"""NEM12 interval meter ingestion: ``fairshare ingest meter FILE_OR_DIR...``.

:func:`ingest_meter_files` reads NEM12 files (.csv, or .zip with every member read), streams each
in chunks of whole lines through the vectorised parser in :mod:`settlement.nem12_parse`, and
appends the readings to ``meter_values`` (kWh, UTC; read through the ``meter_reads_raw`` and
``meter_reads`` views) in one transaction per file:

- the file registry makes the same bytes a no-op (``duplicate``);
- bad records go to ``quarantine`` (the good ones still load, status ``partial``); whole-file
  problems (empty, not NEM12, NEM13) reject the file with one quarantine row;
- every version is kept; a reading identical to a stored one (nmi, suffix, interval_start,
  interval_minutes, version_at, kwh, quality) is counted in ``rows_duplicate`` and not stored
  again;
- ``is_current`` marks the readings that no newer reading of the channel overlaps in time
  (``[interval_start, interval_start + interval_minutes)``), newer by (version_at, file_id,
  source_line): a 5-minute day revised at 30 minutes leaves only the 30-minute readings current,
  and the reverse; the current readings of a channel never overlap;
- each loaded record is also a day-array row of ``meter_days`` (:mod:`settlement.meter_days`),
  in the same transaction: new days and newer whole-day versions are written as parsed, and the
  days that took the exact path are rebuilt from their readings.

Format rules, the version_at fallback and the quarantine reasons: ``data/formats/nem12.md``.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from settlement.ingest_common import (
    FileResult,
    IngestReport,
    already_ingested,
    expand_paths,
    finish_file,
    quarantine_file,
    quarantine_rows,
    register_file,
    sha256_file,
)
from settlement.meter_days import refresh_day_keys
from settlement.nem12_parse import (
    ChunkResult,
    FileRejected,
    StreamState,
    parse_chunk,
)
from settlement.store import Store, in_market_days, market_day_no

Progress = Callable[[str, int, int | None], None]
PATTERNS = ("*.[cC][sS][vV]", "*.[zZ][iI][pP]")
CHUNK_BYTES = 2 << 20
"""Target text per parsed chunk; peak memory scales with it (two chunks are in flight)."""


def ingest_meter_files(
    store: Store,
    paths: Iterable[str | Path],
    *,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> IngestReport:
    """Ingest NEM12 files and folders (searched recursively for .csv/.zip) into ``store``.

    Parameters
    ----------
    store : open, migrated store.
    paths : files or folders.
    progress : optional ``(description, advance_bytes, total_bytes)`` callback, called after
        each chunk of a .csv (uncompressed bytes) or each member of a .zip (compressed bytes);
        ``total_bytes`` is the file size.
    chunk_bytes : target size of a parsed chunk of text [bytes]; memory scales with it.

    Returns
    -------
    IngestReport : one :class:`FileResult` per file (loaded, partial, rejected or duplicate).
    """
    report = IngestReport()
    for path in expand_paths(paths, PATTERNS):
        report.files.append(
            ingest_meter_file(store, path, progress=progress, chunk_bytes=chunk_bytes)
        )
    return report


def ingest_meter_file(
    store: Store,
    path: Path,
    *,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> FileResult:
    """Ingest one NEM12 file in one transaction; see :func:`ingest_meter_files`."""
    sha = sha256_file(path)
    result = FileResult(path=str(path), kind="meter", status="loaded", sha256=sha)
    existing = already_ingested(store, "meter", sha)
    if existing is not None:
        result.status = "duplicate"
        result.file_id = existing
        result.warnings.append(f"identical bytes already ingested as file_id {existing}")
        return result
    try:
        with store.transaction():
            result.file_id = register_file(store, path, "meter", sha, "NEM12")
            _load(store, path, result, progress, chunk_bytes)
            result.status = "partial" if result.rows_quarantined else "loaded"
            finish_file(store, result)
    except FileRejected as exc:
        result = FileResult(path=str(path), kind="meter", status="rejected", sha256=sha)
        with store.transaction():
            result.file_id = register_file(store, path, "meter", sha, "NEM12")
            quarantine_file(store, result.file_id, str(path), exc.reason)
            result.rows_quarantined = 1
            result.errors.append(exc.reason)
            finish_file(store, result)
    return result


def _streams(path: Path, stack: ExitStack) -> Iterator[tuple[str, IO[bytes], int]]:
    """(name, binary stream, size) of the file, or of each member when it is a zip archive."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04" or magic == b"PK\x05\x06":
        try:
            zf = stack.enter_context(zipfile.ZipFile(path))
        except zipfile.BadZipFile as exc:
            raise FileRejected(f"not a readable zip archive: {exc}") from exc
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise FileRejected("zip archive holds no files")
        for m in members:
            yield f"{path}!{m.filename}", stack.enter_context(zf.open(m)), m.compress_size
    else:
        yield str(path), stack.enter_context(path.open("rb")), path.stat().st_size


def _chunks(stream: IO[bytes], chunk_bytes: int) -> Iterator[tuple[str, int, int]]:
    """(text, first line number, bytes consumed) of chunks that never split a 300 from its 400s.

    A chunk ends just before the last line starting with ``200,`` or ``300,`` in the buffer; the
    rest is carried into the next chunk.
    """
    carry = b""
    line = 1
    while True:
        block = stream.read(chunk_bytes)
        buf = carry + block
        if not block:
            if buf:
                yield _decode(buf), line, len(buf)
            return
        cut = max(buf.rfind(b"\n300,"), buf.rfind(b"\n200,"))
        if cut <= 0:
            carry = buf
            continue
        head, carry = buf[: cut + 1], buf[cut + 1 :]
        yield _decode(head), line, len(head)
        line += head.count(b"\n")


def _shifted(
    chunks: Iterator[tuple[str, int, int]], offset: int, last_line: list[int]
) -> Iterator[tuple[str, int, int]]:
    """``chunks`` with their line numbers moved on by ``offset`` (the lines of the archive's
    earlier members); ``last_line[0]`` follows the last line number given out."""
    for text, first, n_bytes in chunks:
        last_line[0] = offset + first + text.count("\n")
        yield text, offset + first, n_bytes


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _load(
    store: Store,
    path: Path,
    result: FileResult,
    progress: Progress | None,
    chunk_bytes: int,
) -> None:
    """Parse every stream of the file and load it; raise :class:`FileRejected` on whole-file
    problems (the caller's transaction then rolls back)."""
    assert result.file_id is not None
    size = path.stat().st_size
    if size == 0:
        raise FileRejected("file is empty (0 bytes)")
    loader = _Loader(store, result.file_id)
    n_300 = 0
    with ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        stack.enter_context(_duckdb_threads(store, 1))
        # a zip's lines are numbered through its members in archive order (the order they are
        # loaded in, so the later line wins in both meter_reads and meter_reads_as_of); its
        # quarantine rows name the member and the line within it
        last_line = [0]
        for name, stream, member_size in _streams(path, stack):
            state = StreamState()
            encode = loader.encoder.encode
            offset = last_line[0]
            chunks = _shifted(_chunks(stream, chunk_bytes), offset, last_line)
            try:
                for enc, n_bytes in _parsed(pool, chunks, state, encode):
                    bad = enc.chunk.bad.with_columns(pl.col("source_line") - offset)
                    result.rows_quarantined += quarantine_rows(store, result.file_id, name, bad)
                    loaded, dup = loader.load(enc)
                    result.rows_loaded += loaded
                    result.rows_duplicate += dup
                    if progress is not None:
                        progress(path.name, n_bytes if name == str(path) else 0, size)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                # a zip member's data fails its CRC or does not inflate: the whole file is
                # refused (its transaction rolls back) and the caller's other files still load
                raise FileRejected(f"{name}: unreadable zip member data: {exc}") from exc
            if progress is not None and name != str(path):
                progress(path.name, member_size, size)
            n_300 += state.n_300
            result.warnings.extend(_stream_warnings(name, path, state))
    if n_300 == 0:
        raise FileRejected(
            "not a NEM12 file with interval data: no 300 records found"
            + (
                ""
                if result.rows_quarantined == 0
                else f" ({result.rows_quarantined} lines unreadable)"
            )
        )
    loader.finish()
    conflicts = loader.conflicts()
    if conflicts:
        result.warnings.append(
            f"{conflicts} readings appear more than once in this file with the same version "
            "(UpdateDateTime) but different values; the later line is current"
        )


def _parsed(
    pool: ThreadPoolExecutor,
    chunks: Iterator[tuple[str, int, int]],
    state: StreamState,
    encode: Callable[[ChunkResult], _Encoded],
) -> Iterator[tuple[_Encoded, int]]:
    """Parse and encode chunks one ahead on a worker thread, so that work (polars) overlaps
    loading (DuckDB); both release the GIL. Chunks are handled strictly in order (``state`` and
    the encoder's dictionaries carry over)."""

    def work(text: str, first_line: int) -> _Encoded:
        return encode(parse_chunk(text, first_line, state)[0])

    pending: Future[_Encoded] | None = None
    pending_bytes = 0
    for text, first_line, n_bytes in chunks:
        nxt = pool.submit(work, text, first_line)
        if pending is not None:
            yield pending.result(), pending_bytes
        pending, pending_bytes = nxt, n_bytes
    if pending is not None:
        yield pending.result(), pending_bytes


@contextmanager
def _duckdb_threads(store: Store, n: int) -> Iterator[None]:
    """Run DuckDB single-threaded while the parser thread has the other core; restore after.

    The inserts are append-bound; extra DuckDB threads only spin against the parser."""
    row = store.con.execute("SELECT current_setting('threads')").fetchone()
    before = int(row[0]) if row else None
    store.con.execute(f"SET threads = {int(n)}")
    try:
        yield
    finally:
        if before is not None:
            store.con.execute(f"SET threads = {before}")


def _stream_warnings(name: str, path: Path, state: StreamState) -> list[str]:
    where = "" if name == str(path) else f"{Path(name.split('!', 1)[1]).name}: "
    out = []
    if state.first_record not in (None, "100"):
        out.append(
            f"{where}no 100 header record (first record is {state.first_record!r}); assumed NEM12"
        )
    if state.n_100 > 1 or state.n_900 > 1:
        out.append(
            f"{where}{state.n_100} header (100) and {state.n_900} end (900) records: "
            "concatenated files, read as one"
        )
    if state.n_900 == 0:
        out.append(f"{where}no 900 end-of-data record (file may be truncated)")
    for (nmi, suffix, uom), n in sorted(state.skipped.items()):
        out.append(
            f"{where}skipped non-energy channel {nmi} {suffix} (unit {uom!r}): "
            f"{n} 300 records not loaded (only Wh/kWh/MWh channels are stored)"
        )
    return out


_FLAG_KEY = ["quality", "method", "reason"]


@dataclass
class _Encoded:
    """One parsed chunk in storage form (see :class:`_Encoder`)."""

    chunk: ChunkResult
    records: pl.DataFrame  # chunk.records + channel_id, flag_id
    rows: pl.DataFrame  # meter_values columns, but file_id and is_current
    new_channels: pl.DataFrame  # dictionary rows to add before the readings
    new_flags: pl.DataFrame
    in_file: pl.Series  # source_line of records that collide within this file
    days: pa.Table  # meter_days columns of each record, but file_id and is_current


class _Dictionary:
    """An id per distinct key row (nulls equal): the stored ones, then new ones in order."""

    def __init__(
        self, known: pl.DataFrame, id_col: str, dtype: type[pl.Int32] | type[pl.Int16], limit: int
    ) -> None:
        self.known, self.id_col, self.dtype, self.limit = known, id_col, dtype, limit
        top = known[id_col].max() if known.height else None
        self.top = int(top) if isinstance(top, int) else 0

    def ids(self, keys: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame]:
        """Ids of ``keys`` rows and the dictionary rows added for them (``id_col`` first). A row
        whose first key is null (a reading without its own flags) gets a null id."""
        cols = keys.columns
        new = (
            keys.unique(maintain_order=True)
            .join(self.known, on=cols, how="anti", nulls_equal=True)
            .drop_nulls(cols[0])
        )
        added = new.with_columns(
            pl.int_range(self.top + 1, self.top + 1 + new.height, dtype=self.dtype).alias(
                self.id_col
            )
        )
        if new.height:
            if self.top + new.height > self.limit:
                raise ValueError(f"more than {self.limit:,} distinct {cols} in meter data")
            self.top += new.height
            self.known = pl.concat([self.known, added], how="vertical_relaxed")
        ids = keys.join(self.known, on=cols, how="left", nulls_equal=True, maintain_order="left")
        return ids[self.id_col], added.select(self.id_col, *cols)


class _Encoder:
    """Turns parsed chunks into ``meter_values`` rows, on the parser's worker thread.

    It owns the channel and flag dictionaries for the file (stored ids first, new ids assigned
    in chunk order; the loader inserts each chunk's new entries before its readings) and finds
    the records that collide with another record of the same file.
    """

    def __init__(self, channels: pl.DataFrame, flags: pl.DataFrame) -> None:
        self.channels = _Dictionary(channels, "channel_id", pl.Int32, 2**31 - 1)
        self.flags = _Dictionary(flags, "flag_id", pl.Int16, 2**15 - 1)
        self.seen: pl.DataFrame | None = None  # (channel_id, day_no) of earlier chunks

    def encode(self, chunk: ChunkResult) -> _Encoded:
        """Storage form of one chunk."""
        values = chunk.values
        channel_id, new_channels = self.channels.ids(chunk.records.select("nmi", "suffix"))
        flag_id, new_flags = self.flags.ids(chunk.records.select(_FLAG_KEY))
        records = chunk.records.with_columns(channel_id=channel_id, flag_id=flag_id)
        rec = values["rec"]
        per_reading = records["flag_id"].gather(rec)
        if values["flag_quality"].null_count() < values.height:  # V days (400 records)
            own, more = self.flags.ids(
                values.select(
                    pl.col("flag_quality").alias("quality"),
                    pl.col("flag_method").alias("method"),
                    pl.col("flag_reason").alias("reason"),
                )
            )
            new_flags = pl.concat([new_flags, more])
            per_reading = pl.select(
                pl.when(values["flag_quality"].is_not_null()).then(own).otherwise(per_reading)
            ).to_series()
        rows = pl.DataFrame(
            {
                "channel_id": records["channel_id"].gather(rec),
                "interval_start": values["interval_start"],
                "interval_minutes": records["interval_minutes"].gather(rec),
                "kwh": values["kwh"],
                "flag_id": per_reading,
                "version_at": records["version_at"].gather(rec),
                "source_line": records["source_line"].gather(rec),
            }
        )
        days = _day_rows(records, values["kwh"], per_reading, values["rec"])
        key = ["channel_id", "day_no"]
        keys = records.select(key)
        in_file = [records.filter(pl.len().over(key) > 1)["source_line"]]
        if self.seen is not None:
            in_file.append(records.join(self.seen, on=key, how="semi")["source_line"])
            self.seen = pl.concat([self.seen, keys]).unique()
        else:
            self.seen = keys.unique()
        return _Encoded(
            chunk, records, rows, new_channels, new_flags, pl.concat(in_file).unique(), days
        )


def _day_rows(
    records: pl.DataFrame, kwh: pl.Series, flag_id: pl.Series, rec: pl.Series
) -> pa.Table:
    """Each record's readings as one ``meter_days`` row (see :mod:`settlement.meter_days`):
    the kWh as a list in interval order (a record's readings are contiguous and in order in
    ``values``), the flag of its first reading, and a flag per slot only where they differ
    (V days). Arrow lists over the flat values: no copy per reading."""
    if records.height == 0:
        return pa.table({"source_line": pa.array([], pa.int32())})
    counts = np.bincount(rec.to_numpy(), minlength=records.height)
    offsets = np.zeros(records.height + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    flags = flag_id.to_numpy()
    starts = offsets[:-1]
    mixed = np.minimum.reduceat(flags, starts) != np.maximum.reduceat(flags, starts)
    flag_lists = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(flags, pa.int16()), mask=pa.array(~mixed)
    )
    return pa.table(
        {
            "channel_id": records["channel_id"].to_arrow(),
            "market_day": pa.array(records["day_no"].to_numpy(), pa.int32()).cast(pa.date32()),
            "interval_minutes": records["interval_minutes"].to_arrow(),
            "kwh": pa.ListArray.from_arrays(pa.array(offsets), pa.array(kwh.to_numpy())),
            "flag_id": pa.array(flags[starts], pa.int16()),
            "flags": flag_lists,
            "version_at": records["version_at"].to_arrow(),
            "source_line": records["source_line"].to_arrow(),
        }
    )


class _Loader:
    """Appends one file's readings chunk by chunk, keeping ``is_current`` exact as it goes.

    A reading is stored as numbers (see :mod:`settlement.schema_meter`); :class:`_Encoder`
    prepares each chunk on the parser's thread.

    Fast path: a 300 record whose (channel, market day) appears nowhere else (not in the store,
    not elsewhere in the file) cannot duplicate or supersede anything, so its readings are
    inserted as current directly. A record newer than every stored version of its day, and alone
    in the file, supersedes the whole stored day (any interval length) and goes in as current.
    The other ("colliding") records take the exact path: drop readings identical to a stored
    version (duplicates), mark stored current rows with the same start superseded by a
    newer-or-equal version (the new row has the larger (file_id, source_line)), insert the rest
    with ``is_current`` where they win, then, for days whose current readings now have two
    interval lengths, clear each current reading that a newer current one overlaps.
    """

    def __init__(self, store: Store, file_id: int) -> None:
        self.con = store.con
        self.file_id = file_id
        self.n_conflicts = 0
        self.exact_days: list[pl.DataFrame] = []  # (channel_id, day_no) of exact-path records
        self.encoder = _Encoder(
            self.con.execute("SELECT nmi, suffix, channel_id FROM meter_channels").pl(),
            self.con.execute("SELECT quality, method, reason, flag_id FROM meter_flags").pl(),
        )

    def load(self, enc: _Encoded) -> tuple[int, int]:
        """Insert one encoded chunk; return (rows inserted, rows duplicate)."""
        if enc.new_channels.height:
            _dict = enc.new_channels  # scanned by name (fixed SQL)
            self.con.execute("INSERT INTO meter_channels SELECT * FROM _dict")
        if enc.new_flags.height:
            _dict = enc.new_flags
            self.con.execute("INSERT INTO meter_flags SELECT * FROM _dict")
        rows = enc.rows
        if rows.height == 0:
            return 0, 0
        stored = self._stored_collisions(enc.records)
        if enc.in_file.len() == 0 and stored.height == 0:
            self._insert_current(rows)
            self._insert_days(enc.days)
            return rows.height, 0
        # a record newer than every stored version of its (channel, day), and alone in this
        # file, can neither duplicate a stored reading nor lose to one: it supersedes the stored
        # current readings it covers and goes in as current (how revised days usually arrive)
        newer = (
            enc.records.join(stored, on="source_line")
            .filter(pl.col("version_at") > pl.col("stored_max"))
            .filter(~pl.col("source_line").is_in(enc.in_file.implode()))["source_line"]
        )
        exact = pl.concat(
            [
                enc.in_file,
                stored["source_line"].filter(~stored["source_line"].is_in(newer.implode())),
            ]
        ).unique()
        line = pl.col("source_line")
        fast = rows.filter(~line.is_in(exact.implode()) & ~line.is_in(newer.implode()))
        if fast.height:
            self._insert_current(fast)
            self._insert_days(enc.days, exact, newer, keep=False)
        revised = rows.filter(line.is_in(newer.implode()))
        if revised.height:
            self._supersede_newer(enc.records.filter(line.is_in(newer.implode())))
            self._insert_current(revised)
            self._insert_days(enc.days, newer, keep=True)
        staged, dup = 0, 0
        if exact.len():
            staged, dup = self._load_exact(rows.filter(line.is_in(exact.implode())))
            self.exact_days.append(
                enc.records.filter(line.is_in(exact.implode())).select("channel_id", "day_no")
            )
        return fast.height + revised.height + staged, dup

    def _supersede_newer(self, records: pl.DataFrame) -> None:
        """Mark every stored current reading of ``records``' (channel, market day) superseded.

        Each record is newer than every stored version of its day and covers the whole day, so
        it overlaps (and beats) every stored reading of the day whatever their interval length:
        a day first sent at 5 minutes and revised at 30 loses all 288 readings, not only the 48
        that start on a half hour."""
        lo, hi = records["day_no"].min(), records["day_no"].max()
        ch_lo, ch_hi = records["channel_id"].min(), records["channel_id"].max()
        _rec = records.select("channel_id", "day_no")  # scanned by name below
        self.con.execute(_SUPERSEDE_NEWER_SQL, [lo, hi, ch_lo, ch_hi])
        self.con.execute(_SUPERSEDE_DAYS_SQL, [lo, hi, ch_lo, ch_hi])

    def _insert_days(self, days: pa.Table, *lines: pl.Series, keep: bool = True) -> None:
        """Append the day rows of this chunk's records as current: those whose source line is
        in ``lines`` (``keep``), or not in any of them."""
        if lines:
            hit = pc.is_in(days["source_line"], pa.concat_arrays([x.to_arrow() for x in lines]))
            days = days.filter(hit if keep else pc.invert(hit))
        if days.num_rows == 0:
            return
        _days = days  # scanned by name (fixed SQL)
        self.con.execute(
            "INSERT INTO meter_days SELECT channel_id, market_day, interval_minutes, kwh,"
            " flag_id, flags, version_at, ?, source_line, true, list_count(kwh),"
            " coalesce(list_sum(kwh), 0.0) FROM _days",
            [self.file_id],
        )

    def finish(self) -> None:
        """Rebuild the day rows of the exact-path days from their readings (their duplicates and
        per-reading versions were settled there, see :func:`settlement.meter_days.refresh_days`)."""
        if self.exact_days:
            refresh_day_keys(self.con, pl.concat(self.exact_days).unique())

    def _insert_current(self, rows: pl.DataFrame) -> None:
        # DuckDB reads the local frame by name (replacement scan); con.register() would keep
        # each registered chunk's Arrow buffers alive until the connection closes.
        _chunk = rows  # scanned by name in the SQL below
        self.con.execute(
            "INSERT INTO meter_values SELECT channel_id, interval_start, interval_minutes, kwh,"
            " flag_id, version_at, ?, source_line, true FROM _chunk",
            [self.file_id],
        )

    def _stored_collisions(self, records: pl.DataFrame) -> pl.DataFrame:
        """Records sharing (channel, market day) with a reading of an earlier file, with the
        newest stored version of that day (``source_line``, ``stored_max``); ``file_id < this``
        lets DuckDB skip this file's own row groups by their min/max statistics."""
        lo, hi = records["day_no"].min(), records["day_no"].max()
        ch_lo, ch_hi = records["channel_id"].min(), records["channel_id"].max()
        _rec = records.select("source_line", "channel_id", "day_no")  # scanned by name below
        stored = self.con.execute(_COLLIDE_SQL, [lo, hi, ch_lo, ch_hi, self.file_id]).pl()
        return stored.with_columns(pl.col("source_line").cast(pl.Int32))

    def _load_exact(self, rows: pl.DataFrame) -> tuple[int, int]:
        """The exact path for ``rows`` (numbers only: text would make every temp table slow)."""
        lo, hi = rows["interval_start"].min(), rows["interval_start"].max()
        # the channel range lets DuckDB skip row groups by their min/max (a file sorted by NMI
        # spans the whole year in each chunk, so the time range alone prunes nothing)
        ch_lo, ch_hi = rows["channel_id"].min(), rows["channel_id"].max()
        con = self.con
        _chunk = rows  # scanned by name in _STAGE_SQL
        con.execute(_STAGE_SQL, [lo, hi, ch_lo, ch_hi])
        row = con.execute("SELECT count(*) FROM _new").fetchone()
        staged = int(row[0]) if row else 0
        if staged:
            row = con.execute(_CONFLICT_SQL, [self.file_id, lo, hi, ch_lo, ch_hi]).fetchone()
            self.n_conflicts += int(row[0]) if row else 0
            con.execute(_SUPERSEDE_SQL, [lo, hi, ch_lo, ch_hi])
            con.execute(_INSERT_SQL, [self.file_id, lo, hi, ch_lo, ch_hi])
            # readings of another interval length overlap without sharing a start: settle them
            # per market day (whole days, as a day's readings may start before lo or after hi),
            # when the chunk has two lengths or the stored current readings another one
            days = [_day_no(lo), _day_no(hi), ch_lo, ch_hi]
            lengths = rows["interval_minutes"].unique()
            if lengths.len() > 1 or _fetch_bool(con, _OTHER_LENGTH_SQL, [*days, lengths[0]]):
                con.execute(_OVERLAP_SQL, days)
        con.execute("DROP TABLE _new")
        return staged, rows.height - staged

    def conflicts(self) -> int:
        """Readings of this file sharing (key, version_at) with another reading of this file."""
        return self.n_conflicts


_COLLIDE_SQL = f"""
SELECT k.source_line, max(r.version_at) AS stored_max
FROM _rec k
JOIN (SELECT channel_id, version_at,
             {market_day_no("interval_start")} AS day_no
      FROM meter_values
      WHERE {in_market_days("interval_start")}
        AND channel_id BETWEEN $3 AND $4 AND file_id < $5) r
  ON r.channel_id = k.channel_id AND r.day_no = k.day_no
GROUP BY k.source_line
"""

# whole market days: one _rec row per (channel, day), joined on the reading's market day number
_SUPERSEDE_NEWER_SQL = f"""
UPDATE meter_values r SET is_current = false
FROM _rec n
WHERE r.is_current
  AND {in_market_days("r.interval_start")}
  AND r.channel_id BETWEEN $3 AND $4 AND r.channel_id = n.channel_id
  AND {market_day_no("r.interval_start")} = n.day_no
"""

_SUPERSEDE_DAYS_SQL = """
UPDATE meter_days d SET is_current = false
FROM _rec n
WHERE d.is_current
  AND d.market_day BETWEEN DATE '1970-01-01' + $1::INTEGER AND DATE '1970-01-01' + $2::INTEGER
  AND d.channel_id BETWEEN $3 AND $4 AND d.channel_id = n.channel_id
  AND d.market_day = DATE '1970-01-01' + n.day_no
"""

_CONFLICT_SQL = """
SELECT count(*) FROM (
  SELECT 1 FROM (
    SELECT channel_id, interval_start, version_at FROM _new
    UNION ALL
    SELECT r.channel_id, r.interval_start, r.version_at
    FROM meter_values r SEMI JOIN _new n
      ON r.channel_id = n.channel_id AND r.interval_start = n.interval_start
    WHERE r.file_id = $1 AND r.interval_start BETWEEN $2 AND $3 AND r.channel_id BETWEEN $4 AND $5
  ) u GROUP BY channel_id, interval_start, version_at HAVING count(*) > 1
)
"""

# Readings of the chunk that are not duplicates: not identical (channel, interval start and
# length, version, kWh, quality) to an earlier reading of the chunk (the first line is kept) nor to
# a stored one; ``win`` marks the newest version of each (channel, interval_start) among them.
_STAGE_SQL = """
CREATE OR REPLACE TEMP TABLE _new AS
WITH c AS (  -- a GROUP BY: a window over these keys is ~50x slower (DuckDB 1.5)
    SELECT c.channel_id, c.interval_start, c.interval_minutes, c.version_at, c.kwh, f.quality,
           min(c.source_line) AS source_line,
           arg_min(c.flag_id, c.source_line) AS flag_id
    FROM _chunk c JOIN meter_flags f USING (flag_id)
    GROUP BY c.channel_id, c.interval_start, c.interval_minutes, c.version_at, c.kwh, f.quality
), stored AS (
    SELECT r.channel_id, r.interval_start, r.interval_minutes, r.version_at, r.kwh, f.quality
    FROM meter_values r JOIN meter_flags f USING (flag_id)
    WHERE r.interval_start BETWEEN $1 AND $2 AND r.channel_id BETWEEN $3 AND $4
)
SELECT c.* EXCLUDE (quality),
       row_number() OVER (PARTITION BY c.channel_id, c.interval_start
                          ORDER BY c.version_at DESC, c.source_line DESC) = 1 AS win
FROM c
ANTI JOIN stored r
  ON r.channel_id = c.channel_id AND r.interval_start = c.interval_start
 AND r.interval_minutes = c.interval_minutes
 AND r.version_at = c.version_at AND r.kwh = c.kwh AND r.quality = c.quality
"""

_SUPERSEDE_SQL = """
UPDATE meter_values r SET is_current = false
FROM _new n
WHERE n.win AND r.is_current AND r.interval_start BETWEEN $1 AND $2
  AND r.channel_id BETWEEN $3 AND $4 AND r.channel_id = n.channel_id AND r.interval_start = n.interval_start
  AND r.version_at <= n.version_at
"""

_OTHER_LENGTH_SQL = f"""
SELECT EXISTS (
    SELECT 1 FROM meter_values
    WHERE is_current
      AND {in_market_days("interval_start")}
      AND channel_id BETWEEN $3 AND $4 AND interval_minutes <> $5
)
"""

# The exact path above compares readings by (channel, interval_start) only. Where a market day of
# the chunk now has current readings of two interval lengths (a 5-minute day revised at 30
# minutes, or the reverse, or a late older version of the other length filling starts the newer
# one does not have), current readings overlap without sharing a start: each current reading
# overlapped by a newer current one, by (version_at, file_id, source_line), stops being current.
# Run only when _OTHER_LENGTH_SQL (an EXISTS probe, ~0.03 s for 5 M back-dated readings) finds
# another length in the chunk's days and channel range, and then pairs only the mixed days.
_OVERLAP_SQL = f"""
UPDATE meter_values r SET is_current = false
FROM (
    WITH days AS (
        SELECT DISTINCT channel_id,
               {market_day_no("interval_start")} AS day_no
        FROM _new
    ), cur AS (
        SELECT v.channel_id, v.interval_start, v.interval_minutes, v.version_at, v.file_id,
               v.source_line, {market_day_no("v.interval_start")} AS day_no
        FROM meter_values v
        WHERE v.is_current
          AND {in_market_days("v.interval_start")}
          AND v.channel_id BETWEEN $3 AND $4
    ), mixed AS (
        SELECT channel_id, day_no FROM cur SEMI JOIN days USING (channel_id, day_no)
        GROUP BY channel_id, day_no HAVING min(interval_minutes) < max(interval_minutes)
    ), m AS (
        SELECT * FROM cur SEMI JOIN mixed USING (channel_id, day_no)
    )
    SELECT DISTINCT a.channel_id, a.interval_start
    FROM m a JOIN m b
      ON a.channel_id = b.channel_id AND a.day_no = b.day_no
     AND a.interval_start < b.interval_start + INTERVAL 1 MINUTE * b.interval_minutes
     AND b.interval_start < a.interval_start + INTERVAL 1 MINUTE * a.interval_minutes
     AND (b.version_at > a.version_at
          OR (b.version_at = a.version_at
              AND (b.file_id > a.file_id
                   OR (b.file_id = a.file_id AND b.source_line > a.source_line))))
) x
WHERE r.is_current
  AND {in_market_days("r.interval_start")}
  AND r.channel_id BETWEEN $3 AND $4
  AND r.channel_id = x.channel_id AND r.interval_start = x.interval_start
"""

_INSERT_SQL = """
INSERT INTO meter_values
SELECT n.channel_id, n.interval_start, n.interval_minutes, n.kwh, n.flag_id, n.version_at, $1,
       n.source_line,
       n.win AND NOT EXISTS (
           SELECT 1 FROM meter_values r
           WHERE r.is_current AND r.interval_start BETWEEN $2 AND $3
             AND r.channel_id BETWEEN $4 AND $5 AND r.channel_id = n.channel_id AND r.interval_start = n.interval_start)
FROM _new n
"""


def _fetch_bool(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> bool:
    row = con.execute(sql, params).fetchone()
    return bool(row[0]) if row else False


def _day_no(t: object) -> int:
    """Market day (UTC+10) of a UTC instant, as days since 1970-01-01."""
    assert isinstance(t, datetime) and t.tzinfo is not None
    return int((t.timestamp() + 36_000) // 86_400)


def parse_nem12_text(text: str) -> tuple[pl.DataFrame, pl.DataFrame, StreamState]:
    """Parse a whole NEM12 text in memory (tests, tools): (reads, quarantine rows, state)."""
    state = StreamState()
    chunk, _ = parse_chunk(text, 1, state)
    return chunk.reads(), chunk.bad, state
