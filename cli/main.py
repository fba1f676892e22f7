"""The ``fairshare`` command: a thin typer app over settlement and risk."""

from __future__ import annotations

import typer

from cli import (
    audit,
    bill,
    demo,
    explain,
    ingest,
    migrate,
    nightly,
    products,
    quarantine,
    risk,
    runs,
    status,
)

app = typer.Typer(
    name="fairshare",
    help=(
        "fairshare: retail electricity tariff, settlement and risk engine.\n\n"
        "Exit codes: 0 ok, 1 unexpected error, 2 usage error, 3 input quarantined, "
        "4 audit failed, 5 store locked by another run, 6 bills held.\n\n"
        "Example: fairshare ingest meter data/inbox/meter --db fairshare.duckdb"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.command("status")(status.status)
app.command("migrate")(migrate.migrate)
app.add_typer(ingest.app, name="ingest")
app.command("nightly")(nightly.nightly)
app.add_typer(runs.app, name="runs")
app.command("quarantine")(quarantine.quarantine)
app.command("audit")(audit.audit)
app.command("demo")(demo.demo)
app.add_typer(bill.app, name="bill")
app.add_typer(products.app, name="products")
app.add_typer(explain.app, name="explain")
app.add_typer(risk.app, name="risk")


if __name__ == "__main__":  # pragma: no cover
    app()
