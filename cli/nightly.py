"""``fairshare nightly``: the nightly settlement run."""

from __future__ import annotations

import datetime as dt
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from cli.common import DEFAULT_DB_PATH, DbOption, console, out, run_guarded
from settlement.config import NightlyConfig, load_config
from settlement.nightly import NightlyResult, dry_run, run_nightly
from settlement.store import Store
from tariffs.errors import ConfigError


class LogFormat(StrEnum):
    """How the run reports itself."""

    text = "text"
    json = "json"


def _emit(fmt: LogFormat, event: str, **fields: object) -> None:
    """One log record on stderr: a JSON line, or (text format, not on a terminal: a scheduler's
    log file) a timestamped ``event key=value ...`` line, so progress shows as it happens."""
    ts = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if fmt is LogFormat.json:
        record = {"ts": ts, "event": event, **fields}
        sys.stderr.write(json.dumps(record, default=str) + "\n")
    elif not console.is_terminal:
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        sys.stderr.write(f"{ts} {event} {pairs}\n".rstrip() + "\n")
    sys.stderr.flush()


def nightly(
    date: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="Market day to settle (default: yesterday, UTC+10)."
        ),
    ] = None,
    date_from: Annotated[
        dt.datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First day of a range."),
    ] = None,
    date_to: Annotated[
        dt.datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Last day of a range (inclusive)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Settings TOML file (its nightly table).", exists=True, dir_okay=False),
    ] = None,
    dry: Annotated[
        bool, typer.Option("--dry-run", help="Show what would run; write nothing.")
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option(help="text (terminal) or json (JSON lines on stderr).")
    ] = LogFormat.text,
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Ingest the inbox, settle each market day, draft the closing bills, audit, issue, publish.

    Safe to run twice (same inputs: nothing changes) and safe to kill (the next run completes
    the work). Exit codes: 0 ok, 2 usage, 3 input quarantined (good data still settled),
    6 bills held (missing reads or prices; see the report),
    4 audit failed (no bill issued), 5 another run holds the store, 1 unexpected.

    Example: fairshare nightly --from 2024-01-01 --to 2024-01-31 --config fairshare.toml
    """

    def go() -> None:
        d1, d2 = _range(date, date_from, date_to)
        cfg = load_config(config)
        _emit(log_format, "start", date_from=d1, date_to=d2, db=str(db))
        if dry:  # opens no store: a dry run creates, migrates and locks nothing
            result = dry_run(cfg, d1, d2)
        else:
            with Store.open(db) as store:
                result = _run(store, cfg, d1, d2, log_format)
        _report(result, log_format)
        raise typer.Exit(int(result.exit_code))

    run_guarded(go)


def _run(
    store: Store, cfg: NightlyConfig, d1: dt.date, d2: dt.date, fmt: LogFormat
) -> NightlyResult:
    if fmt is LogFormat.json or not console.is_terminal:
        return run_nightly(
            store,
            cfg,
            d1,
            d2,
            progress=lambda s, i, n: _emit(fmt, "progress", stage=s, done=i, total=n),
        )
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = int(bar.add_task(name, total=total))
            bar.update(tasks[name], completed=done)  # type: ignore[arg-type]

        return run_nightly(store, cfg, d1, d2, progress=tick)


def _range(
    date: dt.datetime | None, d_from: dt.datetime | None, d_to: dt.datetime | None
) -> tuple[dt.date, dt.date]:
    if date and (d_from or d_to):
        raise ConfigError("give either --date or --from/--to, not both")
    if date:
        return date.date(), date.date()
    if d_from or d_to:
        if not (d_from and d_to):
            raise ConfigError("--from and --to go together")
        if d_to < d_from:
            raise ConfigError(f"--to {d_to:%Y-%m-%d} is before --from {d_from:%Y-%m-%d}")
        return d_from.date(), d_to.date()
    today_market = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=10)).date()
    yesterday = today_market - dt.timedelta(days=1)
    return yesterday, yesterday


def _report(result: NightlyResult, fmt: LogFormat) -> None:
    if fmt is LogFormat.json:
        _emit(
            fmt,
            "finish",
            run_id=result.run_id,
            status=result.status,
            exit_code=int(result.exit_code),
            message=result.message,
            snapshot=result.snapshot,
            stages=result.manifest.get("stages"),
            checkpoint_seconds=result.checkpoint_seconds,
        )
        return
    out.print(f"[bold]{result.status}[/]: {result.message}")
    for name, s in (result.manifest.get("stages") or {}).items():
        out.print(f"  {name:<8} {s['seconds']:>8.2f} s  peak {s['peak_rss_mb']:>8.1f} MiB")
    for a in result.audits:
        if not a.passed:
            out.print(
                f"  [red]audit {a.name} failed[/]: {a.failing_rows} row(s), e.g. {a.sample[:2]}"
            )
    if result.snapshot:
        out.print(f"  snapshot and manifest: {result.snapshot}")
    if result.status == "dry-run":
        out.print_json(data=result.manifest)
