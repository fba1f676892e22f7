"""Generate the synthetic demo retailer into an inbox and ingest it through the real ingestion.

``build_demo(out_dir)`` = :func:`generate_demo` (deterministic files under ``out_dir/inbox``) +
:func:`ingest_demo` (prices, customers, meter data into the store) + a summary read back from the
store. Running it twice regenerates byte-identical files, so the second ingest is a no-op.

Seeds: one :class:`numpy.random.SeedSequence` from ``seed``, spawned into independent children
(weather, prices, household attributes, household noise, meter quirks, customers); household
noise is spawned again per month. Changing the household count therefore never changes the
weather or the price path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from settlement.demo import files
from settlement.demo.config import DemoConfig, load_demo_config
from settlement.demo.customers import CustomerBook, draw_customers
from settlement.demo.households import (
    CarryState,
    Households,
    draw_households,
    simulate_period,
    solar_scale,
)
from settlement.demo.synth import (
    Calendar,
    PricePath,
    Weather,
    build_calendar,
    clear_sky_shape,
    simulate_prices,
    simulate_weather,
    temperature_c,
)
from settlement.ingest_common import IngestReport
from settlement.store import Store
from tariffs.errors import ConfigError

Progress = Callable[[str, int, int | None], None]
"""``(description, advance, total)``, as in docs/CONTRACTS.md."""

SEED_COMPONENTS = ("weather", "prices", "attributes", "noise", "quirks", "customers")
INBOX_DIRS = {"meter": "inbox/meter", "prices": "inbox/prices", "customers": "inbox/customers"}


def _noop(description: str, advance: int, total: int | None) -> None:
    return None


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """Independent child seeds per generator component (``SeedSequence.spawn``)."""
    children = np.random.SeedSequence(seed).spawn(len(SEED_COMPONENTS))
    return dict(zip(SEED_COMPONENTS, children, strict=True))


def market_limits(
    store: Store, start: date, days: int, minutes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Market price cap and floor per interval [$/MWh] from ``market_price_thresholds``.

    Each interval takes the row effective on its market day (latest ``effective_from`` on or
    before it); raises ``ValueError`` naming the day when no row covers it.
    """
    rows = store.con.execute(
        "SELECT effective_from, market_price_cap, market_price_floor "
        "FROM market_price_thresholds ORDER BY effective_from"
    ).fetchall()
    eff = np.array([r[0] for r in rows], dtype="datetime64[D]")
    day = np.datetime64(start, "D") + np.arange(days)
    pos = np.searchsorted(eff, day, side="right") - 1
    if (pos < 0).any():
        raise ValueError(f"no market_price_thresholds row covers {day[pos < 0][0]}")
    per_day = 1440 // minutes
    cap = np.array([r[1] for r in rows], dtype=np.float64)[pos]
    floor = np.array([r[2] for r in rows], dtype=np.float64)[pos]
    return np.repeat(cap, per_day), np.repeat(floor, per_day)


@dataclass
class GeneratedDemo:
    """The files one generation wrote and what it drew (for summaries and tests)."""

    config: DemoConfig
    meter_files: list[Path]
    price_files: list[Path]
    customer_file: Path
    households: Households
    customers: CustomerBook
    prices: PricePath
    weather: Weather
    readings_written: int
    estimated_days: int
    seconds: float


def _estimated_days(
    rng: np.random.Generator, cfg: DemoConfig, book: CustomerBook, last_month_day: int
) -> np.ndarray:
    """``(households, days)`` True on the few household-days first sent as estimates (never in
    the last month, so every estimate is revised by a later file)."""
    n = cfg.households
    k = max(2, n // 200)
    who = rng.choice(n, size=min(k, n), replace=False)
    day = rng.integers(0, max(last_month_day, 1), who.size)
    ok = (day >= book.supply_from[who]) & (day < book.supply_to[who])
    out = np.zeros((n, cfg.days), dtype=bool)
    out[who[ok], day[ok]] = True
    return out


def _delivery(cal: Calendar, hi: int) -> datetime:
    """When the month ending at interval ``hi`` is delivered: 06:00 NEM time on the day after
    its last day (the NEM12 UpdateDateTime and 100-record DateTime)."""
    end = cal.start + timedelta(days=int(cal.day[hi - 1]) + 1)
    return datetime(end.year, end.month, end.day, 6)


@dataclass(frozen=True)
class _MeterInputs:
    """The half-hourly drivers and masks shared by every month of meter data."""

    cal: Calendar
    temp: np.ndarray
    sun: np.ndarray
    clear: np.ndarray
    solar_scale: float
    supplied: np.ndarray
    estimated: np.ndarray


def _meter_inputs(
    cfg: DemoConfig, book: CustomerBook, weather: Weather, quirks: np.random.SeedSequence
) -> _MeterInputs:
    cal = build_calendar(cfg.start, cfg.days, cfg.meter_interval_minutes, cfg.timezone)
    sun = clear_sky_shape(cal, cfg.latitude_deg, cfg.longitude_deg)
    clear = weather.clear_fraction[cal.day]
    last_month_day = int(cal.day[cal.month_bounds()[-1][0]])
    day_no = np.arange(cfg.days)
    return _MeterInputs(
        cal=cal,
        temp=temperature_c(weather, cal),
        sun=sun,
        clear=clear,
        solar_scale=solar_scale(sun, clear, cal.hours, cfg.solar.yield_kwh_per_kw, cfg.days),
        supplied=(day_no >= book.supply_from[:, None]) & (day_no < book.supply_to[:, None]),
        estimated=_estimated_days(np.random.default_rng(quirks), cfg, book, last_month_day),
    )


def _simulate_month(
    cfg: DemoConfig, hh: Households, inp: _MeterInputs, lo: int, hi: int,
    ss: np.random.SeedSequence, state: CarryState,
) -> tuple[files.MeterMonth, CarryState]:  # fmt: skip
    """One month's import/export per household, day and interval, and the carried state."""
    part = inp.cal.window(lo, hi)
    flows, state = simulate_period(
        np.random.default_rng(ss), hh, part, inp.temp[lo:hi], inp.sun[lo:hi],
        inp.clear[lo:hi], inp.solar_scale, state, cfg,
    )  # fmt: skip
    d0, d1 = int(part.day[0]), int(part.day[-1]) + 1
    shape = (hh.count, d1 - d0, inp.cal.per_day)
    month = files.MeterMonth(
        first_day=cfg.start + timedelta(days=d0),
        day_offset=d0,
        import_kwh=flows.import_kwh.reshape(shape),
        export_kwh=flows.export_kwh.reshape(shape),
        delivered_at=_delivery(inp.cal, hi),
    )
    return month, state


def _write_meter(
    out: Path, cfg: DemoConfig, hh: Households, book: CustomerBook, weather: Weather,
    seeds: dict[str, np.random.SeedSequence], progress: Progress,
) -> tuple[list[Path], int, int]:  # fmt: skip
    """Simulate the households month by month and write one NEM12 file per month.

    Month ``m`` is written on a worker thread while month ``m + 1`` is simulated (polars
    releases the GIL); at most one write is in flight, so memory stays at ~two months.
    """
    inp = _meter_inputs(cfg, book, weather, seeds["quirks"])
    bounds = inp.cal.month_bounds()
    state, revisions = CarryState.initial(hh), None
    done: list[tuple[Path, int]] = []
    in_flight: Future[tuple[Path, int]] | None = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        for (lo, hi), ss in zip(bounds, seeds["noise"].spawn(len(bounds)), strict=True):
            month, state = _simulate_month(cfg, hh, inp, lo, hi, ss, state)
            d0, d1 = month.day_offset, month.day_offset + month.import_kwh.shape[1]
            frame, next_revisions = files.month_frames(
                month, hh.nmi, hh.solar_kw > 0, inp.supplied[:, d0:d1],
                inp.estimated[:, d0:d1], cfg.meter_interval_minutes,
            )  # fmt: skip
            if in_flight is not None:
                done.append(in_flight.result())
                progress("generate meter data", 1, len(bounds))
            in_flight = pool.submit(files.write_meter_file, out, month, frame, revisions,
                                    cfg.participant, cfg.retailer)  # fmt: skip
            revisions = next_revisions
        if in_flight is not None:
            done.append(in_flight.result())
            progress("generate meter data", 1, len(bounds))
    return [p for p, _ in done], sum(c for _, c in done), int(inp.estimated.sum())


def generate_demo(
    out_dir: Path, cfg: DemoConfig, store: Store, progress: Progress | None = None
) -> GeneratedDemo:
    """Write the demo inbox under ``out_dir`` (``inbox/meter``, ``inbox/prices``,
    ``inbox/customers``); ``store`` supplies the market price cap and floor."""
    report = progress or _noop
    t0 = time.perf_counter()
    seeds = seed_streams(cfg.seed)
    weather = simulate_weather(np.random.default_rng(seeds["weather"]), cfg.start, cfg.days)
    pcal = build_calendar(cfg.start, cfg.days, cfg.price_interval_minutes, cfg.timezone)
    cap, floor = market_limits(store, cfg.start, cfg.days, cfg.price_interval_minutes)
    psun = clear_sky_shape(pcal, cfg.latitude_deg, cfg.longitude_deg)
    prices = simulate_prices(
        np.random.default_rng(seeds["prices"]), pcal, weather, cfg.prices, psun, cap, floor
    )
    price_files = files.write_price_files(
        out_dir / INBOX_DIRS["prices"], cfg.region, cfg.start, cfg.price_interval_minutes, prices
    )
    report("generate prices", 1, 1)
    hh = draw_households(np.random.default_rng(seeds["attributes"]), cfg)
    book = draw_customers(np.random.default_rng(seeds["customers"]), hh, cfg)
    customer_file = files.write_customer_file(out_dir / INBOX_DIRS["customers"], book.rows)
    meter_files, readings, n_est = _write_meter(
        out_dir / INBOX_DIRS["meter"], cfg, hh, book, weather, seeds, report
    )
    return GeneratedDemo(
        config=cfg,
        meter_files=meter_files,
        price_files=price_files,
        customer_file=customer_file,
        households=hh,
        customers=book,
        prices=prices,
        weather=weather,
        readings_written=readings,
        estimated_days=n_est,
        seconds=time.perf_counter() - t0,
    )


def _one_task(progress: Progress, description: str, total: int) -> Progress:
    """Fold an ingestion's per-file progress calls into one task with a fixed total."""

    def report(_: str, advance: int, __: int | None) -> None:
        progress(description, advance, total)

    return report


def ingest_demo(
    store: Store, generated: GeneratedDemo, progress: Progress | None = None
) -> dict[str, IngestReport]:
    """Ingest prices, customers and meter files through the real ingestion functions."""
    from settlement.customers import ingest_customer_file
    from settlement.nem12 import ingest_meter_files
    from settlement.prices import ingest_price_files

    report = progress or _noop
    n_price = len(generated.price_files)
    meter_bytes = sum(p.stat().st_size for p in generated.meter_files)
    prices = ingest_price_files(
        store, generated.price_files, progress=_one_task(report, "ingest prices", n_price)
    )
    customers = ingest_customer_file(store, generated.customer_file)
    report("ingest customers", 1, 1)
    meter = ingest_meter_files(
        store,
        generated.meter_files,
        progress=_one_task(report, "ingest meter data (bytes)", meter_bytes),
    )
    return {"prices": prices, "customers": customers, "meter": meter}


@dataclass
class DemoSummary:
    """What ``fairshare demo`` prints: sizes, price statistics and energy totals from the store."""

    out_dir: Path
    db_path: Path
    households: int
    accounts: int
    meter_files: int
    price_files: int
    readings: int
    price_intervals: int
    price_mean_per_mwh: float
    price_max_per_mwh: float
    price_min_per_mwh: float
    negative_share: float
    e1_kwh: float
    b1_kwh: float
    rows_loaded: int
    rows_quarantined: int
    generate_seconds: float
    ingest_seconds: float
    reports: dict[str, IngestReport] = field(default_factory=dict)
    generated: GeneratedDemo | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (ingest reports summarised, generator arrays left out)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("reports", "generated")}
        out["reports"] = {k: r.to_dict() for k, r in self.reports.items()}
        return out


def _store_stats(store: Store, region: str) -> dict[str, float]:
    """Counts, price statistics and E1/B1 totals read back from the store's public views."""
    p = store.query(
        "SELECT count(*), avg(price_per_mwh), max(price_per_mwh), min(price_per_mwh), "
        "avg((price_per_mwh < 0)::INT) FROM prices WHERE region = ?",
        [region],
    ).fetchone()
    m = store.query(
        "SELECT count(*), sum(kwh) FILTER (suffix = 'E1'), sum(kwh) FILTER (suffix = 'B1'), "
        "count(DISTINCT nmi) FROM meter_reads"
    ).fetchone()
    a = store.query("SELECT count(*) FROM customers").fetchone()
    assert p is not None and m is not None and a is not None
    return {
        "price_intervals": p[0], "price_mean_per_mwh": p[1] or 0.0,
        "price_max_per_mwh": p[2] or 0.0, "price_min_per_mwh": p[3] or 0.0,
        "negative_share": p[4] or 0.0, "readings": m[0], "e1_kwh": m[1] or 0.0,
        "b1_kwh": m[2] or 0.0, "households": m[3], "accounts": a[0],
    }  # fmt: skip


_OUR_FILES = ("NEM12#DEMO*", "PRICE_AND_DEMAND_*", "customers.csv")


def _check_inputs(cfg: DemoConfig, db_path: Path) -> None:
    """Refuse to mix a differently configured demo into a store that holds one; record this
    demo's inputs beside the store (``<db>.demo.json``)."""
    wanted = json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    manifest = db_path.with_name(db_path.name + ".demo.json")
    if db_path.exists() and manifest.exists():
        old = json.loads(manifest.read_text(encoding="utf-8"))
        new = cfg.model_dump(mode="json")
        changed = sorted(k for k in new if old.get(k) != new[k])
        if changed:
            raise ConfigError(
                f"store {db_path} holds a demo generated with other inputs "
                f"({', '.join(changed)} differ); use another --out/--db or delete it"
            )
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(wanted, encoding="utf-8")


def _clear_inbox(out_dir: Path) -> None:
    """Remove files an earlier demo generated (only the demo's own name patterns), so the inbox
    holds exactly this demo's files."""
    for sub in INBOX_DIRS.values():
        for pattern in _OUR_FILES:
            for stale in (out_dir / sub).glob(pattern):
                stale.unlink()


def build_demo(
    out_dir: Path,
    households: int | None = None,
    seed: int | None = None,
    db: Path | None = None,
    *,
    days: int | None = None,
    config: Path | None = None,
    progress: Progress | None = None,
) -> DemoSummary:
    """Generate the demo inbox under ``out_dir``, ingest it into ``db`` (default
    ``out_dir/fairshare.duckdb``) and summarise the store.

    ``households``, ``seed`` and ``days`` override ``data/demo.toml`` (or ``config``).
    """
    cfg = load_demo_config(config, households=households, seed=seed, days=days)
    out_dir = Path(out_dir)
    db_path = Path(db) if db is not None else out_dir / "fairshare.duckdb"
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_inputs(cfg, db_path)
    _clear_inbox(out_dir)
    with Store.open(db_path) as store:
        generated = generate_demo(out_dir, cfg, store, progress)
        t0 = time.perf_counter()
        reports = ingest_demo(store, generated, progress)
        ingest_seconds = time.perf_counter() - t0
        stats = _store_stats(store, cfg.region)
    return DemoSummary(
        out_dir=out_dir,
        db_path=db_path,
        meter_files=len(generated.meter_files),
        price_files=len(generated.price_files),
        rows_loaded=sum(r.rows_loaded for r in reports.values()),
        rows_quarantined=sum(r.rows_quarantined for r in reports.values()),
        generate_seconds=generated.seconds,
        ingest_seconds=ingest_seconds,
        reports=reports,
        generated=generated,
        **stats,  # type: ignore[arg-type]
    )
