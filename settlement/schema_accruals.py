"""Schema v8: nightly accruals of each account's product charges (``settlement.accruals``).

The nightly settles every market day twice over: the retailer's wholesale cost
(``wholesale_values``, schema v6) and, from v8, the interval charges of the product each account
is on, as the bill will price them. A market day (UTC+10) meets one or two local days of a site
(a Sydney day in daylight saving starts at 01:00 market time; an Adelaide day at 23:30 the day
before), so an accrual is keyed by the market day whose reads it prices (``settlement_date``) and
the site's local day (``local_date``), the day a bill counts it on.

- ``accrual_days``: one row per account, local day and market day (a *piece*): the product and
  version in force, the piece's UTC bounds, the kWh and covered minutes of each channel the
  product prices (import always; controlled load and export NULL when it prices none), the
  intervals with an estimated read and the import intervals without a spot price.
- ``accrual_lines``: the piece's energy and feed-in lines (one per component, TOU period and rate
  in force), with the quantity, the rate and the unrounded amount (feed-in negative), in the
  product's currency and ex tax. Amounts and kWh are the pass's floating sums as they are
  (DOUBLE): a bill from them adds a month of them and then applies the bill's money rule once
  (:mod:`tariffs.money`), as the pass does with its one sum. Rounding each day first (to 1e-9,
  as this schema first did) moved a spot-linked line by a cent where the month's amount sat
  within 1e-8 of a rounding boundary. The pass's sums are exact (whole units of 1e-13 added
  as integers, :func:`tariffs.sql.exact_sum`) and polars adds them in a sorted order, so a
  rerun stores the same bits.

``daily_charges`` (public view) adds the pieces of each local day up per component.
"""

from __future__ import annotations

ACCRUALS_V8_SQL = """
CREATE TABLE accrual_days (
    settlement_date     DATE NOT NULL,          -- NEM market day (UTC+10) whose reads these are
    account             VARCHAR NOT NULL,
    nmi                 VARCHAR NOT NULL,
    local_date          DATE NOT NULL,          -- the site's local day
    product             VARCHAR NOT NULL,
    product_version     VARCHAR NOT NULL,
    currency            VARCHAR NOT NULL,
    region              VARCHAR NOT NULL,       -- the site's market region when accrued
    loss_factor         DOUBLE NOT NULL,        -- DLF x MLF when accrued
    utc_from            TIMESTAMPTZ NOT NULL,   -- the piece: local day x market day x supply
    utc_to              TIMESTAMPTZ NOT NULL,
    day_minutes         INTEGER NOT NULL,       -- the whole local day's length (23 to 25 h)
    import_kwh          DOUBLE NOT NULL,
    controlled_kwh      DOUBLE,                 -- NULL: the product prices no controlled load
    export_kwh          DOUBLE,                 -- NULL: the product prices no export
    import_interval     SMALLINT,               -- the shortest import read length [minutes]
    import_minutes      INTEGER NOT NULL,       -- minutes of the piece with an import read
    controlled_minutes  INTEGER,                -- NULL as controlled_kwh
    export_minutes      INTEGER,                -- NULL as export_kwh
    estimated_intervals INTEGER NOT NULL,       -- intervals with an estimated (E) read
    unpriced_intervals  INTEGER NOT NULL        -- import intervals without a spot price
);

CREATE TABLE accrual_lines (
    settlement_date DATE NOT NULL,
    account         VARCHAR NOT NULL,
    local_date      DATE NOT NULL,
    line_order      SMALLINT NOT NULL,          -- the component's position in the product
    component       VARCHAR NOT NULL,
    detail          VARCHAR NOT NULL,           -- TOU period, '' for flat, 'spot-linked'
    rate_from       DATE,                       -- effective_from of the rate (not spot-linked)
    rate            DOUBLE,                     -- per kWh; spot-linked: amount / quantity
    quantity_kwh    DOUBLE NOT NULL,
    n_intervals     INTEGER NOT NULL,
    amount          DOUBLE,                     -- ex tax, unrounded; NULL: no rate in force
    taxable         BOOLEAN NOT NULL
);

-- Per account, local day and component: the day's interval charges so far (the pieces of the
-- market days that hold a part of it). ``complete``: every minute of the local day has an import
-- read settled (both market days it meets), and every import interval a price.
CREATE VIEW daily_charges AS
WITH days AS (
    SELECT account, local_date, product, product_version, currency,
           sum(import_minutes) AS import_minutes,
           max(day_minutes) AS day_minutes,
           sum(unpriced_intervals) AS unpriced_intervals,
           sum(estimated_intervals) AS estimated_intervals
    FROM accrual_days GROUP BY ALL
)
SELECT l.account, l.local_date, d.product, d.product_version, l.line_order, l.component,
       l.detail, sum(l.quantity_kwh) AS quantity_kwh, sum(l.n_intervals) AS n_intervals,
       CASE WHEN sum(l.quantity_kwh) <> 0 THEN sum(l.amount) / sum(l.quantity_kwh) END
         AS mean_rate,
       sum(l.amount) AS amount, d.currency, l.taxable, d.estimated_intervals,
       d.import_minutes = d.day_minutes AND d.unpriced_intervals = 0 AS complete
FROM accrual_lines l
JOIN accrual_days a USING (settlement_date, account, local_date)
JOIN days d ON d.account = l.account AND d.local_date = l.local_date
 AND d.product = a.product AND d.product_version = a.product_version
GROUP BY l.account, l.local_date, d.product, d.product_version, l.line_order, l.component,
         l.detail, d.currency, l.taxable, d.estimated_intervals, d.import_minutes,
         d.day_minutes, d.unpriced_intervals;
"""
