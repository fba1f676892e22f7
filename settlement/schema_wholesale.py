"""Schema v6: the wholesale settlement stored as numbers, its text and per-interval facts apart.

Until v5 a settled read was a row of ``wholesale_reads`` with fifteen columns, seven of them text
(account, NMI, suffix, region, quality, status, run id) and five of them doubles. A 100,000-account
day of 5-minute reads is 28.8 million such rows: appending them took 27 s, longer than ingesting
the day's NEM12 file (measured with DuckDB 1.5 on the 2-core bench machine). Most of those
columns repeat facts that are the same for a whole account, interval or day. From v6 a settled
read is seven number columns in ``wholesale_values`` (appending 28.8 million of them: 3.4 s):

- ``terms_id`` -> ``wholesale_terms(account, region, dlf, mlf)``, one row per account and the
  loss factors it was settled with (a new row when a customer file changes them);
- ``channel_id`` -> ``meter_channels(nmi, suffix)`` and ``flag_id`` -> ``meter_flags(quality,
  ...)``, the meter store's dictionaries (schema v4);
- the price of each (region, interval) of a settled day is one row of ``wholesale_prices``
  (NULL when prices do not fully cover the interval), not a column of every read;
- the run that settled a day is ``settled_days.run_id``.

``wholesale_reads`` becomes a view with the v3 columns: ``amount_aud`` is computed in it by the
same expression, in the same order, as v3 stored it (``kwh x dlf x mlf x price / 1000``), so it
reads back bit for bit, and ``status`` follows from the price and the quality exactly as v3 set
it. ``wholesale_settlement`` (v3) is left as it is and reads the new view. The migration moves the settled
reads across (same values, prices and run ids).
"""

from __future__ import annotations

WHOLESALE_V6_SQL = """
CREATE TABLE wholesale_terms (
    terms_id INTEGER NOT NULL,
    account  VARCHAR NOT NULL,
    region   VARCHAR NOT NULL,
    dlf      DOUBLE NOT NULL,
    mlf      DOUBLE NOT NULL
);

CREATE TABLE wholesale_prices (
    settlement_date  DATE NOT NULL,             -- NEM market day (UTC+10)
    region           VARCHAR NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,      -- a meter interval settled that day (UTC)
    interval_minutes SMALLINT NOT NULL,
    price_per_mwh    DOUBLE                     -- NULL when prices do not cover the interval
);

CREATE TABLE wholesale_values (
    terms_id         INTEGER NOT NULL,
    channel_id       INTEGER NOT NULL,          -- E* import (cost), B* export (spot value)
    interval_start   TIMESTAMPTZ NOT NULL,      -- UTC
    interval_minutes SMALLINT NOT NULL,
    settlement_date  DATE NOT NULL,             -- NEM market day (UTC+10)
    kwh              DOUBLE NOT NULL,
    flag_id          SMALLINT NOT NULL          -- the read's quality as settled
);

INSERT INTO wholesale_terms
SELECT row_number() OVER (ORDER BY account, region, dlf, mlf)::INTEGER, account, region, dlf, mlf
FROM (SELECT DISTINCT account, region, dlf, mlf FROM wholesale_reads);

INSERT INTO wholesale_prices
SELECT DISTINCT settlement_date, region, interval_start, interval_minutes, price_per_mwh
FROM wholesale_reads;

-- LEFT joins: a read whose channel or quality had no dictionary row fails the NOT NULL
-- constraint (and the migration) rather than being left behind
INSERT INTO wholesale_values
SELECT t.terms_id, c.channel_id, r.interval_start, r.interval_minutes, r.settlement_date, r.kwh,
       q.flag_id
FROM wholesale_reads r
LEFT JOIN wholesale_terms t
  ON t.account = r.account AND t.region = r.region AND t.dlf = r.dlf AND t.mlf = r.mlf
LEFT JOIN meter_channels c ON c.nmi = r.nmi AND c.suffix = r.suffix
LEFT JOIN (SELECT quality, min(flag_id) AS flag_id FROM meter_flags GROUP BY quality) q
  ON q.quality = r.quality
ORDER BY r.settlement_date, t.terms_id, c.channel_id, r.interval_start;

-- wholesale_settlement (v3) stays: DuckDB binds a view's query when it runs, so it reads the
-- view below from here on
DROP TABLE wholesale_reads;

-- Per settled read, with the v3 columns.
CREATE VIEW wholesale_reads AS
SELECT t.account, c.nmi, c.suffix, t.region, v.interval_start, v.interval_minutes,
       v.settlement_date, v.kwh, t.dlf, t.mlf, p.price_per_mwh,
       v.kwh * t.dlf * t.mlf * p.price_per_mwh / 1000 AS amount_aud,
       f.quality,
       CASE WHEN p.price_per_mwh IS NULL THEN 'missing_price'
            WHEN f.quality IN ('E', 'S', 'N') THEN 'estimated' ELSE 'ok' END AS status,
       d.run_id
FROM wholesale_values v
JOIN wholesale_terms t ON t.terms_id = v.terms_id
JOIN meter_channels c ON c.channel_id = v.channel_id
JOIN meter_flags f ON f.flag_id = v.flag_id
JOIN settled_days d ON d.settlement_date = v.settlement_date
LEFT JOIN wholesale_prices p
  ON p.settlement_date = v.settlement_date AND p.region = t.region
 AND p.interval_start = v.interval_start AND p.interval_minutes = v.interval_minutes;
"""
