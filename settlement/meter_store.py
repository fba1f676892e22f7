"""Bulk append of trusted interval readings into the numeric meter tables (schema v4).

NEM12 files go through :mod:`settlement.nem12` (validation, quarantine, versions). This is the
path for rows that are already valid: benchmark and test fixtures that synthesise millions of
readings in SQL. It takes a ``SELECT`` of the twelve columns of the ``meter_reads_raw`` view, in
its order::

    nmi, suffix, interval_start, interval_minutes, kwh, quality, method, reason,
    version_at, file_id, source_line, is_current

adds the channels and flags it has not seen to ``meter_channels`` / ``meter_flags`` and appends
the readings to ``meter_values``, then rebuilds the day arrays (``meter_days``) of the days
they touch. The query is run four times (files, dictionaries, readings), so it must
be deterministic. It is code written by the caller, never user text: values go in ``params``.
"""

from __future__ import annotations

from typing import Any

import duckdb

from settlement.meter_days import refresh_days

READ_COLUMNS = (
    "nmi, suffix, interval_start, interval_minutes, kwh, quality, method, reason, "
    "version_at, file_id, source_line, is_current"
)

_CHANNELS = """
INSERT INTO meter_channels
SELECT ((SELECT coalesce(max(channel_id), 0) FROM meter_channels)
        + row_number() OVER (ORDER BY nmi, suffix))::INTEGER, nmi, suffix
FROM (SELECT DISTINCT nmi, suffix FROM ({select}) s({cols})
      EXCEPT SELECT nmi, suffix FROM meter_channels)
"""

_FLAGS = """
INSERT INTO meter_flags
SELECT ((SELECT coalesce(max(flag_id), 0) FROM meter_flags)
        + row_number() OVER (ORDER BY quality, method NULLS FIRST, reason NULLS FIRST))::SMALLINT,
       quality, method, reason
FROM (SELECT DISTINCT quality, method, reason FROM ({select}) s({cols})
      EXCEPT SELECT quality, method, reason FROM meter_flags)
"""

_VALUES = """
INSERT INTO meter_values
SELECT c.channel_id, s.interval_start, s.interval_minutes, s.kwh, f.flag_id, s.version_at,
       s.file_id, s.source_line, s.is_current
FROM ({select}) s({cols})
JOIN meter_channels c ON c.nmi = s.nmi AND c.suffix = s.suffix
JOIN meter_flags f ON f.quality = s.quality AND f.method IS NOT DISTINCT FROM s.method
                  AND f.reason IS NOT DISTINCT FROM s.reason
"""


def append_reads(con: duckdb.DuckDBPyConnection, select_sql: str, params: Any = None) -> None:
    """Append the readings of ``select_sql`` (the twelve ``meter_reads_raw`` columns in order).

    Example::

        append_reads(con, "SELECT '4102000001', 'E1', ts, 30, 0.5, 'A', NULL, NULL, now(), "
                          "$fid, 1, true FROM hh", {"fid": 2})
    """
    files = con.execute(
        f"SELECT DISTINCT file_id FROM ({select_sql}) s({READ_COLUMNS})", params
    ).fetchall()
    for template in (_CHANNELS, _FLAGS, _VALUES):
        con.execute(template.format(select=select_sql, cols=READ_COLUMNS), params)
    refresh_days(con, [int(f) for (f,) in files])
