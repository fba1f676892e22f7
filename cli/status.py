"""``fairshare status``: what the store holds, at a glance."""

from __future__ import annotations

from rich.table import Table

from cli.common import DEFAULT_DB_PATH, DbOption, JsonOption, out, print_json, run_guarded
from settlement.store import Store


def status(db: DbOption = DEFAULT_DB_PATH, as_json: JsonOption = False) -> None:
    """Show what the store holds: files ingested, meter data and price coverage, market days
    metered but not fully priced (their bills will be held), customers, bills, the last run.

    Example: fairshare status --db fairshare.duckdb --json
    """
    from settlement.status import store_status

    def go() -> None:
        with Store.open(db, read_only=True) as store:
            st = store_status(store, db)
        if as_json:
            print_json(st)
            return
        s, m, c = st["store"], st["meter"], st["customers"]
        out.print(
            f"[bold]{s['path']}[/]: schema v{s['schema_version']}, {s['size_mb']} MB,"
            f" DuckDB {s['duckdb']}"
        )
        _table("files ingested", st["files"])
        out.print(
            f"meter data: {m['channels']:,} channels, {m['readings']:,} current readings on"
            f" {m['channel_days']:,} channel-days, market days {m['first_day']} .. {m['last_day']}"
        )
        _table("prices (current)", st["prices"])
        if st["unpriced_metered_days"]:
            _table(
                "[red]metered market days without a full day of prices[/] (bills held)",
                st["unpriced_metered_days"],
            )
        else:
            out.print("every metered market day has a full day of prices in its region")
        out.print(
            f"customers: {c['accounts']:,} accounts in {c['regions']} region(s),"
            f" {c['moved_out']:,} moved out; quarantined rows: {st['quarantined_rows']:,}"
        )
        _table("enrolments", st["enrolments"])
        _table("bills (not shadow)", st["bills"])
        run = st["last_run"]
        if run:
            out.print(
                f"last nightly run: {run['run_id']} ({run['date_from']}..{run['date_to']}),"
                f" {run['status']}, exit {run['exit_code']}"
            )
        else:
            out.print("no nightly run yet")

    run_guarded(go)


def _table(title: str, rows: list[dict[str, object]]) -> None:
    if not rows:
        out.print(f"{title}: none")
        return
    table = Table(title=title, box=None, padding=(0, 1), title_justify="left")
    for col in rows[0]:
        table.add_column(col, justify="right" if isinstance(rows[0][col], int) else "left")
    for r in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in r.values()])
    out.print(table)
