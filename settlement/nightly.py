"""``fairshare nightly``: ingest the inbox, settle each day, close billing periods, audit, publish.

Idempotent and crash-safe by construction:

- every stage writes in transactions keyed by what it computes (a settlement day, a bill's
  account and period), deleting and re-inserting the same deterministic rows, so a stage
  redone after a crash gives exactly the rows an uninterrupted run gives;
- the run id is derived from the run key (all ingested inputs, parameters, code version), so the
  rerun of an interrupted run is the same run, with ``attempts`` counting the tries;
- a run whose key already succeeded does nothing and says so;
- the snapshot is written to a staging folder and renamed into place.

One writer at a time: DuckDB locks the store file; a second run gets exit code 5 at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from settlement.audits import AuditResult, run_audits
from settlement.billing import load_products
from settlement.closing import close_cycles, issue_cycles, stage_channels
from settlement.config import NightlyConfig
from settlement.failpoints import failpoint
from settlement.inbox import ingest_inbox, pending_files
from settlement.ingest_common import sha256_file
from settlement.runs import (
    StageLog,
    clean_staging,
    code_version,
    publish_snapshot,
    run_key,
    runtime_versions,
    stage,
)
from settlement.schema_days import n_reads_sql
from settlement.store import Store, with_literals
from settlement.wholesale import revised_days, settle_day
from tariffs.errors import ExitCode

log = logging.getLogger("fairshare.nightly")

Progress = Callable[[str, int, int], None]


@dataclass
class NightlyResult:
    """What a nightly run did (also the body of its manifest)."""

    run_id: str
    status: str  # succeeded | failed | up-to-date | dry-run
    exit_code: ExitCode
    message: str
    manifest: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None
    audits: list[AuditResult] = field(default_factory=list)
    # the closing CHECKPOINT, after the manifest is stored (so not among its stage timings)
    checkpoint_seconds: float = 0.0


def days_between(date_from: dt.date, date_to: dt.date) -> list[dt.date]:
    """Every day from ``date_from`` to ``date_to`` inclusive."""
    return [date_from + dt.timedelta(days=i) for i in range((date_to - date_from).days + 1)]


def product_files(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every product file (``*.toml``) in ``folder``, read as bytes
    (not parsed: a broken file is part of the configuration too, and its fix must change the
    run key)."""
    if not folder.is_dir():
        return {}
    return {p.name: sha256_file(p) for p in sorted(folder.glob("*.toml"))}


def _params(cfg: NightlyConfig, date_from: dt.date, date_to: dt.date) -> dict[str, Any]:
    """The run's parameters: what, besides the ingested inputs and the code, decides its
    outputs (so all of it is in the run key): the range, the back-billing limit, whether a
    snapshot is published, whether final adjustment bills are made and the content of every
    product file."""
    return {
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "back_billing_months": cfg.back_billing_months,
        "snapshot": cfg.snapshot,
        "final_adjustment_bills": cfg.final_adjustment_bills,
        "product_files": product_files(cfg.products),
    }


def dry_run(cfg: NightlyConfig, date_from: dt.date, date_to: dt.date) -> NightlyResult:
    """Report what a run would do without writing anything (the store is not even opened)."""
    pending = {k: [str(p) for p in v] for k, v in pending_files(cfg.inbox).items()}
    plan = {
        "pending_files": pending,
        "days": [d.isoformat() for d in days_between(date_from, date_to)],
    }
    return NightlyResult("", "dry-run", ExitCode.OK, "dry run: nothing written", manifest=plan)


def run_nightly(
    store: Store,
    cfg: NightlyConfig,
    date_from: dt.date,
    date_to: dt.date,
    *,
    progress: Progress | None = None,
) -> NightlyResult:
    """Run the nightly over ``[date_from, date_to]`` (market days, inclusive)."""
    code = code_version()
    params = _params(cfg, date_from, date_to)
    clean_staging(cfg.runs)
    pre = StageLog(run_id="pending", attempt=0)
    with stage(store, pre, "ingest") as d:
        report = ingest_inbox(store, cfg.inbox, cfg.archive)
        d |= {
            "files": len(report.files),
            "rows_loaded": report.rows_loaded,
            "rows_quarantined": report.rows_quarantined,
        }
    key = run_key(store, params, code)
    run_id = f"{date_from:%Y%m%d}-{date_to:%Y%m%d}-{key[:12]}"
    done = store.con.execute(
        "SELECT exit_code FROM runs WHERE run_id = ? AND status = 'succeeded'", [run_id]
    ).fetchall()
    new_files = [f for f in report.files if f.status != "duplicate"]
    if done and not new_files:
        # nothing new (a file delivered again is a duplicate, archived as such): the run stands
        # as it finished, exit code included (held bills are still held); the ingest stage
        # timing of this attempt is not kept, so the store is exactly as before
        store.con.execute("DELETE FROM run_stages WHERE run_id = 'pending'")
        code_before = ExitCode(int(done[0][0]))
        return NightlyResult(
            run_id,
            "up-to-date",
            code_before,
            f"run {run_id} already succeeded with these inputs (exit {int(code_before)}): "
            "nothing to do",
        )
    attempt = _start_run(store, run_id, key, date_from, date_to, code, params)
    slog = StageLog(run_id, attempt, stages={"ingest": pre.stages["ingest"]})
    store.con.execute(
        "UPDATE run_stages SET run_id = ?, attempt = ? WHERE run_id = 'pending'", [run_id, attempt]
    )
    days = days_between(date_from, date_to)
    with stage(store, slog, "settle") as d:
        resettle = [x for x in revised_days(store) if x not in days]
        # the product charges accrue with the wholesale cost (settlement.accruals)
        products = load_products(cfg.products)
        totals: dict[str, int] = {"rows": 0, "missing_price": 0, "estimated": 0}
        for i, day in enumerate([*resettle, *days], 1):
            for k, v in settle_day(store, day, run_id, products).items():
                totals[k] = totals.get(k, 0) + v
            failpoint("settle.after_day")
            if progress:
                progress("settle", i, len(days) + len(resettle))
        d |= totals | {"days": len(days), "resettled_days": [x.isoformat() for x in resettle]}
    with stage(store, slog, "bill") as d:
        closed = close_cycles(store, run_id, date_from, date_to, cfg.products,
                              cfg.back_billing_months,
                              final_bills=cfg.final_adjustment_bills)  # fmt: skip
        stage_channels(store, cfg.products)
        d |= closed.to_dict()
    if closed.stranded:
        # no later bill of these accounts will take them (moved out): to settle by hand
        log.warning(
            "%d pending adjustment(s) of moved-out accounts have no bill to go on (first: %s)",
            len(closed.stranded),
            ", ".join("/".join(a[:2]) for a in closed.stranded[:5]),
        )
    with stage(store, slog, "audit") as d:
        # the bill audits cover the drafts about to be issued as well as the bills issued
        # the day audits also cover the revised days re-settled outside the range
        audits = run_audits(
            store, date_from, date_to, draft_runs=closed.draft_runs, extra_days=resettle
        )
        failpoint("audit.after_queries")
        _record_audits(store, run_id, attempt, audits)
        d |= {
            "failed": [a.name for a in audits if not a.passed],
            "count": len(audits),
            "audit_seconds": {a.name: a.seconds for a in audits},
        }
    failed = [a for a in audits if not a.passed]
    with stage(store, slog, "issue") as d:
        # a failed audit issues nothing: the drafts stay drafts, the adjustments pending
        if failed:
            d |= {"bills_issued": 0, "not_issued": closed.drafts, "reason": "audit failed"}
        else:
            issue_cycles(store, run_id, closed)
            d |= closed.issue_dict()
    exit_code = (
        ExitCode.AUDIT_FAILED if failed
        else ExitCode.HELD if closed.bills_held
        else ExitCode.QUARANTINED if _quarantined_since_last_success(store)
        else ExitCode.OK
    )  # fmt: skip
    with stage(store, slog, "manifest"):
        # the run's row counts and cost (a pass over its settled arrays), inputs and versions
        manifest = _manifest(
            store, run_id, key, code, params, audits, report.to_dict(), closed.billing_runs
        )
        failpoint("manifest.computed")
    snapshot = None
    if cfg.snapshot:
        with stage(store, slog, "publish") as d:
            files: dict[str, dict[str, float]] = {}
            path = publish_snapshot(
                store,
                cfg.runs,
                run_id,
                _snapshot_tables(run_id, closed.billing_runs, days),
                manifest | {"stages": slog.stages},
                {"views.sql": snapshot_views_sql(store)},
                row_group_rows={f"wholesale_days/{day.isoformat()}": DAY_ROW_GROUP_ROWS
                                for day in days},
                timings=files,
            )  # fmt: skip
            snapshot = str(path)
            d["snapshot"] = snapshot
            d["files"] = files
    manifest["stages"] = slog.stages
    failpoint("run.before_finish")
    status = "failed" if failed else "succeeded"
    store.con.execute(
        "UPDATE runs SET status = ?, exit_code = ?, finished_at = now(), manifest = ? "
        "WHERE run_id = ?",
        [status, int(exit_code), json.dumps(manifest, default=str), run_id],
    )
    t0 = time.perf_counter()
    store.con.execute("CHECKPOINT")
    checkpoint_s = round(time.perf_counter() - t0, 3)
    msg = (
        f"audit(s) failed: {', '.join(a.name for a in failed)}; "
        f"{closed.drafts} bill(s) drafted and not issued"
        if failed
        else f"run {run_id} {status}"
    )
    return NightlyResult(run_id, status, exit_code, msg, manifest, snapshot, audits, checkpoint_s)


def _quarantined_since_last_success(store: Store) -> int:
    """Files with quarantined rows (or refused whole) ingested since the last nightly run that
    succeeded: the inputs of this run, including those an attempt killed after their commit
    ingested (the next attempt sees them as duplicates but must report them the same way)."""
    row = store.con.execute(
        "SELECT count(*) FROM ingested_files WHERE status IN ('partial', 'rejected') "
        "AND ingested_at > coalesce((SELECT max(finished_at) FROM runs WHERE kind = 'nightly' "
        "AND status = 'succeeded'), TIMESTAMPTZ '-infinity')"
    ).fetchone()
    return int(row[0]) if row else 0


def _start_run(
    store: Store, run_id: str, key: str, d1: dt.date, d2: dt.date, code: str, params: dict[str, Any]
) -> int:
    """Insert (or re-open) the run row; mark other unfinished runs abandoned; return attempt."""
    with store.transaction() as con:
        con.execute(
            "UPDATE runs SET status = 'abandoned' WHERE status = 'running' AND run_id <> ?",
            [run_id],
        )
        row = con.execute("SELECT attempts FROM runs WHERE run_id = ?", [run_id]).fetchall()
        if row:
            attempt = int(row[0][0]) + 1
            con.execute(
                "UPDATE runs SET attempts = ?, status = 'running', started_at = now(), "
                "finished_at = NULL WHERE run_id = ?",
                [attempt, run_id],
            )
        else:
            attempt = 1
            con.execute(
                "INSERT INTO runs (run_id, run_key, kind, date_from, date_to, started_at, status, "
                "attempts, code_version, params) VALUES (?, ?, 'nightly', ?, ?, now(), 'running', "
                "1, ?, ?)",
                [run_id, key, d1, d2, code, json.dumps(params)],
            )
    return attempt


def _record_audits(store: Store, run_id: str, attempt: int, audits: list[AuditResult]) -> None:
    for a in audits:
        store.con.execute(
            "INSERT INTO audit_results VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, attempt, a.name, a.description, a.failing_rows, json.dumps(a.sample)],
        )


# The price array of each settled (day, region, interval length) of the run ($date_from..$date_to,
# written in as literals: through the view wholesale_days a parameter left the plan free to
# scan meter_days whole).
_RUN_PRICES = """WITH px AS (
    SELECT settlement_date, region, interval_minutes,
           list(price_per_mwh ORDER BY interval_start) AS prices
    FROM wholesale_prices WHERE settlement_date BETWEEN $date_from AND $date_to GROUP BY ALL
)"""

# The run's settled reads and wholesale cost for the manifest, from the day arrays (schema v11)
# and the day's price array per region and interval length, unnested side by side: each read's
# amount is the view's expression in the view's order (``kwh x dlf x mlf x price / 1000``), so
# the sum is ``wholesale_reads``'s up to the order of addition (the manifest rounds it to the
# cent); a NULL read or price adds nothing, as the view's NULL amounts add nothing.
# (list_dot_product would be faster, but DuckDB 1.5 refuses it when any list of the same vector
# holds a NULL, whichever rows a CASE picks: a missing price or read anywhere in the chunk.)
MANIFEST_COUNTS_SQL = """
{prices}, reads AS (
    SELECT t.dlf, t.mlf, c.suffix, unnest(d.kwh) AS kwh, unnest(p.prices) AS price
    FROM wholesale_days d
    JOIN wholesale_terms t USING (terms_id)
    JOIN meter_channels c USING (channel_id)
    LEFT JOIN px p ON p.settlement_date = d.settlement_date AND p.region = t.region
     AND p.interval_minutes = d.interval_minutes
    WHERE d.settlement_date BETWEEN $date_from AND $date_to
)
SELECT count(kwh),
       coalesce(sum(kwh * dlf * mlf * price / 1000) FILTER (suffix[1] = 'E'), 0)
FROM reads
""".replace("{prices}", _RUN_PRICES)


# Whether every settled array of the run and every price of its days is there (no NULL at all):
# then the cost is one inner product per array (list_dot_product, about 10x the unnesting
# above, which stays for runs with a missing read or price).
MANIFEST_CLEAN_SQL = """
SELECT NOT EXISTS (SELECT 1 FROM wholesale_days d WHERE settlement_date BETWEEN $date_from AND $date_to
                   AND {n_reads_d} <> 1440 // interval_minutes)
   AND NOT EXISTS (SELECT 1 FROM wholesale_prices WHERE settlement_date BETWEEN $date_from AND $date_to
                   AND price_per_mwh IS NULL)
""".replace("{n_reads_d}", n_reads_sql("d"))
MANIFEST_DOT_SQL = """
{prices}
SELECT coalesce(sum(len(d.kwh)), 0),
       coalesce(sum(list_dot_product(d.kwh, p.prices) * t.dlf * t.mlf / 1000)
                FILTER (c.suffix[1] = 'E'), 0)
FROM wholesale_days d
JOIN wholesale_terms t USING (terms_id)
JOIN meter_channels c USING (channel_id)
JOIN px p ON p.settlement_date = d.settlement_date AND p.region = t.region
 AND p.interval_minutes = d.interval_minutes
WHERE d.settlement_date BETWEEN $date_from AND $date_to
""".replace("{prices}", _RUN_PRICES)


# The store's views that the snapshot re-creates over its own Parquet files, in dependency order.
SNAPSHOT_VIEWS = ("wholesale_values", "wholesale_reads", "wholesale_settlement", "daily_charges")
# The published tables those views read (each also a Parquet file of the snapshot).
_VIEW_TABLES = (
    "wholesale_days",
    "wholesale_terms",
    "wholesale_prices",
    "settled_days",
    "meter_channels",
    "meter_flags",
    "accrual_days",
    "accrual_lines",
)
# Tables published one file per settlement day: ``wholesale_days/2024-08-31.parquet``.
_PER_DAY = {"wholesale_days": "wholesale_days/*"}
# Rows per Parquet row group of a day's array file: a row is a day of up to 288 readings, and
# a 100,000-account day written as one row group took one core 1.1-1.4 s; in row groups of
# 25,000 both cores write, 0.7-0.85 s (bench/bench_nightly.py), the file 5% larger.
DAY_ROW_GROUP_ROWS = 25_000


def snapshot_views_sql(store: Store) -> str:
    """``views.sql`` of a snapshot: the store's own view definitions over the snapshot's files.

    Each table the views read becomes a view of its Parquet file, then the definitions of
    :data:`SNAPSHOT_VIEWS` are copied from the store's catalogue (``duckdb_views()``), so the
    snapshot computes ``amount_aud`` and ``status`` by exactly the store's SQL: there is no
    second copy of it to drift. Run from inside the snapshot folder
    (``duckdb -c ".read views.sql"``); ``tests/test_nightly.py`` checks it reads back the
    store's rows.
    """
    rows = dict(
        store.con.execute(
            "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND view_name IN "
            f"({', '.join('?' for _ in SNAPSHOT_VIEWS)})",
            list(SNAPSHOT_VIEWS),
        ).fetchall()
    )
    parts = [
        "-- The run's settlement read back with the store's views (generated from the store's",
        "-- catalogue by fairshare; the snapshot is one run). Run from this folder.",
    ]
    parts += [
        f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM '{_PER_DAY.get(t, t)}.parquet';"
        for t in _VIEW_TABLES
    ]
    for name in SNAPSHOT_VIEWS:
        sql = rows[name].strip()
        parts.append(re.sub(r"^CREATE VIEW ", "CREATE OR REPLACE VIEW ", sql))
    return "\n".join(parts) + "\n"


def _snapshot_tables(
    run_id: str, billing_runs: list[int], days: list[dt.date]
) -> dict[str, tuple[str, list[Any]]]:
    """Queries (with parameters) whose results form the run's read-only snapshot.

    The settlement is published as stored (schema v11: a day array per account, channel and
    interval length, with the dictionaries, and ``views.sql`` to read it back as
    ``wholesale_values`` and ``wholesale_reads``), one file per day of the run
    (``wholesale_days/<day>.parquet``: 100,000 rows and about 34 MB for a 100,000-account day of
    5-minute reads, where one row per read was 28.8 M rows in parts of 8 M). Sorted by the
    table's key (terms, channel, interval length): the order in which a day's settlement
    stores its rows is not deterministic, and the snapshot must be the same bytes for the same
    inputs.
    The accruals of the product charges are those of the run's days (``accrual_days``,
    ``accrual_lines``). The bills are those the run issued, held, or drafted and did not issue
    (a failed audit: the auditor sees what was stopped).
    """
    issued = (
        "SELECT bill_id FROM bill_issues WHERE nightly_run_id = ? UNION ALL "
        "SELECT bill_id FROM bills WHERE list_contains(?::BIGINT[], run_id) "
        "AND status IN ('held', 'draft')"
    )
    in_run = (
        "settlement_date BETWEEN (SELECT date_from FROM runs WHERE run_id = ?) "
        "AND (SELECT date_to FROM runs WHERE run_id = ?)"
    )
    per_day: dict[str, tuple[str, list[Any]]] = {
        # the day as a literal: through the view wholesale_days (schema v14) a parameter left
        # the plan free to scan meter_days whole (a publish stage of 2.8-3.0 s against 1.5 s)
        f"wholesale_days/{day.isoformat()}": (
            with_literals(
                "SELECT * FROM wholesale_days WHERE settlement_date = $day "
                "ORDER BY terms_id, channel_id, interval_minutes",
                {"day": day},
            ),
            [],
        )
        for day in days
    }
    return per_day | {
        "wholesale_prices": (
            f"SELECT * FROM wholesale_prices WHERE {in_run} "
            "ORDER BY settlement_date, region, interval_start, interval_minutes",
            [run_id, run_id],
        ),
        "wholesale_terms": ("SELECT * FROM wholesale_terms ORDER BY terms_id", []),
        "accrual_days": (
            f"SELECT * FROM accrual_days WHERE {in_run} "
            "ORDER BY settlement_date, account, local_date",
            [run_id, run_id],
        ),
        "accrual_lines": (
            f"SELECT * FROM accrual_lines WHERE {in_run} ORDER BY settlement_date, account, "
            "local_date, line_order, detail, rate",
            [run_id, run_id],
        ),
        "settled_days": (
            f"SELECT * FROM settled_days WHERE {in_run} ORDER BY settlement_date",
            [run_id, run_id],
        ),
        "meter_channels": ("SELECT * FROM meter_channels ORDER BY channel_id", []),
        "meter_flags": ("SELECT * FROM meter_flags ORDER BY flag_id", []),
        "bills": (
            f"SELECT * EXCLUDE (created_at) FROM bills WHERE bill_id IN ({issued}) ORDER BY bill_id",
            [run_id, billing_runs],
        ),
        "bill_lines": (
            f"SELECT * FROM bill_lines WHERE bill_id IN ({issued}) ORDER BY bill_id, line_no",
            [run_id, billing_runs],
        ),
        "bill_adjustments": (
            "SELECT * FROM bill_adjustments WHERE detected_run_id = ? ORDER BY original_bill_id",
            [run_id],
        ),
        "audit_results": (
            "SELECT audit, description, failing_rows, sample FROM audit_results WHERE run_id = ? "
            "AND attempt = (SELECT attempts FROM runs WHERE run_id = ?) ORDER BY audit",
            [run_id, run_id],
        ),
    }


def _manifest(
    store: Store,
    run_id: str,
    key: str,
    code: str,
    params: dict[str, Any],
    audits: list[AuditResult],
    ingest: dict[str, Any],
    billing_runs: list[int],
) -> dict[str, Any]:
    # every input of the run key, with where the nightly archived it (several places when the
    # same bytes were delivered under several names; none when ingested outside the nightly)
    inputs = store.con.execute(
        "SELECT f.kind, f.path, f.sha256, f.rows_loaded, f.rows_quarantined, "
        "coalesce((SELECT list(a.archived_path ORDER BY a.archived_path) FROM archived_files a "
        "          WHERE a.sha256 = f.sha256), []) "
        "FROM ingested_files f ORDER BY f.file_id"
    ).fetchall()
    span = {k: dt.date.fromisoformat(str(params[k])) for k in ("date_from", "date_to")}
    clean = store.con.execute(with_literals(MANIFEST_CLEAN_SQL, span)).fetchall()[0][0]
    counts = store.con.execute(
        with_literals(MANIFEST_DOT_SQL if clean else MANIFEST_COUNTS_SQL, span)
    ).fetchall()[0]
    # the product versions this run's bills (issued or held) were priced with; the files' hashes
    # are in the parameters (and so in the run key)
    versions = store.con.execute(
        "SELECT DISTINCT v.product, v.product_version, v.kind, v.source_path "
        "FROM product_versions v JOIN bills b USING (product, product_version) "
        "WHERE list_contains(?::BIGINT[], b.run_id) ORDER BY ALL",
        [billing_runs],
    ).fetchall()
    return {
        "run_id": run_id,
        "run_key": key,
        "code_version": code,
        "runtime": runtime_versions(),
        "parameters": params,
        "inputs": [
            dict(zip(("kind", "path", "sha256", "rows", "quarantined", "archived"), r, strict=True))
            for r in inputs
        ],
        "ingest": ingest,
        "row_counts": {"wholesale_reads": counts[0]},
        "wholesale_cost_aud": round(float(counts[1]), 2),
        "product_versions": [
            dict(zip(("product", "version", "kind", "source_path"), r, strict=True))
            for r in versions
        ],
        "audits": [{"name": a.name, "failing_rows": a.failing_rows} for a in audits],
    }
