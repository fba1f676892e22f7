"""Options and rendering shared by every command. No business logic lives in ``cli/``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from settlement.ingest_common import IngestReport
from settlement.store import DB_ENV, DEFAULT_DB
from tariffs.errors import ConfigError, ExitCode, FairshareError

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar=DB_ENV,
        help=f"DuckDB store file (created on first use). Env: {DB_ENV}.",
        show_default=True,
    ),
]
DEFAULT_DB_PATH = Path(DEFAULT_DB)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Also write the rows to this file for machines: .parquet, .csv or .json (by suffix).",
    ),
]
OUT_FORMATS = (".parquet", ".csv", ".json")

T = TypeVar("T")


def run_guarded(fn: Callable[[], T]) -> T:
    """Call ``fn``; turn a :class:`FairshareError` into its message and exit code."""
    try:
        return fn()
    except FairshareError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(int(exc.exit_code)) from exc


def json_text(data: Any) -> str:
    """``data`` as indented JSON (dates, decimals and the like as their text), with a newline."""
    return json.dumps(data, indent=2, default=str) + "\n"


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json_text(data))


def check_out(path: Path | None) -> None:
    """Refuse an ``--out`` file whose suffix names no format we write (before any work)."""
    if path is not None and path.suffix.lower() not in OUT_FORMATS:
        raise ConfigError(
            f"--out {path}: the file name must end in {', '.join(OUT_FORMATS)} (the format)"
        )


def write_rows(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` as Parquet, CSV or JSON (a list of row objects), by the
    file's suffix (:func:`check_out` has checked it); decimals keep their exact digits."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.write_parquet(path)
    elif suffix == ".csv":
        frame.write_csv(path)
    else:
        path.write_text(json_text(frame.to_dicts()))
    console.print(f"wrote {frame.height:,} row(s) to {path}")


def rows_for_machines(frame: pl.DataFrame, out_path: Path | None, as_json: bool) -> bool:
    """The machine outputs of a command that lists rows: ``frame`` to ``--out`` when given, and
    as JSON on stdout with ``--json``; True when the JSON took stdout (print no table then)."""
    if out_path is not None:
        write_rows(frame, out_path)
    if as_json:
        print_json(frame.to_dicts())
    return as_json


def render_ingest_report(report: IngestReport, as_json: bool) -> None:
    """Show a per-file table (or JSON) and exit with the report's exit code."""
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table(title="ingestion")
        for col in ("file", "status", "loaded", "duplicate", "quarantined", "notes"):
            table.add_column(
                col, justify="right" if col in ("loaded", "duplicate", "quarantined") else "left"
            )
        for f in report.files:
            notes = "; ".join(f.errors[:3] + f.warnings[:3])
            table.add_row(
                Path(f.path).name,
                f.status,
                f"{f.rows_loaded:,}",
                f"{f.rows_duplicate:,}",
                f"{f.rows_quarantined:,}",
                notes,
            )
        out.print(table)
        out.print(
            f"{len(report.files)} file(s): {report.rows_loaded:,} rows loaded, "
            f"{report.rows_quarantined:,} quarantined"
        )
        if report.exit_code == ExitCode.QUARANTINED:
            out.print(
                "[yellow]some input was quarantined: see the quarantine table "
                "(fairshare quarantine) - exit code 3[/]"
            )
    if report.exit_code != ExitCode.OK:
        raise typer.Exit(int(report.exit_code))
