"""``fairshare runs``: the nightly runs, newest first, and one run in full."""

from __future__ import annotations

import datetime as dt
import json
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
    print_json,
    rows_for_machines,
    run_guarded,
)
from settlement.store import Store

app = typer.Typer(
    help=(
        "The nightly runs: how each ended, what it did, where its snapshot is.\n\n"
        "Examples:\n\n"
        "  fairshare runs list --from 2024-09-01 --status failed\n\n"
        "  fairshare runs show 20240901-20240930-296816c35c70"
    ),
    no_args_is_help=True,
)


@app.command("list")
def list_runs(
    date_from: Annotated[
        dt.datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="Runs whose range ends on or after."),
    ] = None,
    date_to: Annotated[
        dt.datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Runs whose range starts on or before."),
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="running | succeeded | failed | abandoned")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
    out_path: OutOption = None,
) -> None:
    """List the nightly runs, newest first: range, status, exit code, seconds, bills issued and
    held, failed audits (--json and --out add attempts, rows loaded and quarantined, bills
    drafted, adjustments and the snapshot folder).

    Example: fairshare runs list --from 2024-09-01 --status failed --out runs.csv
    """
    from settlement.run_history import list_runs as query

    def go() -> None:
        check_out(out_path)
        with Store.open(db, read_only=True) as store:
            frame = query(
                store,
                date_from.date() if date_from else None,
                date_to.date() if date_to else None,
                status,
                limit,
            )
        if rows_for_machines(frame, out_path, as_json):
            return
        table = Table(title=f"nightly runs ({frame.height} shown, newest first)")
        cols = ("run", "range", "status", "exit", "seconds", "issued", "held", "failed")
        for col in cols:
            left = col in ("run", "range", "status", "failed")
            table.add_column(col, justify="left" if left else "right", no_wrap=col != "failed")
        for r in frame.iter_rows(named=True):
            span = str(r["date_from"])
            if r["date_to"] != r["date_from"]:
                span += f"..{r['date_to']}"
            table.add_row(
                r["run_id"], span, r["status"], _n(r["exit_code"]), _n(r["stage_seconds"]),
                _n(r["bills_issued"]), _n(r["bills_held"]), r["failed_audits"] or "",
            )  # fmt: skip
        out.print(table)

    run_guarded(go)


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="Run id, as `fairshare runs list` shows it.")],
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
) -> None:
    """Show one nightly run: its outcome, every attempt's stages (time, memory, details), its
    audits and its snapshot.

    Example: fairshare runs show 20240901-20240930-296816c35c70 --json
    """
    from settlement.run_history import run_detail

    def go() -> None:
        with Store.open(db, read_only=True) as store:
            d = run_detail(store, run_id)
        if as_json:
            print_json(
                {
                    "run": d.run,
                    "stages": [
                        s | {"details": json.loads(s["details"] or "{}")}
                        for s in d.stages.to_dicts()
                    ],
                    "audits": [
                        a | {"sample": json.loads(a["sample"] or "[]")} for a in d.audits.to_dicts()
                    ],
                    "params": d.params,
                    "manifest": d.manifest,
                }
            )
            return
        r = d.run
        out.print(
            f"[bold]{r['run_id']}[/] {r['date_from']}..{r['date_to']}: {r['status']}"
            f" (exit {_n(r['exit_code'])}, attempt {r['attempts']}), started {r['started_at']}"
            + (f", finished {r['finished_at']}" if r["finished_at"] else "")
        )
        stages = Table(title="stages", box=None, padding=(0, 1))
        for col in ("attempt", "stage", "status", "seconds", "peak MiB", "details"):
            stages.add_column(col, justify="right" if col in ("seconds", "peak MiB") else "left")
        for s in d.stages.iter_rows(named=True):
            stages.add_row(
                str(s["attempt"]), s["stage"], s["status"], _n(s["seconds"]),
                _n(s["peak_rss_mb"]), _details(s["details"]),
            )  # fmt: skip
        out.print(stages)
        audits = Table(title="audits (last attempt)", box=None, padding=(0, 1))
        for col in ("audit", "result", "rows", "first failing row"):
            audits.add_column(col, justify="right" if col == "rows" else "left")
        for a in d.audits.iter_rows(named=True):
            sample = json.loads(a["sample"] or "[]")
            audits.add_row(
                a["audit"],
                "[red]FAIL[/]" if a["failing_rows"] else "[green]pass[/]",
                f"{a['failing_rows']:,}",
                str(sample[0]) if sample else "",
            )
        out.print(audits)
        if r["snapshot"]:
            out.print(f"snapshot: {r['snapshot']}")

    run_guarded(go)


def _n(x: object) -> str:
    """A figure for a table cell: thousands separated, two decimals for seconds, '-' if none."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.2f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _details(text: str | None, width: int = 80) -> str:
    """A stage's details as short ``key=value`` pairs (the JSON has them all)."""
    details = json.loads(text or "{}")
    parts = [f"{k}={v}" for k, v in details.items() if not isinstance(v, dict | list) or not v]
    line = ", ".join(parts)
    return line if len(line) <= width else line[: width - 3] + "..."
