"""Run bookkeeping: run keys, code version, stage timings, manifests and read-only snapshots."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from settlement.failpoints import failpoint
from settlement.store import Store

PACKAGES = ("tariffs", "settlement", "risk")
# The libraries whose versions can change a run's numbers: the engines (DuckDB, polars, numpy),
# the product validation (pydantic) and the calendars (public holidays; time-zone rules in
# Python's zoneinfo, read from the tzdata package where the system has none).
RUNTIME_PACKAGES = ("duckdb", "polars", "numpy", "pydantic", "holidays", "tzdata")


def runtime_versions() -> dict[str, str]:
    """Python's and each of :data:`RUNTIME_PACKAGES`' installed version (``"absent"`` if not)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in RUNTIME_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def code_version() -> str:
    """``fairshare <version>+<hash>``: 12 hex digits of the sha256 of the package sources and of
    :func:`runtime_versions`, so a run under another DuckDB, polars or holiday calendar is a new
    run (the manifest lists the versions)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("fairshare")
    except PackageNotFoundError:
        ver = "0+unknown"
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    h.update(json.dumps(runtime_versions(), sort_keys=True).encode())
    return f"{ver}+{h.hexdigest()[:12]}"


def run_key(store: Store, params: dict[str, Any], code: str) -> str:
    """Hash of every ingested input (kind, sha256), the parameters and the code version."""
    files = store.con.execute(
        "SELECT kind, sha256 FROM ingested_files ORDER BY kind, sha256"
    ).fetchall()
    blob = json.dumps(
        {"inputs": files, "params": params, "code": code}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far [MiB]."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StageLog:
    """Timings and details of the stages of one run attempt."""

    run_id: str
    attempt: int
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


# The figures every stage record has; a stage's details take other names.
STAGE_KEYS = frozenset({"seconds", "cpu_seconds", "peak_rss_mb", "status"})


@contextmanager
def stage(store: Store, log: StageLog, name: str) -> Iterator[dict[str, Any]]:
    """Time a stage; the yielded dict collects its details; recorded in ``run_stages``."""
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    details: dict[str, Any] = {}
    status = "failed"
    try:
        yield details
        clash = STAGE_KEYS & details.keys()
        if clash:  # a detail would overwrite the stage's own figure (a programming error)
            raise ValueError(f"stage {name!r}: details may not be named {sorted(clash)}")
        status = "done"
    finally:
        seconds = time.perf_counter() - t0
        rss = peak_rss_mb()
        log.stages[name] = {
            "seconds": round(seconds, 3),
            # CPU of every thread of the process (DuckDB's, the parser's): over ``seconds``,
            # how many cores the stage kept busy
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "peak_rss_mb": round(rss, 1),
            "status": status,
            **{k: v for k, v in details.items() if k not in STAGE_KEYS},
        }
        store.con.execute(
            "INSERT INTO run_stages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                log.run_id,
                log.attempt,
                name,
                started,
                seconds,
                rss,
                status,
                json.dumps(details, default=str),
            ],
        )


def publish_snapshot(
    store: Store,
    runs_dir: Path,
    run_id: str,
    tables: dict[str, tuple[str, list[Any]]],
    manifest: dict[str, Any],
    texts: dict[str, str] | None = None,
    row_group_rows: dict[str, int] | None = None,
    timings: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Write each query's result as read-only Parquet plus ``manifest.json`` and the ``texts``
    (file name -> content, e.g. SQL that opens the snapshot), atomically. A table name with a
    slash (``"wholesale_days/2024-08-31"``) is a file in a sub-folder. ``row_group_rows``
    (table name -> rows) sets a table's Parquet row group size; DuckDB writes one row group per
    thread at a time, so a table of a few large rows (day arrays) written as one row group
    keeps one core busy. ``timings``, when given, receives each table's write time and file
    size (``{name: {"seconds": s, "mb": m}}``), for the run's stage log.

    Files go to ``runs_dir/.staging-<run_id>`` and the folder is renamed to ``runs_dir/<run_id>``
    only when complete, so a reader never sees a half-written snapshot. An existing snapshot of
    the same run id is replaced (same inputs give the same content).
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging = runs_dir / f".staging-{run_id}"
    final = runs_dir / run_id
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, (sql, params) in tables.items():
        target = staging / f"{name}.parquet"  # a name "folder/part" writes folder/part.parquet
        target.parent.mkdir(exist_ok=True)
        literal = str(target).replace("'", "''")  # COPY's file name cannot be a parameter
        rows = int((row_group_rows or {}).get(name, 122_880))  # DuckDB's default
        t0 = time.perf_counter()
        store.con.execute(
            f"COPY ({sql}) TO '{literal}' "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {rows})",
            params,
        )
        if timings is not None:
            timings[name] = {
                "seconds": round(time.perf_counter() - t0, 3),
                "mb": round(target.stat().st_size / 1e6, 2),
            }
        target.chmod(0o444)
    files = {"manifest.json": json.dumps(manifest, indent=2, default=str) + "\n", **(texts or {})}
    for name, text in files.items():
        (staging / name).write_text(text)
        (staging / name).chmod(0o444)
    failpoint("publish.before_rename")
    if final.exists():
        _make_writable(final)
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def _make_writable(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_dir():
            _make_writable(p)
        else:
            p.chmod(0o644)


def clean_staging(runs_dir: Path) -> list[Path]:
    """Remove half-written snapshots left by a killed run; return what was removed."""
    if not runs_dir.is_dir():
        return []
    left = [p for p in runs_dir.glob(".staging-*") if p.is_dir()]
    for p in left:
        _make_writable(p)
        shutil.rmtree(p)
    return left
