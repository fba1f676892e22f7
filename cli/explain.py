"""``fairshare explain bill BILL_ID``: how every line of a bill was computed."""

from __future__ import annotations

import datetime as dt
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
    out,
    print_json,
    run_guarded,
    write_rows,
)
from settlement.store import Store

app = typer.Typer(help="Explain how a figure was computed.", no_args_is_help=True)


@app.command("bill")
def bill(
    bill_id: Annotated[str, typer.Argument(help="Bill id, e.g. A1/sh-tou/2024-07-01/r3.")],
    db: DbOption = DEFAULT_DB_PATH,
    intervals: Annotated[int, typer.Option(help="Interval rows to print per line (0: none).")] = 6,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the full interval drill-down to this .parquet, .csv or .json."
        ),
    ] = None,
    csv: Annotated[
        Path | None, typer.Option(hidden=True, help="Same as --out with a .csv.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show every line with its arithmetic and the intervals behind it (recomputed from the
    product version and the data as known at the run, and checked against the stored bill).

    Example: fairshare explain bill 'A1/sh-tou/2024-07-01/r1' --intervals 10 --out a1.csv
    """
    from settlement.billing_explain import explain_bill

    def go() -> None:
        target = out_path or csv
        check_out(target)
        with Store.open(db, read_only=True) as store:
            ex = explain_bill(store, bill_id)
        if target is not None:
            write_rows(ex.intervals, target)
        if as_json:
            print_json({"bill": ex.bill, "lines": ex.lines.to_dicts(), "reproduced": ex.reproduced,
                        "intervals": ex.intervals.head(intervals * 20).to_dicts()})  # fmt: skip
            return
        b = ex.bill
        out.print(
            f"[bold]{b['bill_id']}[/] {b['account']} {b['product']}@{b['product_version']} "
            f"{b['period_start']}..{b['period_end']} (cycle {b['cycle_start']}..{b['cycle_end']}) "
            f"status {b['status']}" + (f": {b['hold_reason']}" if b["hold_reason"] else "")
        )
        for line in ex.lines.iter_rows(named=True):
            out.print(
                f"  {line['line_no']:>2}. {line['component']} {line['detail']}: "
                f"{line['amount_ex_gst']} + tax {line['gst']} = {line['amount_inc_gst']}\n"
                f"      {line['explanation']}"
            )
            rows = ex.intervals.filter(
                (ex.intervals["component"] == line["component"])
                & (ex.intervals["detail"] == line["detail"])
            )
            if intervals and rows.height:
                table = Table(show_header=True, box=None, padding=(0, 1))
                for col in rows.columns:
                    table.add_column(col)
                for r in rows.head(intervals).iter_rows():
                    table.add_row(*[f"{x:.6g}" if isinstance(x, float) else str(x) for x in r])
                out.print(table)
                out.print(f"      ... {rows.height:,} interval rows")
        verdict = "matches" if ex.reproduced else "n/a" if ex.reproduced is None else "DIFFERS"
        checked = (
            "adjustment lines against bill_adjustments"
            if b["kind"] == "final_adjustment"
            else "recomputed from inputs"
        )
        out.print(
            f"total ex tax {b['total_ex_gst']}, tax {b['gst']}, incl. tax {b['total_inc_gst']}; "
            f"{checked}: {verdict}"
        )

    run_guarded(go)


@app.command("charges")
def charges(
    account: Annotated[str, typer.Argument(help="Account id, e.g. A1.")],
    date_from: Annotated[
        dt.datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First local day.")
    ],
    date_to: Annotated[
        dt.datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last local day (inclusive).")
    ],
    db: DbOption = DEFAULT_DB_PATH,
    out_path: OutOption = None,
    csv: Annotated[
        Path | None, typer.Option(hidden=True, help="Same as --out with a .csv.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show an account's product charges as the nightly accrued them, per local day and
    component (unrounded, ex tax; a day is complete once every import read and price is in).

    Example: fairshare explain charges A1 --from 2024-07-01 --to 2024-07-07 --out a1.csv
    """
    from settlement.accruals import account_charges

    def go() -> None:
        target = out_path or csv
        check_out(target)
        start, end = date_from.date(), date_to.date()
        with Store.open(db, read_only=True) as store:
            rows = account_charges(store, account, start, end)
        if target is not None:
            write_rows(rows, target)
        if as_json:
            print_json({"account": account, "charges": rows.to_dicts()})
            return
        if rows.is_empty():
            out.print(f"no accrued charges for {account} from {start} to {end}")
            return
        table = Table(show_header=True, box=None, padding=(0, 1))
        for col in ("day", "product", "component", "kWh", "mean rate", "amount", "complete"):
            table.add_column(col)
        for r in rows.iter_rows(named=True):
            name = r["component"] + (f" ({r['detail']})" if r["detail"] else "")
            rate = "" if r["mean_rate"] is None else f"{r['mean_rate']:.5f}"
            table.add_row(str(r["local_date"]), r["product"], name, f"{r['quantity_kwh']:.3f}",
                          rate, f"{r['amount']:.4f} {r['currency']}",
                          "yes" if r["complete"] else "no")  # fmt: skip
        out.print(table)
        total = rows["amount"].sum()
        out.print(f"{rows.height} row(s); accrued {total:.4f} ex tax (bills round each line)")

    run_guarded(go)
