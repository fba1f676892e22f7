"""Schema v14: a settled day refers to its meter array instead of copying it.

Until v13 settling a day copied every channel's ``meter_days`` array into ``wholesale_days``:
100,000 rows of 288 readings for a 100,000-account day of 5-minute reads, 0.9-1.0 s to append
and 1.4-1.8 s more to commit (DuckDB writes so large an insert through a checkpoint), the same
28.8 million numbers stored twice.

From v14 the stored rows are ``wholesale_day_rows``: the v13 columns with ``kwh`` nullable,
plus ``file_id`` and ``source_line``, the key of the ``meter_days`` row that was settled (with
``channel_id``, ``interval_minutes`` and the market day, ``settlement_date``). A row whose
``kwh`` is NULL refers to that array; a row with ``kwh`` holds its own (every row settled
before v14, and a row whose key names more than one array of its day when it is settled). The
view ``wholesale_days`` has the v13 columns and resolves the reference, so every query and view
written against it (``wholesale_values``, ``wholesale_reads``, the audits, the snapshot) reads
the same rows as before. Measured on a 100,000-account night (``bench/bench_nightly.py``):
settling took 1.8-2.0 s (was 3.6-3.8 s), and the view reads a day as fast as ``meter_days``.

A settlement stays as it was settled. ``meter_days`` rows are never edited (ingestion only
turns ``is_current`` off, which keeps the array), and the one statement that deletes them, the
rebuild of a channel's day (:func:`settlement.meter_days.refresh_day_keys`), first copies the
arrays of the rows it is about to delete into every settled row that refers to them
(:data:`MATERIALISE_SQL`). The audit ``settled_days_resolve`` checks that every reference names
exactly one array.
"""

from __future__ import annotations

WHOLESALE_REFS_V14_SQL = """
ALTER TABLE wholesale_days RENAME TO wholesale_day_rows;
ALTER TABLE wholesale_day_rows ALTER COLUMN kwh DROP NOT NULL;
-- the settled meter_days row (with channel_id, interval_minutes and the market day)
ALTER TABLE wholesale_day_rows ADD COLUMN file_id BIGINT;
ALTER TABLE wholesale_day_rows ADD COLUMN source_line INTEGER;
{view}
"""

WHOLESALE_DAYS_VIEW = """
CREATE OR REPLACE VIEW wholesale_days AS
-- the rows that refer to their array (an inner join: the audit settled_days_resolve reports a
-- reference that finds no array, or more than one) and the rows that hold their own. Not one
-- LEFT JOIN with coalesce: DuckDB builds that join's hash table on meter_days, copying every
-- array it reads (a 100,000-account day read through it took 0.25-0.38 s, this 0.16 s, the
-- same as reading meter_days alone)
SELECT w.settlement_date, w.terms_id, w.channel_id, w.interval_minutes, m.kwh, w.flag_id,
       w.flags, w.n_reads
FROM wholesale_day_rows w
JOIN meter_days m ON {key}
WHERE w.kwh IS NULL
UNION ALL
SELECT settlement_date, terms_id, channel_id, interval_minutes, kwh, flag_id, flags, n_reads
FROM wholesale_day_rows
WHERE kwh IS NOT NULL;
"""

# the meter_days row ``m`` a settled row ``w`` refers to (the market day first: DuckDB prunes
# meter_days by the join's dates)
REF_KEY = (
    "m.market_day = w.settlement_date AND m.channel_id = w.channel_id"
    " AND m.interval_minutes = w.interval_minutes AND m.file_id = w.file_id"
    " AND m.source_line = w.source_line"
)

WHOLESALE_DAYS_VIEW = WHOLESALE_DAYS_VIEW.replace("{key}", REF_KEY)
WHOLESALE_REFS_V14_SQL = WHOLESALE_REFS_V14_SQL.replace("{view}", WHOLESALE_DAYS_VIEW)

MATERIALISE_SQL = """
-- before the meter_days rows of the (channel, market day) keys in _day_keys are deleted and
-- rebuilt: every settled row that refers to one of them takes its array ($lo_day/$hi_day:
-- literal bounds of the keys' days)
UPDATE wholesale_day_rows w SET kwh = m.kwh
FROM meter_days m
WHERE w.kwh IS NULL AND {key}
  AND w.settlement_date BETWEEN $lo_day AND $hi_day
  AND m.market_day BETWEEN $lo_day AND $hi_day
  AND EXISTS (SELECT 1 FROM _day_keys k WHERE k.channel_id = m.channel_id
              AND DATE '1970-01-01' + k.day_no::INTEGER = m.market_day)
""".replace("{key}", REF_KEY)

RESOLVE_AUDIT_SQL = """
-- settled rows that refer to an array (kwh NULL) must find exactly one meter_days row
SELECT w.settlement_date, w.terms_id, w.channel_id, w.interval_minutes, w.file_id,
       w.source_line, count(m.channel_id) AS arrays
FROM wholesale_day_rows w
LEFT JOIN meter_days m ON {key}
WHERE w.kwh IS NULL AND w.settlement_date BETWEEN $date_from AND $date_to
GROUP BY ALL
HAVING count(m.channel_id) <> 1
""".replace("{key}", REF_KEY)
