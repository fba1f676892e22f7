"""Reading, parsing and checking price files off the store, in chunks, in worker threads.

CSV files of one format and header are parsed together as one polars frame (column ``_file``
numbers them; every window is per file), which spreads the fixed cost of a polars plan over many
small files; MMS archives are parsed one by one. Results come back per file, in input order, for
the store to load one file per transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from settlement.prices_mms import parse_mms
from settlement.prices_parse import Parsed, parse_lines
from settlement.prices_read import (
    Sniffed,
    decode,
    first_line,
    lines_frame,
    read_bytes,
    split_header,
)
from settlement.prices_rules import (
    ROW_COLUMNS,
    Checked,
    empty_quarantine,
    finish_files,
)
from settlement.prices_store import PriceBatch, price_batch
from tariffs.errors import PriceFileError

Item = tuple[Path, Sniffed | PriceFileError, str]
"""A file to ingest: path, what sniffing found (or its error), SHA-256 of its bytes."""

CHUNK_FILES = 32
CHUNK_BYTES = 32 << 20  # on-disk bytes per chunk (bounds memory for big generic files)


@dataclass
class Prepared:
    """A file read, parsed and checked off the store: ready to load in one transaction."""

    path: Path
    sha256: str
    parsed: Parsed | None = None
    checked: Checked | None = None
    batch: PriceBatch | None = None
    error: PriceFileError | None = None


def check(parsed: Parsed, thresholds: pl.DataFrame) -> Checked:
    """The rule checks of one parsed file."""
    checked = finish_files(
        parsed.candidates,
        parsed.bad,
        thresholds,
        grid_tz=parsed.grid_tz,
        end_field=parsed.end_field,
        price_field=parsed.price_field,
    )
    return checked.get(0, _empty_checked())


def _empty_checked() -> Checked:
    schema = {"region": pl.Utf8, "interval_minutes": pl.Int16, "price_per_mwh": pl.Float64}
    rows = pl.DataFrame(
        schema={
            c: schema.get(c, pl.Int32 if c == "source_line" else pl.Datetime("us", "UTC"))
            for c in ROW_COLUMNS
        }
    )
    return Checked(rows, empty_quarantine())


def parse_file(sniffed: Sniffed, timezone: str, regions: tuple[str, ...]) -> Parsed:
    """Read and parse the whole of a sniffed file (no store access)."""
    text = decode(read_bytes(sniffed.path))
    lines = lines_frame(text)
    if sniffed.fmt == "aemo-mms":
        return parse_mms(sniffed.path, lines)
    header_line, header_text = first_line(text)
    return parse_lines(
        sniffed.fmt, lines, header_line, split_header(header_text), timezone, regions
    )


def _ready(path: Path, sha256: str, parsed: Parsed, checked: Checked) -> Prepared:
    return Prepared(path, sha256, parsed, checked, price_batch(checked.good, checked.repeats > 0))


def prepare(
    path: Path,
    sniffed: Sniffed | PriceFileError,
    sha256: str,
    thresholds: pl.DataFrame,
    timezone: str,
    regions: tuple[str, ...],
) -> Prepared:
    """Parse and check one file on its own."""
    if isinstance(sniffed, PriceFileError):
        return Prepared(path, sha256, error=sniffed)
    try:
        parsed = parse_file(sniffed, timezone, regions)
    except PriceFileError as exc:
        return Prepared(path, sha256, error=exc)
    return _ready(path, sha256, parsed, check(parsed, thresholds))


def chunks(items: list[Item]) -> Iterator[list[Item]]:
    """Consecutive runs of at most CHUNK_FILES files and about CHUNK_BYTES bytes."""
    chunk: list[Item] = []
    size = 0
    for item in items:
        try:
            bytes_ = item[0].stat().st_size
        except OSError:
            bytes_ = 0
        if chunk and (len(chunk) >= CHUNK_FILES or size + bytes_ > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += bytes_
    if chunk:
        yield chunk


def prepare_chunk(
    items: list[Item], thresholds: pl.DataFrame, timezone: str, regions: tuple[str, ...]
) -> list[Prepared]:
    """Prepare a chunk; CSV files sharing format and header are parsed and checked together."""
    out: dict[int, Prepared] = {}
    groups: dict[tuple[str, int, tuple[str, ...]], list[tuple[int, pl.DataFrame]]] = {}
    for i, (path, sniffed, sha) in enumerate(items):
        if isinstance(sniffed, PriceFileError) or sniffed.fmt == "aemo-mms":
            out[i] = prepare(path, sniffed, sha, thresholds, timezone, regions)
            continue
        try:
            text = decode(read_bytes(path))
        except PriceFileError as exc:
            out[i] = Prepared(path, sha, error=exc)
            continue
        number, text_of_header = first_line(text)
        key = (sniffed.fmt, number, tuple(split_header(text_of_header)))
        groups.setdefault(key, []).append((i, lines_frame(text, i)))
    for (fmt, header_line, names), members in groups.items():
        lines = pl.concat([frame for _, frame in members])
        parsed = parse_lines(fmt, lines, header_line, list(names), timezone, regions)
        checked = finish_files(
            parsed.candidates,
            parsed.bad,
            thresholds,
            grid_tz=parsed.grid_tz,
            end_field=parsed.end_field,
            price_field=parsed.price_field,
        )
        for i, _ in members:
            path, _, sha = items[i]
            one = Parsed(fmt, parsed.candidates.clear(), parsed.bad.clear(), list(parsed.warnings))
            out[i] = _ready(path, sha, one, checked.get(i, _empty_checked()))
    return [out[i] for i in range(len(items))]
