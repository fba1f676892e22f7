"""``fairshare bill``: bill a period, compare products on shadow bills, list bills."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    DEFAULT_DB_PATH,
    DbOption,
    JsonOption,
    OutOption,
    check_out,
    console,
    out,
    print_json,
    rows_for_machines,
    run_guarded,
    write_rows,
)
from settlement.store import Store
from tariffs.errors import ExitCode

app = typer.Typer(
    help=(
        "Bill accounts for a period, or compare products on shadow bills.\n\n"
        "Examples:\n\n"
        "  fairshare bill --period 2024-07 --db fairshare.duckdb\n\n"
        "  fairshare bill --period 2024Q3 --account A1 --account A2\n\n"
        "  fairshare bill compare --period 2024-07 --product sh-flat --product dyn-passthrough"
    ),
    invoke_without_command=True,
)

PERIOD_HELP = "YYYY-MM, YYYYQn or YYYY-MM-DD..YYYY-MM-DD (end exclusive)."
PeriodOption = Annotated[str, typer.Option("--period", help=PERIOD_HELP)]
ProductsDir = Annotated[
    Path, typer.Option("--products", help="Folder of product files (*.toml).", exists=True)
]
AccountOption = Annotated[
    list[str] | None, typer.Option("--account", help="Only these accounts (repeatable).")
]
DEFAULT_PRODUCTS = Path("data/products")


def _progress(desc: str, done: int, total: int | None) -> None:
    console.print(f"[dim]{desc}: {done:,}{'' if total is None else f' / {total:,}'}[/]")


@app.callback()
def bill(
    ctx: typer.Context,
    period: Annotated[str | None, typer.Option("--period", help=PERIOD_HELP)] = None,
    products: ProductsDir = DEFAULT_PRODUCTS,
    account: AccountOption = None,
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
) -> None:
    """Bill every account cycle starting in the period on its enrolled product(s).

    Bills are drafts; a bill missing reads or prices is held with its reason (exit code 6).
    """
    if ctx.invoked_subcommand is not None:
        return
    if period is None:
        console.print("[bold red]error:[/] --period is required (e.g. --period 2024-07)")
        raise typer.Exit(int(ExitCode.USAGE))
    from settlement.billing import bill_accounts, parse_period

    def go() -> None:
        start, end = parse_period(period)
        with Store.open(db) as store:
            res = bill_accounts(
                store, start, end, account, product_dir=products, progress=_progress
            )
        if as_json:
            print_json(res.to_dict())
        else:
            totals = ", ".join(f"{cur} {v:,.2f}" for cur, v in res.total_inc_gst.items()) or "0"
            out.print(
                f"bill run {res.run_id}: {res.bills:,} bills, {res.held:,} held, total incl. tax {totals}"
            )
            for bill_id, acct, reason in res.holds[:20]:
                out.print(f"  [yellow]held[/] {bill_id} ({acct}): {reason}")
        if res.held:
            raise typer.Exit(int(ExitCode.HELD))

    run_guarded(go)


@app.command("compare")
def compare(
    period: PeriodOption,
    product: Annotated[
        list[str] | None,
        typer.Option("--product", help="Products to compare (repeatable); default all."),
    ] = None,
    products: ProductsDir = DEFAULT_PRODUCTS,
    account: AccountOption = None,
    baseline: Annotated[
        str | None, typer.Option(help="Compare against this product (default: each account's own).")
    ] = None,
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
    out_path: OutOption = None,
) -> None:
    """Shadow-bill accounts on every chosen product; who wins and loses, by account and cohort.

    With --out, the per-account rows go to that file and the cohort rows beside it
    (compare.parquet: compare-cohorts.parquet).

    Example: fairshare bill compare --period 2024-07 --product sh-flat --product sh-tou --product dyn-passthrough --out compare.parquet
    """
    from settlement.billing import load_products, parse_period
    from settlement.billing_compare import compare_products

    def go() -> None:
        check_out(out_path)
        start, end = parse_period(period)
        catalogue = load_products(products)
        chosen = {k: v for k, v in catalogue.items() if not product or k in product}
        with Store.open(db) as store:
            cmp = compare_products(
                store, start, end, chosen, account, baseline=baseline, progress=_progress
            )
        if out_path is not None:
            write_rows(cmp.accounts, out_path)
            write_rows(cmp.cohorts, out_path.with_name(f"{out_path.stem}-cohorts{out_path.suffix}"))
        if as_json:
            print_json(
                {
                    "run_id": cmp.run_id,
                    "accounts": cmp.accounts.to_dicts(),
                    "cohorts": cmp.cohorts.to_dicts(),
                }
            )
            return
        table = Table(title=f"shadow run {cmp.run_id}: difference vs baseline (incl. tax)")
        for col in (
            "baseline",
            "solar",
            "battery",
            "ev",
            "concession",
            "vpp",
            "product",
            "accounts",
            "mean_diff",
            "winners",
            "losers",
        ):
            table.add_column(col)
        for r in cmp.cohorts.iter_rows(named=True):
            table.add_row(*[f"{r[c]:,.2f}" if c == "mean_diff" else str(r[c]) for c in (
                "baseline", "solar", "battery", "ev", "concession", "vpp", "product", "accounts", "mean_diff", "winners", "losers")])  # fmt: skip
        out.print(table)

    run_guarded(go)


@app.command("list")
def list_bills(
    period: PeriodOption,
    db: DbOption = DEFAULT_DB_PATH,
    status: Annotated[str | None, typer.Option(help="draft | held | shadow | superseded")] = None,
    as_json: JsonOption = False,
    out_path: OutOption = None,
) -> None:
    """List bills whose cycle starts in the period (the first 200 on screen; --out or --json
    give them all).

    Example: fairshare bill list --period 2024-07 --status held --out held.csv
    """
    from settlement.billing import list_bills as query

    def go() -> None:
        check_out(out_path)
        with Store.open(db, read_only=True) as store:
            frame = query(store, period, status)
        if not rows_for_machines(frame, out_path, as_json):
            table = Table(title="bills")
            for col in frame.columns:
                table.add_column(col)
            for r in frame.head(200).iter_rows():
                table.add_row(*[str(x) for x in r])
            out.print(table)

    run_guarded(go)
