"""``fairshare products validate|show``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import JsonOption, out, print_json, run_guarded

app = typer.Typer(
    help="Check and inspect product files (data/products/*.toml).", no_args_is_help=True
)
DEFAULT_PRODUCTS = Path("data/products")


@app.command("validate")
def validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Product files or folders (default data/products).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate product files; errors name the file and the key (exit code 2).

    Example: fairshare products validate data/products/
    """
    from settlement.billing import validate_product_files

    def go() -> None:
        results = validate_product_files(paths or [DEFAULT_PRODUCTS])
        if as_json:
            print_json(results)
        else:
            for r in results:
                mark = "[green]ok[/]" if r["ok"] else "[bold red]error[/]"
                out.print(f"{mark} {r['path']}: {r['message']}")
        if not all(r["ok"] for r in results):
            raise typer.Exit(2)

    run_guarded(go)


@app.command("show")
def show(
    product_id: Annotated[str, typer.Argument(help="Product id, e.g. sh-tou.")],
    products: Annotated[
        Path, typer.Option("--products", help="Folder of product files.")
    ] = DEFAULT_PRODUCTS,
    on: Annotated[
        str | None, typer.Option(help="Show the rates in force on this date (YYYY-MM-DD).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a product's components and every dated rate with its source.

    Example: fairshare products show dyn-passthrough --on 2024-07-01
    """
    from settlement.billing import describe_product

    def go() -> None:
        rows = describe_product(products, product_id, date.fromisoformat(on) if on else None)
        if as_json:
            print_json(rows)
            return
        table = Table(title=product_id)
        for col in ("parameter", "effective_from", "value", "source"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                str(r["parameter"]), str(r["effective_from"]), str(r["value"]), str(r["source"])
            )
        out.print(table)

    run_guarded(go)
