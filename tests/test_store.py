"""The store opens, migrates forward once, and refuses a second writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from settlement.schema import LATEST_VERSION
from settlement.store import Store


def test_new_store_is_migrated_to_latest(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as s:
        assert s.schema_version() == LATEST_VERSION
    with Store.open(tmp_path / "s.duckdb") as s:
        assert s.migrate() == []  # nothing left to apply


def test_thresholds_seeded_with_domain_caps(store: Store) -> None:
    caps = store.con.execute(
        "SELECT year(effective_from), market_price_cap FROM market_price_thresholds ORDER BY 1"
    ).fetchall()
    assert dict(caps)[2023] == 16600.0  # FY24 cap, DOMAIN.md section 3
    assert dict(caps)[2024] == 17500.0


def test_second_writer_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store.open(db):
        code = (
            "import sys; from settlement.store import Store\n"
            "from tariffs.errors import LockHeldError\n"
            f"try:\n    Store.open({str(db)!r})\nexcept LockHeldError:\n    sys.exit(5)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert proc.returncode == 5, proc.stderr.decode()


def test_a_missing_middle_migration_is_applied(tmp_path: Path) -> None:
    """A file that has v1 and v3 but not v2 gets v2 (migrations are applied by set)."""
    from settlement.schema import MIGRATIONS

    db = tmp_path / "s.duckdb"
    with Store.open(db) as s:
        s.con.execute("DELETE FROM schema_version WHERE version = 2")
        s.con.execute("DROP VIEW audit_feed_in_gst")  # one of v2's objects, recreated below
        s.con.execute("DROP VIEW audit_duplicate_bills; DROP VIEW audit_bill_line_sums")
        s.con.execute("DROP TABLE bill_lines; DROP TABLE bills; DROP TABLE product_versions")
        s.con.execute("DROP TABLE billing_runs; DROP SEQUENCE bill_run_seq")
    with Store.open(db) as s:
        versions = [
            r[0] for r in s.con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        ]
        assert versions == sorted(m.version for m in MIGRATIONS)
        assert s.con.execute("SELECT count(*) FROM bills").fetchall() == [(0,)]
