"""``fairshare quarantine``: list refused input records with file, line, field and reason."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    DEFAULT_DB_PATH,
    DbOption,
    JsonOption,
    OutOption,
    check_out,
    out,
    rows_for_machines,
    run_guarded,
)
from settlement.ingest_common import quarantine_listing
from settlement.store import Store


def quarantine(
    file: Annotated[
        str | None, typer.Option(help="Only files whose path matches this SQL LIKE pattern.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many records.")] = 100,
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
    out_path: OutOption = None,
) -> None:
    """List quarantined input records, newest file first.

    Example: fairshare quarantine --file '%NEM12%' --limit 20 --out refused.csv
    """

    def go() -> None:
        check_out(out_path)
        with Store.open(db, read_only=True) as store:
            frame = quarantine_listing(store, file_pattern=file, limit=limit)
        if rows_for_machines(frame, out_path, as_json):
            return
        table = Table(title=f"quarantine ({frame.height} shown)")
        for col in ("file", "line", "record", "field", "reason"):
            table.add_column(col)
        for r in frame.iter_rows(named=True):
            table.add_row(
                str(r["source_file"]),
                str(r["source_line"] or "-"),
                r["record_type"] or "-",
                r["field"] or "-",
                r["reason"],
            )
        out.print(table)

    run_guarded(go)
