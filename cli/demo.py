"""``fairshare demo``: generate the synthetic demo retailer and ingest it (no network needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import JsonOption, console, out, print_json, run_guarded

if TYPE_CHECKING:
    from settlement.demo.run import DemoSummary


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the generated inbox and the store.")
    ] = Path("demo-out"),
    households: Annotated[
        int | None,
        typer.Option(min=1, help="Number of households (default from data/demo.toml: 2,000)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Random seed (default from data/demo.toml).")
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, max=366, help="Days from the start (default 365).")
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Store file (default OUT/fairshare.duckdb).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Generator inputs TOML (default data/demo.toml).", dir_okay=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate a deterministic synthetic retailer (one year of NEM12 meter data, 5-minute NSW1
    prices, customers) into OUT/inbox and ingest it into the store. Running it again regenerates
    identical files and the ingest is a no-op.

    Example: fairshare demo --out demo-out --households 200
    """
    from settlement.demo.run import build_demo

    def go() -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console, disable=as_json) as bar:
            tasks: dict[str, int] = {}

            def progress(description: str, advance: int, total: int | None) -> None:
                if description not in tasks:
                    tasks[description] = int(bar.add_task(description, total=total))
                bar.update(tasks[description], advance=advance, total=total)  # type: ignore[arg-type]

            summary = build_demo(
                out_dir, households, seed, db, days=days, config=config, progress=progress
            )
        if as_json:
            print_json(summary.to_dict())
        else:
            _render(summary)
        code = max(int(r.exit_code) for r in summary.reports.values())
        if code:
            raise typer.Exit(code)

    run_guarded(go)


def _render(s: DemoSummary) -> None:
    """The summary table."""
    table = Table(title=f"fairshare demo: {s.out_dir}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("households (NMIs with reads)", f"{s.households:,}"),
        ("accounts", f"{s.accounts:,}"),
        ("files: meter / prices", f"{s.meter_files} / {s.price_files}"),
        ("meter readings (current)", f"{s.readings:,}"),
        ("E1 import", f"{s.e1_kwh / 1000:,.1f} MWh"),
        ("B1 export", f"{s.b1_kwh / 1000:,.1f} MWh"),
        ("price intervals", f"{s.price_intervals:,}"),
        ("price mean / max / min", f"{s.price_mean_per_mwh:,.2f} / {s.price_max_per_mwh:,.0f}"
         f" / {s.price_min_per_mwh:,.0f} $/MWh"),
        ("negative price share", f"{s.negative_share:.2%}"),
        ("rows loaded / quarantined", f"{s.rows_loaded:,} / {s.rows_quarantined:,}"),
        ("generate / ingest", f"{s.generate_seconds:.1f} s / {s.ingest_seconds:.1f} s"),
        ("store", str(s.db_path)),
    ]  # fmt: skip
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)
