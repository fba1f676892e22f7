"""Schema of the nightly run (runs, stages, audits, wholesale settlement); wired as a migration."""

from __future__ import annotations

NIGHTLY_SQL = """
CREATE TABLE runs (
    run_id       VARCHAR PRIMARY KEY,          -- derived from the run key: same inputs, same id
    run_key      VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,             -- nightly
    date_from    DATE NOT NULL,
    date_to      DATE NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    status       VARCHAR NOT NULL,             -- running | succeeded | failed | abandoned
    exit_code    INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 1,
    code_version VARCHAR NOT NULL,
    params       JSON,
    manifest     JSON
);
CREATE TABLE run_stages (
    run_id      VARCHAR NOT NULL,
    attempt     INTEGER NOT NULL,
    stage       VARCHAR NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    seconds     DOUBLE,
    peak_rss_mb DOUBLE,
    status      VARCHAR NOT NULL,              -- running | done | failed
    details     JSON
);
CREATE TABLE audit_results (
    run_id       VARCHAR NOT NULL,
    attempt      INTEGER NOT NULL,
    audit        VARCHAR NOT NULL,
    description  VARCHAR NOT NULL,
    failing_rows BIGINT NOT NULL,
    sample       JSON
);
CREATE TABLE settled_days (
    settlement_date   DATE PRIMARY KEY,        -- NEM market day
    run_id            VARCHAR NOT NULL,
    input_max_file_id BIGINT NOT NULL          -- newest ingested file the day was settled with
);
CREATE TABLE wholesale_reads (
    account          VARCHAR NOT NULL,
    nmi              VARCHAR NOT NULL,
    suffix           VARCHAR NOT NULL,         -- E* import (cost), B* export (spot value)
    region           VARCHAR NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,
    interval_minutes SMALLINT NOT NULL,
    settlement_date  DATE NOT NULL,            -- NEM market day (UTC+10)
    kwh              DOUBLE NOT NULL,
    dlf              DOUBLE NOT NULL,
    mlf              DOUBLE NOT NULL,
    price_per_mwh    DOUBLE,                   -- NULL when prices do not cover the interval
    amount_aud       DOUBLE,                   -- kwh x dlf x mlf x price / 1000
    quality          VARCHAR NOT NULL,
    status           VARCHAR NOT NULL,         -- ok | estimated | missing_price
    run_id           VARCHAR NOT NULL
);
-- Per account interval: what analysts query (the pivot of wholesale_reads).
CREATE VIEW wholesale_settlement AS
SELECT account, nmi, region, interval_start, interval_minutes, settlement_date,
       coalesce(sum(kwh) FILTER (suffix[1] = 'E'), 0) AS import_kwh,
       coalesce(sum(kwh) FILTER (suffix[1] = 'B'), 0) AS export_kwh,
       any_value(dlf) AS dlf, any_value(mlf) AS mlf, any_value(price_per_mwh) AS price_per_mwh,
       CASE WHEN bool_and(amount_aud IS NOT NULL)
            THEN coalesce(sum(amount_aud) FILTER (suffix[1] = 'E'), 0) END AS cost_aud,
       CASE WHEN bool_and(amount_aud IS NOT NULL)
            THEN coalesce(sum(amount_aud) FILTER (suffix[1] = 'B'), 0) END AS export_value_aud,
       bool_or(status = 'estimated') AS estimated,
       CASE WHEN bool_or(status = 'missing_price') THEN 'missing_price'
            WHEN bool_or(status = 'estimated') THEN 'estimated' ELSE 'ok' END AS status,
       any_value(run_id) AS run_id
FROM wholesale_reads
GROUP BY account, nmi, region, interval_start, interval_minutes, settlement_date;

-- Bills issued by a nightly run, with the content hash audited on every later run.
CREATE TABLE bill_issues (
    bill_id           VARCHAR PRIMARY KEY,
    nightly_run_id    VARCHAR NOT NULL,
    input_max_file_id BIGINT NOT NULL,         -- newest ingested file when the bill was issued
    content_sha256    VARCHAR NOT NULL
);
-- Corrections of issued bills: a credit and a rebill, applied as lines on the next bill.
CREATE TABLE bill_adjustments (
    original_bill_id   VARCHAR NOT NULL,       -- the issued bill being corrected
    rebill_bill_id     VARCHAR,                -- the recomputation (status 'rebill')
    account            VARCHAR NOT NULL,
    detected_run_id    VARCHAR NOT NULL,
    detected_file_id   BIGINT NOT NULL,        -- newest ingested file at detection (orders revisions)
    credit_ex_gst      DECIMAL(18,2) NOT NULL,
    credit_gst         DECIMAL(18,2) NOT NULL,
    rebill_ex_gst      DECIMAL(18,2) NOT NULL,
    rebill_gst         DECIMAL(18,2) NOT NULL,
    status             VARCHAR NOT NULL,       -- pending | pending_written_off | applied | applied_written_off | held
    hold_reason        VARCHAR NOT NULL,
    applied_to_bill_id VARCHAR,
    PRIMARY KEY (original_bill_id, detected_run_id)
);
-- How far (file_id) revisions of issued bills have been looked for.
CREATE TABLE revision_checks (
    nightly_run_id VARCHAR PRIMARY KEY,
    max_file_id    BIGINT NOT NULL
);
"""
