"""``fairshare audit``: run every audit over a range of market days, on demand (read-only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from cli.common import DEFAULT_DB_PATH, DbOption, JsonOption, out, print_json, run_guarded
from settlement.audits import run_audits
from settlement.store import Store
from tariffs.errors import ConfigError, ExitCode


def audit(
    date_from: Annotated[
        dt.datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First market day.")
    ],
    date_to: Annotated[
        dt.datetime,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Last market day (inclusive)."),
    ],
    all_issued: Annotated[
        bool,
        typer.Option(
            "--all-issued",
            help="Hash every issued bill in the store, not only the range's and the nightly's "
            "rotating slice.",
        ),
    ] = False,
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
) -> None:
    """Run the nightly's audits (queries that must return no rows) over a range, read-only.

    The day audits cover the market days of the range, the bill audits the issued bills of
    the range; ``--all-issued`` re-hashes every issued bill against its hash at issue. Exit
    codes: 0 every audit passed, 4 an audit found rows (named in the report), 2 usage.

    Example: fairshare audit --from 2024-08-01 --to 2024-08-31 --all-issued --json
    """

    def go() -> None:
        d1, d2 = date_from.date(), date_to.date()
        if d2 < d1:
            raise ConfigError(f"--to {d2} is before --from {d1}")
        with Store.open(db, read_only=True) as store:
            results = run_audits(store, d1, d2, all_issued=all_issued)
        failed = [r for r in results if not r.passed]
        if as_json:
            print_json(
                [
                    {
                        "name": r.name,
                        "passed": r.passed,
                        "failing_rows": r.failing_rows,
                        "description": r.description,
                        "sample": r.sample,
                        "seconds": r.seconds,
                    }
                    for r in results
                ]
            )
        else:
            table = Table(
                title=f"audits {d1} to {d2}" + (" (all issued bills)" if all_issued else "")
            )
            for col in ("audit", "result", "rows", "seconds", "first failing rows"):
                table.add_column(col, justify="right" if col in ("rows", "seconds") else "left")
            for r in results:
                table.add_row(
                    r.name,
                    "[green]pass[/]" if r.passed else "[red]FAIL[/]",
                    f"{r.failing_rows:,}",
                    f"{r.seconds:.2f}",
                    "; ".join(str(s) for s in r.sample[:2]),
                )
            out.print(table)
            out.print(f"{len(results)} audit(s), {len(failed)} failed")
        if failed:
            raise typer.Exit(int(ExitCode.AUDIT_FAILED))

    run_guarded(go)
