"""``fairshare demo``: generate the synthetic demo retailer and ingest it (no network needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import JsonOption, console, out, print_json, run_guarded

if TYPE_CHECKING:
    from settlement.demo.run import DemoSummary
    from settlement.demo.showcase import ShowcaseSummary


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
    data_only: Annotated[
        bool, typer.Option("--data-only", help="Stop after generating and ingesting the data.")
    ] = False,
    risk_paths: Annotated[
        int | None, typer.Option(min=10, help="Monte Carlo paths for the safe-harbour price.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the whole product on a generated retailer: data, nightly runs, bills, risk.

    Generates a deterministic synthetic retailer (one year of NEM12 meter data, 5-minute NSW1
    prices, customers) into OUT/inbox and ingests it into the store. Running it again regenerates
    identical files and the ingest is a no-op. Then (unless --data-only): two monthly nightly runs
    (bills issued; a revised meter file turns into adjustment lines on the next bills), shadow
    bills on every product, and the safe-harbour price from the risk engine.

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
        if not as_json:
            _render(summary)
        show = None
        if not data_only:
            from settlement.demo.showcase import run_showcase

            cfg = summary.generated.config if summary.generated else None
            with console.status("nightly runs, shadow bills and the risk engine ..."):
                show = run_showcase(
                    summary.out_dir, summary.db_path, cfg.start if cfg else _START,
                    cfg.days if cfg else 0, risk_paths=risk_paths,
                )  # fmt: skip
        if as_json:
            print_json(summary.to_dict() | {"showcase": show.__dict__ if show else None})
        elif show is not None:
            _render_showcase(show)
        if not as_json:
            db_arg = f"--db {summary.db_path}"
            out.print(
                f"next: `fairshare status {db_arg}`, `fairshare runs list {db_arg}`,"
                f" `fairshare bill list --period YYYY-MM {db_arg}`"
            )
        code = max(int(r.exit_code) for r in summary.reports.values())
        if code:
            raise typer.Exit(code)

    run_guarded(go)


_START = dt.date(2024, 7, 1)  # only used when the generator reports no config


def _render_showcase(s: ShowcaseSummary) -> None:
    """Nightly runs, adjustments, shadow-bill cohorts and the safe-harbour price."""
    for note in s.notes:
        out.print(f"[yellow]{note}[/]")
    if s.nightly:
        t = Table(title="nightly runs")
        for col in ("range", "status", "exit", "bills issued", "held", "adjustments",
                    "final adj. bills"):  # fmt: skip
            t.add_column(col)
        for n in s.nightly:
            t.add_row(n["range"], n["status"], str(n["exit_code"]), str(n["bills_issued"]),
                      str(n["bills_held"]), str(n["adjustments"]),
                      str(n.get("final_adjustment_bills", 0)))  # fmt: skip
        out.print(t)
        if s.revision_file:
            out.print(f"revised meter file: {s.revision_file}")
        net = sum(float(a["net_ex_gst"]) for a in s.adjustments)
        out.print(f"adjustments on next bills: {len(s.adjustments)} (net {net:+.2f} AUD ex GST)")
        for n in s.nightly:
            out.print(
                f"product charges accrued {n['range']}: {n['accrued_account_days']:,} account-days,"
                f" {n['accrued_ex_tax']:,.2f} AUD ex tax (view daily_charges; "
                "`fairshare explain charges ACCOUNT --from D1 --to D2`)"
            )
            out.print(f"manifest: {n['manifest']}\n  snapshot (Parquet): {n['snapshot']}")
    if s.cohorts:
        t = Table(title="shadow bills: mean difference vs the enrolled product (AUD inc GST)")
        for col in ("enrolled", "on product", "accounts", "mean diff", "win", "lose"):
            t.add_column(col)
        for c in s.cohorts:
            if c["baseline"] != c["product"]:
                t.add_row(c["baseline"], c["product"], str(c["accounts"]),
                          f"{c['mean_diff']:+.2f}", str(c["winners"]), str(c["losers"]))  # fmt: skip
        out.print(t)
    if s.safe_harbour:
        sh = s.safe_harbour.get("safe_harbour", s.safe_harbour)
        out.print(f"safe-harbour flat rate: {sh.get('rate_per_kwh', float('nan')):.4f} AUD/kWh "
                  f"(s.e. {sh.get('rate_se_per_kwh', float('nan')):.4f})")  # fmt: skip
        for name, v in (sh.get("cost_stack_per_kwh") or {}).items():
            out.print(f"  {name:<18} {v['value']:.4f} +- {v['se']:.4f} AUD/kWh")
        reentry = s.safe_harbour.get("reentry") or {}
        if reentry:
            rational = reentry["rational_in_sample"]["aud_per_customer_year"]
            bound = reentry["perfect_foresight"]["aud_per_customer_year"]
            share = reentry.get("exercise_share", {}).get("rational", 0.0)
            out.print(
                f"re-entry option at this rate: {rational['value']:.2f} +- {rational['se']:.2f} "
                f"AUD per dynamic customer-year (rational exercise on {share:.0%} of paths; "
                f"perfect foresight {bound['value']:.2f}); other rates and the policy levers: "
                "`fairshare risk reentry --rate R`"
            )


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
