"""Product-model validation: every rule in data/formats/products.md refuses the broken file with a
message naming the field and the problem (what ``fairshare products validate`` prints)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from tariffs.calendar import describe_windows
from tariffs.errors import ProductFileError
from tariffs.product import Product, Window, parse_product
from tariffs.sql import window_sql

PRODUCTS = Path(__file__).resolve().parents[1] / "data" / "products"

HDR = """
id = "p"
name = "probe"
kind = "standard"
tax_rate = [{ effective_from = 2000-07-01, value = "0.10", source = "GST Act" }]
holidays = { country = "AU", subdivision = "NSW" }
"""

SUPPLY = """
[[components]]
type = "daily_supply"
rate = [{ effective_from = 2024-07-01, value = "1.05", source = "src" }]
"""

SPOT = """
  [components.spot]
  multiplier = [{ effective_from = 2020-01-01, value = "1", source = "src" }]
"""

SAFE_HARBOUR = """
[safe_harbour]
risk_premium_per_kwh = [{ effective_from = 2024-07-01, value = "0.015", source = "src" }]
re_entry = { notice_days = 30, lockout_days = 90, fee = "0" }
"""


def tou(window: str) -> str:
    """An energy component with a peak period in ``window`` (inline TOML table body)."""
    return f"""
[[components]]
type = "energy"
name = "Energy"
  [[components.periods]]
  name = "peak"
  rate = [{{ effective_from = 2024-07-01, value = "1.00", source = "src" }}]
  windows = [{{ {window} }}]
  [[components.periods]]
  name = "off-peak"
  default = true
  rate = [{{ effective_from = 2024-07-01, value = "0.10", source = "src" }}]
"""


def validate(text: str) -> Product:
    """Validate product TOML (the header prepended unless the text has its own ``id``)."""
    body = text if text.lstrip().startswith("id =") else HDR + text
    return Product.model_validate(tomllib.loads(body))


def refused(text: str, *needles: str) -> str:
    """Assert the product is refused with a ValidationError whose text holds every needle."""
    with pytest.raises(ValidationError) as exc:
        validate(text)
    msg = str(exc.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg}"
    return msg


# 0. the shipped products all stay valid -------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PRODUCTS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_products_validate(path: Path) -> None:
    prod = parse_product(path.read_text(), str(path))
    assert prod.id == path.stem


def test_the_probe_header_is_valid() -> None:
    assert validate(SUPPLY + tou('start = "15:00", end = "21:00"')).kind == "standard"


# 1. window months and days: unique, non-empty, known ------------------------------------------


def test_repeated_month_is_refused_not_taken_for_all_months() -> None:
    refused(
        tou('start = "15:00", end = "21:00", months = [1,2,3,4,5,6,7,8,9,10,11,11]'),
        "windows.0.months",
        "months must not repeat",
        "[11]",
    )


def test_empty_months_are_refused() -> None:
    refused(tou('start = "15:00", end = "21:00", months = []'), "windows.0.months", "at least 1")


def test_month_out_of_range_is_refused() -> None:
    refused(tou('start = "15:00", end = "21:00", months = [0, 13]'), "months.0", "months.1")


def test_repeated_and_empty_and_unknown_days_are_refused() -> None:
    refused(
        tou('days = ["weekday", "weekday"], start = "15:00", end = "21:00"'),
        "windows.0.days",
        "days must not repeat",
    )
    refused(tou('days = [], start = "15:00", end = "21:00"'), "windows.0.days", "at least 1")
    refused(tou('days = ["workday"], start = "15:00", end = "21:00"'), "days.0", "weekday")


def test_all_months_in_any_order_mean_no_month_condition() -> None:
    shuffled = Window(months=[12, *range(1, 12)], start="15:00", end="21:00")
    assert "month IN" not in window_sql(shuffled)
    assert "months" not in describe_windows([shuffled])
    summer = Window(months=[12, 1, 2], start="15:00", end="21:00")
    assert "month IN (12, 1, 2)" in window_sql(summer)


# 2. window start == end -------------------------------------------------------------------------


def test_start_equal_to_end_is_refused() -> None:
    refused(tou('start = "15:00", end = "15:00"'), "windows.0", "both '15:00'", "00:00")


def test_start_at_24_00_is_refused() -> None:
    refused(tou('start = "24:00", end = "06:00"'), "windows.0", "must be before 24:00")


def test_whole_day_and_wrapping_windows_are_valid() -> None:
    assert validate(tou('start = "00:00", end = "24:00"'))
    assert validate(tou('start = "22:00", end = "07:00"'))


# 3. duplicate TOU period names --------------------------------------------------------------------


def test_duplicate_period_names_are_refused() -> None:
    text = tou('start = "15:00", end = "21:00"').replace('name = "off-peak"', 'name = "peak"')
    refused(text, "components.0.energy", "'Energy'", "period names must be unique", "['peak']")


def test_duplicate_period_names_in_an_adder_are_refused() -> None:
    text = (
        """
[[components]]
type = "energy"
name = "E"
"""
        + SPOT
        + """
    [[components.spot.adders]]
    name = "network"
      [[components.spot.adders.periods]]
      name = "n"
      rate = [{ effective_from = 2024-07-01, value = "0.2", source = "src" }]
      windows = [{ start = "15:00", end = "21:00" }]
      [[components.spot.adders.periods]]
      name = "n"
      default = true
      rate = [{ effective_from = 2024-07-01, value = "0.05", source = "src" }]
"""
    )
    refused(text, "spot.adders.0", "adder 'network'", "period names must be unique")


def test_duplicate_adder_names_are_refused() -> None:
    adder = """
    [[components.spot.adders]]
    name = "fees"
    rate = [{ effective_from = 2024-07-01, value = "0.002", source = "src" }]
"""
    text = '\n[[components]]\ntype = "energy"\nname = "E"\n' + SPOT + adder + adder
    refused(text, "spot.adders", "adder names must be unique", "['fees']")


# 4. holiday calendar and time zone ----------------------------------------------------------------


def test_unknown_holiday_subdivision_is_refused() -> None:
    msg = refused(HDR.replace('"NSW"', '"NWS"') + SUPPLY, "holidays", "subdivision 'NWS'", "'AU'")
    assert "NSW" in msg  # the known subdivisions are listed


def test_unknown_holiday_country_is_refused() -> None:
    refused(HDR.replace('country = "AU"', 'country = "XX"') + SUPPLY, "holidays", "'XX'")


def test_no_holidays_takes_no_subdivision() -> None:
    refused(HDR.replace('country = "AU"', 'country = "none"') + SUPPLY, "holidays", "'none'")
    text = HDR.replace('holidays = { country = "AU", subdivision = "NSW" }', "")
    assert validate(text + 'holidays = { country = "none" }\n' + SUPPLY)


def test_default_holidays_are_national_au() -> None:
    prod = validate(HDR.replace('holidays = { country = "AU", subdivision = "NSW" }', "") + SUPPLY)
    assert (prod.holidays.country, prod.holidays.subdivision) == ("AU", None)


def test_unknown_timezone_is_refused_with_a_suggestion() -> None:
    refused(
        HDR + 'timezone = "Australia/Sidney"\n' + SUPPLY,
        "timezone",
        "'Australia/Sidney' is not an IANA time zone",
        "'Australia/Sydney'",
    )
    assert validate(HDR + 'timezone = "Europe/London"\n' + SUPPLY).timezone == "Europe/London"


# 5. value ranges ------------------------------------------------------------------------------


def test_negative_daily_supply_is_refused() -> None:
    refused(
        SUPPLY.replace('"1.05"', '"-1.05"'),
        "components.0.daily_supply.rate",
        "'Daily supply charge' rate must be zero or more",
        "-1.05",
    )


@pytest.mark.parametrize(
    ("kind", "field"), [("demand", "rate"), ("minimum_charge", "rate"), ("concession", "rate")]
)
def test_negative_fixed_charges_and_credits_are_refused(kind: str, field: str) -> None:
    text = f"""
[[components]]
type = "{kind}"
{field} = [{{ effective_from = 2024-07-01, value = "-8.5", source = "src" }}]
"""
    refused(text, f"components.0.{kind}.{field}", "must be zero or more", "-8.5")


@pytest.mark.parametrize("value", ["10", "1", "-0.1"])
def test_tax_rate_outside_0_1_is_refused(value: str) -> None:
    refused(HDR.replace('"0.10"', f'"{value}"') + SUPPLY, "tax_rate", "tax_rate (GST)", "[0, 1)")


@pytest.mark.parametrize("value", ["5", "-0.1", "1.01"])
def test_discount_fraction_outside_0_1_is_refused(value: str) -> None:
    text = (
        SUPPLY
        + f"""
[[components]]
type = "discount"
fraction = [{{ effective_from = 2024-07-01, value = "{value}", source = "src" }}]
applies_to = ["Daily supply charge"]
"""
    )
    refused(text, "components.1.discount.fraction", "'Discount' fraction", "between 0 and 1")


def test_spot_cap_below_floor_is_refused() -> None:
    text = """
[[components]]
type = "energy"
name = "E"
  [components.spot]
  multiplier = [{ effective_from = 2020-01-01, value = "1", source = "src" }]
  floor = [{ effective_from = 2020-01-01, value = "1.0", source = "src" }]
  cap = [{ effective_from = 2020-01-01, value = "0.5", source = "src" }]
"""
    refused(text, "components.0.energy.spot", "spot cap 0.5 is below spot floor 1.0")


def test_spot_cap_below_floor_only_when_both_in_force() -> None:
    text = """
[[components]]
type = "energy"
name = "E"
  [components.spot]
  multiplier = [{ effective_from = 2020-01-01, value = "1", source = "src" }]
  floor = [{ effective_from = 2020-01-01, value = "-1.0", source = "src" },
           { effective_from = 2025-07-01, value = "20.0", source = "src" }]
  cap = [{ effective_from = 2020-01-01, value = "15.0", source = "src" },
         { effective_from = 2024-07-01, source = "cap retired" }]
"""
    assert validate(text)  # the floor rises above the old cap only after the cap is retired
    raised = text.replace('"cap retired" }', '"src", value = "17.5" }')
    refused(raised, "spot cap 17.5 is below spot floor 20.0", "2025-07-01")


def test_negative_energy_rates_and_spot_floor_stay_allowed() -> None:
    text = """
[[components]]
type = "energy"
name = "E"
rate = [{ effective_from = 2024-07-01, value = "-0.02", source = "src" }]
[[components]]
type = "feed_in"
name = "FiT"
rate = [{ effective_from = 2024-07-01, value = "-0.01", source = "src" }]
"""
    assert validate(text)


# 6. discount targets --------------------------------------------------------------------------


FIT = """
[[components]]
type = "feed_in"
name = "FiT"
rate = [{ effective_from = 2024-07-01, value = "0.05", source = "src" }]
"""


def discount(*targets: str) -> str:
    names = ", ".join(f'"{t}"' for t in targets)
    return f"""
[[components]]
type = "discount"
fraction = [{{ effective_from = 2024-07-01, value = "0.1", source = "src" }}]
applies_to = [{names}]
"""


def test_discount_on_feed_in_is_refused() -> None:
    refused(FIT + discount("FiT"), "discount 'Discount' applies to 'FiT' (feed_in)", "imported")


def test_discount_on_itself_is_refused() -> None:
    refused(SUPPLY + discount("Discount"), "'Discount' (discount)")


def test_discount_on_minimum_charge_or_concession_is_refused() -> None:
    extra = """
[[components]]
type = "minimum_charge"
rate = [{ effective_from = 2024-07-01, value = "30", source = "src" }]
[[components]]
type = "concession"
rate = [{ effective_from = 2024-07-01, value = "0.78", source = "src" }]
"""
    refused(SUPPLY + extra + discount("Minimum charge top-up"), "(minimum_charge)")
    refused(SUPPLY + extra + discount("Concession rebate"), "(concession)")


def test_discount_on_supply_and_usage_is_valid() -> None:
    assert validate(SUPPLY + tou('start = "15:00", end = "21:00"') + discount("Energy"))


# 7. product kind ------------------------------------------------------------------------------


def test_dynamic_with_only_spot_feed_in_is_refused() -> None:
    text = (
        HDR.replace('"standard"', '"dynamic"')
        + """
[[components]]
type = "energy"
name = "Energy"
rate = [{ effective_from = 2024-07-01, value = "0.30", source = "src" }]
[[components]]
type = "feed_in"
name = "FiT"
"""
        + SPOT
    )
    refused(text, "dynamic product needs a spot-linked energy (import) component", "feed_in")


def test_safe_harbour_with_spot_import_is_refused() -> None:
    text = (
        HDR.replace('"standard"', '"safe_harbour"')
        + SAFE_HARBOUR
        + '\n[[components]]\ntype = "energy"\nname = "Energy"\n'
        + SPOT
    )
    refused(text, "safe_harbour product must not price usage from the spot price", "['Energy']")


def test_safe_harbour_with_spot_feed_in_is_valid() -> None:
    text = (
        HDR.replace('"standard"', '"safe_harbour"')
        + SAFE_HARBOUR
        + SUPPLY
        + '\n[[components]]\ntype = "feed_in"\nname = "FiT"\n'
        + SPOT
    )
    assert validate(text).kind == "safe_harbour"


# the CLI-facing error names the file and the dotted key ---------------------------------------


def test_product_file_error_names_the_key() -> None:
    with pytest.raises(ProductFileError) as exc:
        parse_product(HDR + SUPPLY.replace('"1.05"', '"-1.05"'), "probe.toml")
    assert str(exc.value).startswith("probe.toml: components.0.daily_supply.rate: ")
    assert "must be zero or more" in str(exc.value)
