"""Schema v4: interval readings stored as numbers, their text columns in two small dictionaries.

Until v3 every reading carried its NMI, suffix, quality, method and reason as text; appending
text is what DuckDB does slowest (about 0.23 s per column per 10 million rows against 0.4 s for
a number column, measured with DuckDB 1.5), so a reading cost twelve columns of which five were
text. From v4 a reading is nine number columns in ``meter_values``:

- ``channel_id`` -> ``meter_channels(nmi, suffix)``, one row per meter channel ever seen;
- ``flag_id`` -> ``meter_flags(quality, method, reason)``, one row per distinct combination.

``meter_reads_raw`` becomes a view with the v1 columns, so every query written against it (the
public ``meter_reads`` view, ``meter_reads_as_of``, settlement, billing, audits) reads the same
rows as before. The migration moves the stored readings across unchanged (same values, versions,
files, lines and ``is_current``). Ids are assigned by the loader in ``settlement.nem12``.
"""

from __future__ import annotations

METER_V4_SQL = """
CREATE TABLE meter_channels (
    channel_id INTEGER NOT NULL,
    nmi        VARCHAR NOT NULL,
    suffix     VARCHAR NOT NULL
);

CREATE TABLE meter_flags (
    flag_id SMALLINT NOT NULL,
    quality VARCHAR NOT NULL,                   -- A E S F N (V resolved per interval)
    method  VARCHAR,
    reason  VARCHAR
);

CREATE TABLE meter_values (
    channel_id       INTEGER NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,      -- UTC
    interval_minutes SMALLINT NOT NULL,
    kwh              DOUBLE NOT NULL,
    flag_id          SMALLINT NOT NULL,
    version_at       TIMESTAMPTZ NOT NULL,      -- UpdateDateTime (or fallback, see docs)
    file_id          BIGINT NOT NULL,
    source_line      INTEGER NOT NULL,
    is_current       BOOLEAN NOT NULL
);

INSERT INTO meter_channels
SELECT row_number() OVER (ORDER BY nmi, suffix)::INTEGER, nmi, suffix
FROM (SELECT DISTINCT nmi, suffix FROM meter_reads_raw);

INSERT INTO meter_flags
SELECT row_number() OVER (ORDER BY quality, method NULLS FIRST, reason NULLS FIRST)::SMALLINT,
       quality, method, reason
FROM (SELECT DISTINCT quality, method, reason FROM meter_reads_raw);

INSERT INTO meter_values
SELECT c.channel_id, r.interval_start, r.interval_minutes, r.kwh, f.flag_id, r.version_at,
       r.file_id, r.source_line, r.is_current
FROM meter_reads_raw r
JOIN meter_channels c ON c.nmi = r.nmi AND c.suffix = r.suffix
JOIN meter_flags f ON f.quality = r.quality AND f.method IS NOT DISTINCT FROM r.method
                  AND f.reason IS NOT DISTINCT FROM r.reason
ORDER BY r.file_id, r.source_line, r.interval_start;

DROP VIEW meter_reads;
DROP MACRO TABLE meter_reads_as_of;
DROP TABLE meter_reads_raw;

-- Every stored version of every reading, with the v1 columns.
CREATE VIEW meter_reads_raw AS
SELECT c.nmi, c.suffix, v.interval_start, v.interval_minutes, v.kwh, f.quality, f.method,
       f.reason, v.version_at, v.file_id, v.source_line, v.is_current
FROM meter_values v
JOIN meter_channels c USING (channel_id)
JOIN meter_flags f USING (flag_id);

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
"""
