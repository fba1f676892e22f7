"""Reading a price file's bytes and recognising its format from its content.

A price file may be plain text, gzip or a zip holding exactly one file; the container is found from
the magic bytes, not the name. The format is found from the first non-blank line:

- ``C,...`` followed by ``I,...`` column lists: an AEMO MMS file in the C/I/D layout;
- a header holding ``REGION, SETTLEMENTDATE, TOTALDEMAND, RRP``: AEMO PRICE_AND_DEMAND;
- a header of ``region, interval_end, price_per_mwh [, interval_minutes]``: the generic CSV.

Lines become a polars frame (one row per physical line, 1-based ``source_line``) with one
vectorised split, so every later check can name the line it refers to.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from tariffs.errors import PriceFileError

Format = Literal["aemo-price-and-demand", "aemo-mms", "generic-csv"]

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
SNIFF_BYTES = 1 << 16

PRICE_AND_DEMAND_COLUMNS = ("REGION", "SETTLEMENTDATE", "TOTALDEMAND", "RRP", "PERIODTYPE")
GENERIC_REQUIRED = ("region", "interval_end", "price_per_mwh")
GENERIC_OPTIONAL = ("interval_minutes",)
MMS_THRESHOLDS_TABLE = "MARKET_CONFIG.MARKET_PRICE_THRESHOLDS"

READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile)


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes of a file say: its format and, for MMS, the tables it holds."""

    path: Path
    fmt: Format
    tables: tuple[str, ...] = ()

    @property
    def is_thresholds_only(self) -> bool:
        """True for an MMS file holding only MARKET_PRICE_THRESHOLDS (ingested first)."""
        return self.fmt == "aemo-mms" and set(self.tables) == {MMS_THRESHOLDS_TABLE}


def _read_zip_member(path: Path, limit: int | None) -> bytes:
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            names = ", ".join(m.filename for m in members[:5]) or "none"
            raise PriceFileError(
                path, f"zip archive holds {len(members)} files ({names}); expected exactly one CSV"
            )
        with archive.open(members[0]) as member:
            return member.read() if limit is None else member.read(limit)


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The decompressed content (or its first ``limit`` bytes) of a plain, gzip or zip file.

    The container is recognised from the magic bytes. Raises :class:`PriceFileError` when the
    file cannot be read or decompressed.
    """
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic.startswith(ZIP_MAGIC):
            return _read_zip_member(path, limit)
        opener = gzip.open if magic.startswith(GZIP_MAGIC) else open
        with opener(path, "rb") as stream:
            return stream.read() if limit is None else stream.read(limit)
    except READ_ERRORS as exc:
        raise PriceFileError(path, f"cannot read the file: {exc}") from exc


def decode(data: bytes) -> str:
    """UTF-8 text (a byte-order mark dropped, undecodable bytes replaced so the line fails)."""
    return data.decode("utf-8-sig", errors="replace")


def first_line(text: str) -> tuple[int, str]:
    """The 1-based number and text of the first non-blank line (0, "" when there is none)."""
    for n, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            return n, line.strip()
    return 0, ""


def split_header(line: str) -> list[str]:
    """Header names, stripped of blanks and double quotes."""
    return [c.strip().strip('"').strip() for c in line.split(",")]


def _mms_tables(text: str) -> tuple[str, ...]:
    tables = []
    for line in text.split("\n"):
        if line.startswith("I,"):
            parts = split_header(line)
            if len(parts) > 2:
                tables.append(f"{parts[1].upper()}.{parts[2].upper()}")
    return tuple(dict.fromkeys(tables))


def sniff(path: Path) -> Sniffed:
    """Recognise the format of ``path`` from its first 64 KiB of content.

    Raises :class:`PriceFileError` (naming line and field) when the file is empty, unreadable or
    starts with a header none of the accepted formats has.
    """
    text = decode(read_bytes(path, SNIFF_BYTES))
    n, line = first_line(text)
    if not line:
        raise PriceFileError(path, "file is empty (no header line)")
    if line.startswith("C,") or line.startswith("I,"):
        return Sniffed(path, "aemo-mms", _mms_tables(text))
    names = split_header(line)
    upper = [c.upper() for c in names]
    if set(PRICE_AND_DEMAND_COLUMNS[:4]) <= set(upper):
        return Sniffed(path, "aemo-price-and-demand")
    lower = [c.lower() for c in names]
    if set(GENERIC_REQUIRED) <= set(lower):
        unknown = [c for c in names if c.lower() not in GENERIC_REQUIRED + GENERIC_OPTIONAL]
        if unknown:
            raise PriceFileError(
                path,
                f"unknown column {unknown[0]!r} in the generic price CSV header; allowed: "
                f"{', '.join(GENERIC_REQUIRED + GENERIC_OPTIONAL)}",
                line=n,
                field=unknown[0],
            )
        return Sniffed(path, "generic-csv")
    first = names[0] if names else line[:40]
    raise PriceFileError(
        path,
        f"unknown header starting {line[:80]!r}: expected AEMO PRICE_AND_DEMAND "
        f"({','.join(PRICE_AND_DEMAND_COLUMNS)}), an AEMO MMS C/I/D file, or the generic CSV "
        f"({','.join(GENERIC_REQUIRED)}[,interval_minutes])",
        line=n,
        field=first,
    )


def lines_frame(text: str, file_number: int = 0) -> pl.DataFrame:
    """One row per physical line: ``_file``, ``source_line`` (1-based) and ``raw`` (no line end).

    ``file_number`` tells files apart when several are parsed as one frame. Blank lines are kept
    here (so numbering matches the file) and dropped by the parsers.
    """
    return (
        pl.DataFrame({"raw": [text]})
        .select(pl.col("raw").str.split("\n"))
        .explode("raw", empty_as_null=True)
        .with_row_index("source_line", offset=1)
        .select(
            pl.lit(file_number, pl.Int32).alias("_file"),
            pl.col("source_line").cast(pl.Int32),
            pl.col("raw").fill_null("").str.strip_chars_end("\r"),
        )
    )


def field(fields: pl.Expr, index: int) -> pl.Expr:
    """Field ``index`` of a split line (``None`` past the end), blanks and quotes stripped."""
    return fields.list.get(index, null_on_oob=True).str.strip_chars().str.strip_chars('"')
