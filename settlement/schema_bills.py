"""Schema v5: ``bills`` and ``bill_lines`` without primary-key indexes; uniqueness is audited.

Until v4 both tables had a PRIMARY KEY (``bill_id``; ``bill_id, line_no``). DuckDB keeps such a
key as an ART index and checks every inserted row against it: a run of 100,000 bills writing
500,000 lines spent 1.8-2.1 s in that check against 0.5-0.6 s for the same insert without it
(measured with DuckDB 1.5), and the index grows with every run ever billed. Bill ids are made by
the engine (``account/product/start/r<run>``), never by users, so uniqueness is a property of the
code, not of input data: it is now checked by two audit views, run after every bill run over
that run's bills (the run is rolled back if either returns rows) and by the nightly audits over
every bill. The migration copies the stored bills and lines across unchanged.
"""

from __future__ import annotations

BILLS_V5_SQL = """
CREATE TABLE bills_v5 (
    bill_id             VARCHAR NOT NULL,       -- unique: audit_duplicate_bill_ids
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
INSERT INTO bills_v5 SELECT * FROM bills;
DROP TABLE bills;
ALTER TABLE bills_v5 RENAME TO bills;

CREATE TABLE bill_lines_v5 (
    bill_id        VARCHAR NOT NULL,
    line_no        INTEGER NOT NULL,            -- unique per bill: audit_duplicate_bill_lines
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
    explanation    VARCHAR NOT NULL
);
INSERT INTO bill_lines_v5 SELECT * FROM bill_lines;
DROP TABLE bill_lines;
ALTER TABLE bill_lines_v5 RENAME TO bill_lines;

-- Audits (each must return no rows): what the primary keys enforced until v4.
CREATE VIEW audit_duplicate_bill_ids AS
SELECT bill_id, count(*) AS n FROM bills GROUP BY bill_id HAVING count(*) > 1;

CREATE VIEW audit_duplicate_bill_lines AS
SELECT bill_id, line_no, count(*) AS n FROM bill_lines GROUP BY bill_id, line_no
HAVING count(*) > 1;
"""

# Schema v15: a bill's kind. ``cycle`` is a billing cycle's bill (every bill before v15);
# ``final_adjustment`` is the bill the nightly issues to an account that has moved out when a
# revision of its issued bills leaves an adjustment that no later cycle bill will take
# (``settlement.closing``, step 4b). Its lines are adjustment lines only, its period the span of
# the bills they correct, and it is itself never revised (it bills no reads).
BILL_KIND_V15_SQL = """
ALTER TABLE bills ADD COLUMN kind VARCHAR DEFAULT 'cycle';  -- the stored bills: 'cycle'
"""
