"""The store's schema as an ordered list of forward migrations.

A migration is never edited once released: a change is a new entry at the end. ``Store.open``
applies the ones a file has not seen yet, each in its own transaction, and records it in
``schema_version``. Tables ending in ``_raw`` are append-only (rows are never deleted or edited
except for the derived ``is_current`` flag); analysts query the public views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from settlement.schema_accruals import ACCRUALS_V8_SQL
from settlement.schema_bills import BILL_KIND_V15_SQL, BILLS_V5_SQL
from settlement.schema_days import DAY_SUMS_V16_SQL, DAYS_V10_SQL, N_READS_V12_SQL, fill_days
from settlement.schema_meter import METER_V4_SQL
from settlement.schema_nightly import NIGHTLY_SQL
from settlement.schema_wholesale import WHOLESALE_V6_SQL
from settlement.schema_wholesale_days import (
    WHOLESALE_DAYS_V11_SQL,
    WHOLESALE_N_READS_V13_SQL,
    fill_wholesale_days,
)
from settlement.schema_wholesale_refs import WHOLESALE_REFS_V14_SQL


@dataclass(frozen=True)
class Migration:
    """One forward step of the schema: its SQL, then (optionally) ``fill``, a function of the
    connection that moves data in batches where one statement would hold it all in memory.
    Both run in the migration's transaction."""

    version: int
    description: str
    sql: str
    fill: Callable[[duckdb.DuckDBPyConnection], None] | None = None


_V1 = """
CREATE SEQUENCE file_id_seq START 1;
CREATE TABLE ingested_files (
    file_id          BIGINT PRIMARY KEY,
    kind             VARCHAR NOT NULL,          -- meter | prices | customers
    path             VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    size_bytes       BIGINT NOT NULL,
    ingested_at      TIMESTAMPTZ NOT NULL,
    status           VARCHAR NOT NULL,          -- loaded | partial | rejected
    rows_loaded      BIGINT NOT NULL DEFAULT 0,
    rows_duplicate   BIGINT NOT NULL DEFAULT 0,
    rows_quarantined BIGINT NOT NULL DEFAULT 0,
    format           VARCHAR,
    warnings         VARCHAR[],
    UNIQUE (kind, sha256)
);

CREATE TABLE quarantine (
    file_id        BIGINT NOT NULL,
    source_file    VARCHAR NOT NULL,
    source_line    INTEGER,                     -- NULL when the whole file is refused
    record_type    VARCHAR,
    field          VARCHAR,
    reason         VARCHAR NOT NULL,
    raw            VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE meter_reads_raw (
    nmi              VARCHAR NOT NULL,
    suffix           VARCHAR NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,      -- UTC
    interval_minutes SMALLINT NOT NULL,
    kwh              DOUBLE NOT NULL,
    quality          VARCHAR NOT NULL,          -- A E S F N V(resolved per interval)
    method           VARCHAR,
    reason           VARCHAR,
    version_at       TIMESTAMPTZ NOT NULL,      -- UpdateDateTime (or fallback, see docs)
    file_id          BIGINT NOT NULL,
    source_line      INTEGER NOT NULL,
    is_current       BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE price_reads_raw (
    region           VARCHAR NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,      -- UTC
    interval_minutes SMALLINT NOT NULL,
    price_per_mwh    DOUBLE NOT NULL,
    version_at       TIMESTAMPTZ NOT NULL,      -- LASTCHANGED where the file has it, else ingest time
    file_id          BIGINT NOT NULL,
    source_line      INTEGER NOT NULL,
    is_current       BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE market_price_thresholds (
    effective_from           DATE NOT NULL,
    effective_to             DATE,              -- exclusive; NULL = open
    market_price_cap         DOUBLE NOT NULL,   -- $/MWh
    market_price_floor       DOUBLE NOT NULL,   -- $/MWh
    cumulative_price_threshold DOUBLE,          -- $ over 2,016 intervals (7 days of 5 min)
    administered_price_cap   DOUBLE,
    source                   VARCHAR NOT NULL
);
INSERT INTO market_price_thresholds VALUES
 ('2019-07-01','2020-07-01',14700,-1000,NULL,300,'AEMO MMS MARKET_PRICE_THRESHOLDS (VOLL 14700, floor -1000); DOMAIN.md 3'),
 ('2020-07-01','2021-07-01',15000,-1000,NULL,300,'AEMO MMS MARKET_PRICE_THRESHOLDS (VOLL 15000, floor -1000); DOMAIN.md 3'),
 ('2021-07-01','2022-07-01',15100,-1000,NULL,300,'AEMC reliability settings FY2021-22 via DOMAIN.md 3'),
 ('2022-07-01','2023-07-01',15500,-1000,NULL,600,'AEMC reliability settings FY2022-23 via DOMAIN.md 3'),
 ('2023-07-01','2024-07-01',16600,-1000,NULL,600,'AEMC reliability settings FY2023-24 via DOMAIN.md 3'),
 ('2024-07-01','2025-07-01',17500,-1000,NULL,600,'AEMC reliability settings FY2024-25 via DOMAIN.md 3'),
 ('2025-07-01',NULL,20300,-1000,NULL,600,'FY2025-26 cap from secondary sources, DOMAIN.md 3');

CREATE TABLE customers_raw (
    account            VARCHAR NOT NULL,
    nmi                VARCHAR NOT NULL,
    region             VARCHAR NOT NULL,
    timezone           VARCHAR NOT NULL,
    dlf                DOUBLE NOT NULL,
    mlf                DOUBLE NOT NULL,
    billing_cycle      VARCHAR NOT NULL,        -- monthly | quarterly
    cycle_day          SMALLINT NOT NULL,       -- 1..28
    move_in            DATE NOT NULL,
    move_out           DATE,                    -- exclusive; NULL = still supplied
    solar_kw           DOUBLE NOT NULL,
    battery_kwh        DOUBLE NOT NULL,
    battery_kw         DOUBLE NOT NULL,
    backup_reserve_pct DOUBLE NOT NULL,
    ev                 BOOLEAN NOT NULL,
    concession         BOOLEAN NOT NULL,
    vpp_contract       VARCHAR,
    file_id            BIGINT NOT NULL,
    source_line        INTEGER NOT NULL
);

CREATE TABLE enrolments_raw (
    account        VARCHAR NOT NULL,
    product        VARCHAR NOT NULL,
    effective_from DATE NOT NULL,
    effective_to   DATE,                        -- exclusive; NULL = open
    file_id        BIGINT NOT NULL,
    source_line    INTEGER NOT NULL
);

CREATE VIEW meter_reads AS
SELECT r.nmi, r.suffix, r.interval_start, r.interval_minutes, r.kwh, r.quality, r.method,
       r.reason, r.version_at, f.path AS source_file, r.source_line
FROM meter_reads_raw r JOIN ingested_files f USING (file_id)
WHERE r.is_current;

CREATE MACRO meter_reads_as_of(t) AS TABLE
SELECT r.nmi, r.suffix, r.interval_start, r.interval_minutes, r.kwh, r.quality, r.method,
       r.reason, r.version_at, f.path AS source_file, r.source_line
FROM meter_reads_raw r JOIN ingested_files f USING (file_id)
WHERE f.ingested_at <= t
QUALIFY row_number() OVER (PARTITION BY r.nmi, r.suffix, r.interval_start
                           ORDER BY r.version_at DESC, r.file_id DESC, r.source_line DESC) = 1;

CREATE VIEW prices AS
SELECT p.region, p.interval_start, p.interval_minutes, p.price_per_mwh, f.path AS source_file
FROM price_reads_raw p JOIN ingested_files f USING (file_id)
WHERE p.is_current;

CREATE MACRO prices_as_of(t) AS TABLE
SELECT p.region, p.interval_start, p.interval_minutes, p.price_per_mwh, f.path AS source_file
FROM price_reads_raw p JOIN ingested_files f USING (file_id)
WHERE f.ingested_at <= t
QUALIFY row_number() OVER (PARTITION BY p.region, p.interval_start, p.interval_minutes
                           ORDER BY p.version_at DESC, p.file_id DESC, p.source_line DESC) = 1;

-- Customers: the latest customer file that mentions an account defines it (whole-account replace).
CREATE VIEW customers AS
SELECT c.* EXCLUDE (file_id, source_line), f.path AS source_file, c.source_line
FROM customers_raw c JOIN ingested_files f USING (file_id)
QUALIFY c.file_id = max(c.file_id) OVER (PARTITION BY c.account);

CREATE VIEW enrolments AS
SELECT e.account, e.product, e.effective_from, e.effective_to, f.path AS source_file, e.source_line
FROM enrolments_raw e JOIN ingested_files f USING (file_id)
QUALIFY e.file_id = max(e.file_id) OVER (PARTITION BY e.account);
"""

_V2 = """
CREATE SEQUENCE bill_run_seq START 1;
CREATE TABLE billing_runs (
    run_id        BIGINT PRIMARY KEY,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    data_as_of    TIMESTAMPTZ NOT NULL,         -- reads/prices as known at this instant
    period_start  DATE NOT NULL,
    period_end    DATE NOT NULL,                -- exclusive
    shadow        BOOLEAN NOT NULL,
    status        VARCHAR NOT NULL,             -- running | done | failed
    bills         INTEGER NOT NULL DEFAULT 0,
    bills_held    INTEGER NOT NULL DEFAULT 0,
    notes         VARCHAR
);

-- Every product version a run used, with its full text, so any bill can be recomputed.
CREATE TABLE product_versions (
    product         VARCHAR NOT NULL,
    product_version VARCHAR NOT NULL,           -- sha256 of the file text, first 12 hex digits
    kind            VARCHAR NOT NULL,
    source_path     VARCHAR NOT NULL,
    content         VARCHAR NOT NULL,
    first_run_id    BIGINT NOT NULL,
    PRIMARY KEY (product, product_version)
);

CREATE TABLE bills (
    bill_id             VARCHAR PRIMARY KEY,
    run_id              BIGINT NOT NULL,
    account             VARCHAR NOT NULL,
    nmi                 VARCHAR NOT NULL,
    period_start        DATE NOT NULL,          -- first day billed on this product
    period_end          DATE NOT NULL,          -- exclusive
    cycle_start         DATE NOT NULL,          -- the account's billing cycle
    cycle_end           DATE NOT NULL,          -- exclusive
    product             VARCHAR NOT NULL,
    product_version     VARCHAR NOT NULL,
    currency            VARCHAR NOT NULL,
    total_ex_gst        DECIMAL(18,2),          -- NULL only while held
    gst                 DECIMAL(18,2),
    total_inc_gst       DECIMAL(18,2),
    status              VARCHAR NOT NULL,       -- draft | held | shadow | superseded | issued
    hold_reason         VARCHAR,
    estimated_intervals INTEGER NOT NULL DEFAULT 0,
    shadow              BOOLEAN NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE bill_lines (
    bill_id        VARCHAR NOT NULL,
    line_no        INTEGER NOT NULL,
    component      VARCHAR NOT NULL,
    detail         VARCHAR NOT NULL,
    quantity       DOUBLE NOT NULL,
    unit           VARCHAR NOT NULL,
    rate           DOUBLE,                      -- NULL when no kWh (spot-linked average)
    amount_ex_gst  DECIMAL(18,2) NOT NULL,
    gst            DECIMAL(18,2) NOT NULL,
    amount_inc_gst DECIMAL(18,2) NOT NULL,
    taxable        BOOLEAN NOT NULL,
    date_from      DATE NOT NULL,
    date_to        DATE NOT NULL,               -- inclusive
    n_intervals    BIGINT NOT NULL,
    explanation    VARCHAR NOT NULL,
    PRIMARY KEY (bill_id, line_no)
);

-- Audits: each must return no rows after a run.
CREATE VIEW audit_bill_line_sums AS
SELECT b.bill_id, b.total_ex_gst, b.gst, sum(l.amount_ex_gst) AS lines_ex, sum(l.gst) AS lines_gst
FROM bills b JOIN bill_lines l USING (bill_id)
GROUP BY b.bill_id, b.total_ex_gst, b.gst, b.total_inc_gst
HAVING sum(l.amount_ex_gst) <> b.total_ex_gst OR sum(l.gst) <> b.gst
    OR b.total_inc_gst <> b.total_ex_gst + b.gst;

CREATE VIEW audit_duplicate_bills AS
SELECT run_id, account, period_start, product, count(*) AS n
FROM bills GROUP BY run_id, account, period_start, product HAVING count(*) > 1;

CREATE VIEW audit_feed_in_gst AS
SELECT bill_id, line_no, component FROM bill_lines WHERE NOT taxable AND gst <> 0;
"""

# The nightly moves each input file from its inbox to the archive once its data is committed:
# ingested_files.path is where it was read, archived_files where it now is (one file's bytes can
# be delivered, and archived, under several names).
#
# meter_reads_as_of(t) until v6 kept the newest reading per (channel, interval start) only, so a
# day re-sent at another interval length returned both lengths' readings where their starts
# differ (a 5-minute day revised at 30 minutes: 48 new readings plus 240 old ones, the energy
# counted twice). From v7 it applies ingestion's rule (data/formats/nem12.md, "Versions") to the
# readings known at t: a reading stands unless a reading of its channel whose span overlaps it is
# newer by (version_at, file, line); the pairwise test is only made on channel days that hold
# two lengths (found among the days with a superseded reading: a cheap scan of is_current).
# meter_reads_as_of(now()) is meter_reads.
ARCHIVED_V7_SQL = """
DROP MACRO TABLE meter_reads_as_of;
CREATE MACRO meter_reads_as_of(t) AS TABLE
WITH latest AS (
    -- the newest known reading per start (as until v6: a filter on nmi, suffix or
    -- interval_start reaches the scan through this window's partition)
    SELECT c.nmi, c.suffix, v.channel_id, v.interval_start, v.interval_minutes, v.kwh,
           v.flag_id, v.version_at, v.file_id, v.source_line
    FROM meter_values v JOIN meter_channels c USING (channel_id)
    JOIN ingested_files f USING (file_id)
    WHERE f.ingested_at <= t
    QUALIFY row_number() OVER (PARTITION BY c.nmi, c.suffix, v.interval_start
                               ORDER BY v.version_at DESC, v.file_id DESC,
                                        v.source_line DESC) = 1
), revised AS (
    -- channel days holding a superseded reading: two lengths of one day cannot both be current
    -- (audit meter_no_overlapping_current_reads), so only these can hold two lengths
    SELECT DISTINCT channel_id, (epoch_us(interval_start) // 1000000 + 36000) // 86400 AS day_no
    FROM meter_values WHERE NOT is_current
), known AS (
    SELECT v.*, (epoch_us(v.interval_start) // 1000000 + 36000) // 86400 AS day_no
    FROM meter_values v JOIN ingested_files f USING (file_id)
    WHERE f.ingested_at <= t AND v.channel_id IN (SELECT channel_id FROM revised)
), mixed AS (
    SELECT channel_id, day_no FROM known SEMI JOIN revised USING (channel_id, day_no)
    GROUP BY ALL HAVING min(interval_minutes) < max(interval_minutes)
), beaten AS (
    -- readings of such days with a newer known reading overlapping them (ingestion's rule)
    SELECT DISTINCT a.channel_id, a.interval_start, a.file_id, a.source_line
    FROM (SELECT * FROM known SEMI JOIN mixed USING (channel_id, day_no)) a
    JOIN (SELECT * FROM known SEMI JOIN mixed USING (channel_id, day_no)) b
      ON b.channel_id = a.channel_id AND b.day_no = a.day_no
     AND a.interval_start < b.interval_start + to_minutes(b.interval_minutes)
     AND b.interval_start < a.interval_start + to_minutes(a.interval_minutes)
     AND (b.version_at > a.version_at
          OR (b.version_at = a.version_at
              AND (b.file_id > a.file_id
                   OR (b.file_id = a.file_id AND b.source_line > a.source_line))))
)
SELECT l.nmi, l.suffix, l.interval_start, l.interval_minutes, l.kwh, fl.quality, fl.method,
       fl.reason, l.version_at, f.path AS source_file, l.source_line
FROM latest l
JOIN meter_flags fl USING (flag_id)
JOIN ingested_files f USING (file_id)
WHERE NOT EXISTS (SELECT 1 FROM beaten x
                  WHERE x.channel_id = l.channel_id AND x.interval_start = l.interval_start
                    AND x.file_id = l.file_id AND x.source_line = l.source_line);

-- The back-billing write-off, stored (it was -(credit + rebill), the whole undercharge, and
-- only for a bill wholly past the limit; a bill the limit cuts part-way is now written off for
-- its days past it, pro rata), and the limit each adjustment was decided against.
ALTER TABLE bill_adjustments ADD COLUMN writeoff_ex_gst DECIMAL(18,2) DEFAULT 0;
ALTER TABLE bill_adjustments ADD COLUMN writeoff_gst DECIMAL(18,2) DEFAULT 0;
ALTER TABLE bill_adjustments ADD COLUMN limit_date DATE;
UPDATE bill_adjustments SET writeoff_ex_gst = -(credit_ex_gst + rebill_ex_gst),
                            writeoff_gst = -(credit_gst + rebill_gst)
WHERE status LIKE '%written_off';
-- the limit as the old rule used it: past the whole period when written off, before it if not
UPDATE bill_adjustments a
SET limit_date = CASE WHEN a.status LIKE '%written_off' THEN b.period_end ELSE b.period_start END
FROM bills b WHERE b.bill_id = a.original_bill_id;

CREATE TABLE archived_files (
    sha256        VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,
    inbox_path    VARCHAR NOT NULL,
    archived_path VARCHAR NOT NULL,
    archived_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sha256, archived_path)
);
"""

# A file's content key (v9): the SHA-256 of its content as text, decompressed (gzip, zip) with
# CRLF line ends as LF. The same prices delivered again in another container or with other line
# ends are the same file: before v9 a gzip or CRLF copy of an old price file, having new bytes,
# was loaded as the newest version of its prices and undid the revision in between.
CONTENT_V9_SQL = """
ALTER TABLE ingested_files ADD COLUMN content_sha256 VARCHAR;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "store: files, quarantine, meter reads, prices, thresholds, customers", _V1),
    Migration(2, "billing: runs, product versions, bills, bill lines, audits", _V2),
    Migration(3, "nightly: runs, stages, audits, wholesale settlement", NIGHTLY_SQL),
    Migration(
        4, "meter readings as numbers: meter_values, meter_channels, meter_flags", METER_V4_SQL
    ),
    Migration(5, "bills and bill lines without key indexes; uniqueness audited", BILLS_V5_SQL),
    Migration(
        6,
        "wholesale settlement as numbers: wholesale_values, wholesale_terms, wholesale_prices",
        WHOLESALE_V6_SQL,
    ),
    Migration(
        7,
        "archived_files; meter_reads_as_of applies the overlap rule across interval lengths; "
        "back-billing write-offs stored, pro rata by days",
        ARCHIVED_V7_SQL,
    ),
    Migration(
        8,
        "nightly accruals of product charges: accrual_days, accrual_lines, view daily_charges",
        ACCRUALS_V8_SQL,
    ),
    Migration(
        9,
        "ingested_files.content_sha256: price files known by their content, whatever container",
        CONTENT_V9_SQL,
    ),
    Migration(
        10,
        "meter_days: readings as day arrays (one row per channel, market day and version), "
        "derived from meter_values",
        DAYS_V10_SQL,
        fill_days,
    ),
    Migration(
        11,
        "wholesale_days: the settlement as day arrays; wholesale_values becomes a view",
        WHOLESALE_DAYS_V11_SQL,
        fill_wholesale_days,
    ),
    Migration(
        12,
        "meter_days.n_reads: the count of slots with a reading",
        N_READS_V12_SQL,
    ),
    Migration(
        13,
        "wholesale_days.n_reads: the count of slots with a read, copied from meter_days",
        WHOLESALE_N_READS_V13_SQL,
    ),
    Migration(
        14,
        "wholesale_day_rows: a settled day refers to its meter_days array (file_id, "
        "source_line) instead of copying it; wholesale_days becomes a view that resolves it",
        WHOLESALE_REFS_V14_SQL,
    ),
    Migration(
        15,
        "bills.kind: 'cycle' for a billing cycle's bill, 'final_adjustment' for the bill that "
        "carries a moved-out account's adjustments",
        BILL_KIND_V15_SQL,
    ),
    Migration(
        16,
        "meter_days.kwh_sum: the sum of a day row's readings, for the energy audits",
        DAY_SUMS_V16_SQL,
    ),
)

LATEST_VERSION: int = max(m.version for m in MIGRATIONS)
