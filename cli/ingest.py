"""``fairshare ingest meter|prices|customers``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import DEFAULT_DB_PATH, DbOption, JsonOption, render_ingest_report, run_guarded
from settlement.store import Store

app = typer.Typer(
    help="Load input files into the store (validated, idempotent, versioned).", no_args_is_help=True
)

PathsArg = Annotated[
    list[Path], typer.Argument(help="Files or folders (searched recursively).", exists=True)
]


@app.command("meter")
def meter(paths: PathsArg, db: DbOption = DEFAULT_DB_PATH, as_json: JsonOption = False) -> None:
    """Ingest NEM12 interval meter files (.csv or .zip).

    Example: fairshare ingest meter inbox/meter/ extra/NEM12#123.zip --db fairshare.duckdb
    """
    from settlement.nem12 import ingest_meter_files

    def go() -> None:
        with Store.open(db) as store:
            report = ingest_meter_files(store, paths)
        render_ingest_report(report, as_json)

    run_guarded(go)


@app.command("prices")
def prices(
    paths: PathsArg,
    db: DbOption = DEFAULT_DB_PATH,
    timezone: Annotated[
        str,
        typer.Option(
            help="Time zone of generic-CSV interval_end timestamps (AEMO files are always UTC+10)."
        ),
    ] = "Etc/GMT-10",
    as_json: JsonOption = False,
) -> None:
    """Ingest AEMO PRICE_AND_DEMAND CSVs, MMS DISPATCHPRICE/TRADINGPRICE zips or generic CSV.

    Example: fairshare ingest prices inbox/prices/ --db fairshare.duckdb
    """
    from settlement.prices import ingest_price_files

    def go() -> None:
        with Store.open(db) as store:
            report = ingest_price_files(store, paths, generic_timezone=timezone)
        render_ingest_report(report, as_json)

    run_guarded(go)


@app.command("customers")
def customers(
    path: Annotated[
        Path,
        typer.Argument(
            help="Customer CSV (see README, file formats).", exists=True, dir_okay=False
        ),
    ],
    db: DbOption = DEFAULT_DB_PATH,
    as_json: JsonOption = False,
) -> None:
    """Ingest a customer file: accounts, NMIs, loss factors, product enrolments, cohorts.

    Example: fairshare ingest customers data/demo/customers.csv --db fairshare.duckdb
    """
    from settlement.customers import ingest_customer_file

    def go() -> None:
        with Store.open(db) as store:
            report = ingest_customer_file(store, path)
        render_ingest_report(report, as_json)

    run_guarded(go)
