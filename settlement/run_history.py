"""The nightly runs as an operator reads them: which ran, how each ended, what it did.

Everything here reads the store's run bookkeeping (``runs``, ``run_stages``,
``audit_results``), written by :mod:`settlement.nightly`; nothing is recomputed. A run's figures
come from its stage rows of its last attempt, which exist for every stage that finished, so a
run killed part way (status ``running`` until the next run marks it ``abandoned``) still shows
how far it got.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from settlement.store import Store
from tariffs.errors import ConfigError

# The stages' figures a run's row shows, by stage and detail name (run_stages.details).
_FIGURES = {
    "rows_loaded": ("ingest", "rows_loaded"),
    "rows_quarantined": ("ingest", "rows_quarantined"),
    "bills_drafted": ("bill", "drafts"),
    "bills_held": ("bill", "bills_held"),
    "adjustments": ("bill", "adjustments"),
    "bills_issued": ("issue", "bills_issued"),
}

RUNS_SQL = """
WITH last AS (
    SELECT s.run_id, s.stage, s.seconds, s.details
    FROM run_stages s JOIN runs r ON r.run_id = s.run_id AND s.attempt = r.attempts
), audits AS (
    SELECT a.run_id, count(*) AS audits,
           string_agg(a.audit, ', ' ORDER BY a.audit) FILTER (a.failing_rows > 0) AS failed
    FROM audit_results a JOIN runs r ON r.run_id = a.run_id AND a.attempt = r.attempts
    GROUP BY ALL
)
SELECT r.run_id, r.date_from, r.date_to, r.status, r.exit_code, r.attempts, r.started_at,
       r.finished_at,
       (SELECT round(sum(l.seconds), 3) FROM last l WHERE l.run_id = r.run_id) AS stage_seconds,
       {figures},
       coalesce(a.audits, 0) AS audits, a.failed AS failed_audits,
       (SELECT l.details->>'snapshot' FROM last l
        WHERE l.run_id = r.run_id AND l.stage = 'publish') AS snapshot
FROM runs r LEFT JOIN audits a USING (run_id)
WHERE r.kind = 'nightly' AND r.date_to >= $date_from AND r.date_from <= $date_to
  AND ($status IS NULL OR r.status = $status) AND ($run_id IS NULL OR r.run_id = $run_id)
ORDER BY r.started_at DESC, r.run_id
LIMIT $limit
""".replace(
    "{figures}",
    ",\n       ".join(
        f"(SELECT (l.details->>'{detail}')::BIGINT FROM last l WHERE l.run_id = r.run_id"
        f" AND l.stage = '{stage}') AS {name}"
        for name, (stage, detail) in _FIGURES.items()
    ),
)

STATUSES = ("running", "succeeded", "failed", "abandoned")


def list_runs(
    store: Store,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    status: str | None = None,
    limit: int = 50,
    run_id: str | None = None,
) -> pl.DataFrame:
    """The nightly runs whose market days meet ``date_from``..``date_to`` (either open), newest
    first, at most ``limit``: range, status, exit code, attempts, times, the seconds of the last
    attempt's stages, rows loaded and quarantined, bills drafted, held and issued, adjustments,
    audits run and the names of those that failed, and the snapshot folder. ``run_id``: that
    run only."""
    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status {status!r}: one of {', '.join(STATUSES)}")
    if limit < 1:
        raise ConfigError(f"--limit {limit}: at least 1")
    return store.con.execute(
        RUNS_SQL,
        {
            "date_from": date_from or dt.date.min,
            "date_to": date_to or dt.date.max,
            "status": status,
            "limit": limit,
            "run_id": run_id,
        },
    ).pl()


@dataclass
class RunDetail:
    """One run: its row of :func:`list_runs`, every attempt's stages, its last attempt's audits,
    its parameters and its manifest (``None`` until the run finished)."""

    run: dict[str, Any]
    stages: pl.DataFrame  # attempt, stage, started_at, seconds, peak_rss_mb, status, details
    audits: pl.DataFrame  # audit, description, failing_rows, sample
    params: dict[str, Any]
    manifest: dict[str, Any] | None


def run_detail(store: Store, run_id: str) -> RunDetail:
    """Everything the store keeps about nightly run ``run_id``; a clear error when there is none."""
    import json

    runs = list_runs(store, run_id=run_id)
    if runs.is_empty():
        raise ConfigError(f"no run {run_id!r} (see: fairshare runs list)")
    params, manifest = store.con.execute(
        "SELECT params, manifest FROM runs WHERE run_id = ?", [run_id]
    ).fetchall()[0]
    stages = store.con.execute(
        "SELECT attempt, stage, started_at, seconds, peak_rss_mb, status, details::VARCHAR AS"
        " details FROM run_stages WHERE run_id = ? ORDER BY attempt, started_at",
        [run_id],
    ).pl()
    audits = store.con.execute(
        "SELECT a.audit, a.description, a.failing_rows, a.sample::VARCHAR AS sample"
        " FROM audit_results a JOIN runs r ON r.run_id = a.run_id AND a.attempt = r.attempts"
        " WHERE a.run_id = ? ORDER BY a.audit",
        [run_id],
    ).pl()
    return RunDetail(
        runs.row(0, named=True),
        stages,
        audits,
        json.loads(params) if params else {},
        json.loads(manifest) if manifest else None,
    )
