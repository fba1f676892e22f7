"""``fairshare risk calibrate|simulate|hedge|reentry|price-safe-harbour``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import DEFAULT_DB_PATH, DbOption, JsonOption, out, print_json, run_guarded
from settlement.store import Store

app = typer.Typer(
    help="Monte Carlo risk: price/load models, hedging cost, re-entry option, safe-harbour price.",
    no_args_is_help=True,
)

SettingsOption = Annotated[
    Path | None,
    typer.Option(
        "--settings", help="Risk settings TOML (default: built-in defaults).", exists=True
    ),
]
ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model", help="Model JSON from `risk calibrate` (default: calibrate now).", exists=True
    ),
]
PathsOption = Annotated[int | None, typer.Option("--paths", help="Override the number of paths.")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Override the seed.")]
BookOption = Annotated[
    Path,
    typer.Option("--book", help="Hedge book TOML.", exists=True),
]
DEFAULT_BOOK = Path("data/hedges/demo-hedge-book.toml")


def _settings(path: Path | None, paths: int | None = None, seed: int | None = None) -> Any:
    from settlement.risk_inputs import load_settings

    s = load_settings(path)
    update = {k: v for k, v in (("n_paths", paths), ("seed", seed)) if v is not None}
    if update:
        s = s.model_copy(update={"simulation": s.simulation.model_copy(update=update)})
    return s


def _figure(d: Any) -> str:
    if isinstance(d, dict) and "value" in d and "se" in d:
        return f"{d['value']:,.4f} ± {d['se']:,.4f}"
    if isinstance(d, float):
        return f"{d:,.4f}"
    return str(d)


def _render(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value (± standard error)", justify="right")
    for key, value in rows.items():
        if isinstance(value, dict) and not ("value" in value and "se" in value):
            for sub, v in value.items():
                table.add_row(f"{key}.{sub}", _figure(v))
        else:
            table.add_row(key, _figure(value))
    out.print(table)


@app.command("calibrate")
def calibrate(
    db: DbOption = DEFAULT_DB_PATH,
    settings: SettingsOption = None,
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the model JSON.")] = Path(
        "fairshare-out/risk-model.json"
    ),
    until: Annotated[str | None, typer.Option(help="Calibrate on prices before this date.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the price and load models and write them with a validation report.

    Example: fairshare risk calibrate --settings data/risk/settings.toml --out model.json
    """
    import datetime as dt

    from settlement.risk_inputs import calibrate_from_store

    def go() -> None:
        s = _settings(settings)
        cut = dt.date.fromisoformat(until) if until else None
        with Store.open(db, read_only=True) as store:
            model, report = calibrate_from_store(store, s, cut)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"model": model.to_dict(), "report": report}, default=str))
        if as_json:
            print_json({"model_file": str(out_path), "report": report})
            return
        table = Table(title=f"validation: {report['region']} / {report['cohort']}")
        for col in ("statistic", "historical", "simulated p01", "p50", "p99", "hist. percentile"):
            table.add_column(col, justify="right")
        for name, row in report["validation"].items():
            if isinstance(row, dict) and "simulated_p50" in row:
                table.add_row(
                    name,
                    *(
                        f"{row[k]:.4g}"
                        for k in (
                            "historical",
                            "simulated_p01",
                            "simulated_p50",
                            "simulated_p99",
                            "historical_percentile",
                        )
                    ),
                )
        out.print(table)
        validation = report["validation"]
        if "mean_spike_duration_intervals" in validation:
            d = validation["mean_spike_duration_intervals"]
            out.print(
                f"mean spike duration (intervals): historical {d['historical']:.2f}, "
                f"simulated {d['simulated_mean']:.2f}"
            )
        if "price_quantiles_per_mwh" in validation:
            q = Table(title="price quantiles ($/MWh)")
            for col in ("quantile", "historical", "simulated"):
                q.add_column(col, justify="right")
            for name, row in validation["price_quantiles_per_mwh"].items():
                q.add_row(name, f"{row['historical']:.1f}", f"{row['simulated']:.1f}")
            out.print(q)
        out.print(f"model written to {out_path}")

    run_guarded(go)


@app.command("simulate")
def simulate_cmd(
    db: DbOption = DEFAULT_DB_PATH,
    settings: SettingsOption = None,
    model: ModelOption = None,
    paths: PathsOption = None,
    seed: SeedOption = None,
    as_json: JsonOption = False,
) -> None:
    """Simulate price and load paths; report statistics with standard errors.

    Example: fairshare risk simulate --model model.json --paths 4096
    """
    from settlement.risk_inputs import run_simulation

    def go() -> None:
        with Store.open(db, read_only=True) as store:
            result = run_simulation(store, _settings(settings, paths, seed), model)
        print_json(result) if as_json else _render("simulation", result["simulation"])

    run_guarded(go)


@app.command("hedge")
def hedge(
    db: DbOption = DEFAULT_DB_PATH,
    book: BookOption = DEFAULT_BOOK,
    settings: SettingsOption = None,
    model: ModelOption = None,
    paths: PathsOption = None,
    seed: SeedOption = None,
    as_json: JsonOption = False,
) -> None:
    """Value a hedge book: cost with and without it, optimal hedges, risk premium.

    Example: fairshare risk hedge --book data/hedges/demo-hedge-book.toml --model model.json
    """
    from settlement.risk_inputs import load_hedge_book, run_hedge

    def go() -> None:
        with Store.open(db, read_only=True) as store:
            result = run_hedge(
                store, _settings(settings, paths, seed), load_hedge_book(book), model
            )
        print_json(result) if as_json else _render(
            f"hedge book: {result['book']}", result["hedge_book"]
        )

    run_guarded(go)


@app.command("reentry")
def reentry(
    rate: Annotated[float, typer.Option("--rate", help="Safe-harbour rate [$/kWh ex GST].")],
    db: DbOption = DEFAULT_DB_PATH,
    settings: SettingsOption = None,
    model: ModelOption = None,
    paths: PathsOption = None,
    seed: SeedOption = None,
    as_json: JsonOption = False,
) -> None:
    """Value the re-entry option at a safe-harbour rate, with the policy levers side by side.

    Example: fairshare risk reentry --rate 0.32 --model model.json
    """
    from settlement.risk_inputs import run_reentry

    def go() -> None:
        with Store.open(db, read_only=True) as store:
            result = run_reentry(store, _settings(settings, paths, seed), rate, model)
        if as_json:
            print_json(result)
            return
        _render(
            f"re-entry option at {rate} $/kWh (per customer per year)",
            {
                k: v["aud_per_customer_year"]
                for k, v in result["reentry"].items()
                if isinstance(v, dict) and "aud_per_customer_year" in v
            },
        )
        _render(
            "levers: rational value per customer per year",
            {
                k: v["rational_in_sample"]["aud_per_customer_year"]
                for k, v in result["reentry_levers"].items()
            },
        )

    run_guarded(go)


@app.command("price-safe-harbour")
def price_safe_harbour(
    db: DbOption = DEFAULT_DB_PATH,
    book: BookOption = DEFAULT_BOOK,
    settings: SettingsOption = None,
    model: ModelOption = None,
    paths: PathsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Solve the safe-harbour rate that recovers the full cost stack at the target margin.

    Example: fairshare risk price-safe-harbour --settings data/risk/settings.toml --paths 2048
    """
    from settlement.risk_inputs import price_demo_safe_harbour

    def go() -> None:
        with Store.open(db, read_only=True) as store:
            result = price_demo_safe_harbour(store, settings, book, n_paths=paths, model_path=model)
        if as_json:
            print_json(result)
            return
        sh = result["safe_harbour"]
        _render("safe-harbour cost stack ($/kWh ex GST)", sh["cost_stack_per_kwh"])
        out.print(
            f"[bold]{sh['structure']} rate: {sh['rate_per_kwh']:.4f} ± {sh['rate_se_per_kwh']:.4f} $/kWh[/]"
            + (f", peak {sh['peak_rate_per_kwh']:.4f}" if sh["peak_rate_per_kwh"] else "")
        )

    run_guarded(go)
