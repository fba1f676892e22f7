"""Money: the one rounding rule of a bill line, and GST.

Rule (documented in data/formats/products.md): a line's ex-tax amount is the exact sum of its
interval (or day) amounts, first rounded to 1e-9 and then to 1e-6 of a currency unit to remove
binary noise (the 1e-9 step makes the result independent of the order in which floating-point
sums were added), then rounded ONCE to the cent, half away from zero (``ROUND_HALF_UP`` in
:mod:`decimal`; the 1e-6 step too). The line's tax
is ``round_cents(amount_ex_tax x tax_rate)`` with the same rule, and only on taxable lines (import
charges, discounts on them); feed-in credits and government concessions carry no tax.
``amount_inc_tax = amount_ex_tax + tax``. A bill's totals are the sums of its lines, so the lines
add up to the bill to the cent by construction (and an audit checks it after every run).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")
NANO_PER_UNIT = Decimal(1_000_000_000)


def round_cents(amount: Decimal | float | Fraction) -> Decimal:
    """Round ``amount`` [currency units] to the cent, half away from zero.

    Floats are first taken to whole billionths (``round(amount x 1e9)``, the same float
    arithmetic as :func:`tariffs.lines.nano_expr`) and then to 1e-6 half away from zero (their
    binary noise is far below that), so ``round_cents(0.125) == Decimal("0.13")``,
    ``round_cents(-0.125) == Decimal("-0.13")`` and ``round_cents(0.1 + 0.2) == round_cents(0.3)``.
    A fraction (an exact share, e.g. an amount pro rata by days) is rounded exactly.
    """
    if isinstance(amount, Fraction):
        cents = math.floor(abs(amount) * 100 + Fraction(1, 2))
        return (Decimal(cents if amount >= 0 else -cents) / 100).quantize(CENT)
    d = (
        (Decimal(round(amount * 1_000_000_000)) / NANO_PER_UNIT).quantize(MICRO, ROUND_HALF_UP)
        if isinstance(amount, float)
        else amount
    )
    return d.quantize(CENT, ROUND_HALF_UP)


def line_tax(amount_ex_tax: Decimal, tax_rate: Decimal, taxable: bool) -> Decimal:
    """Tax on one line [currency]: ``round_cents(amount x rate)`` when taxable, else 0.00."""
    if not taxable:
        return Decimal("0.00")
    return round_cents(amount_ex_tax * tax_rate)
