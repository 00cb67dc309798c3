# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A regex for "a decimal number at least T", for accuracy checks that print only a number.

MLPerf's accuracy scripts print a value (``accuracy=76.456%``, ``mAP=37.552%``,
``{"exact_match": 82.7, "f1": 90.87}``), not a verdict; the verdict is the value against the
benchmark's target. A harness profile's ``accuracy`` regexes are matched line by line on the
host, so the profile renders the target into a regex with the Jinja filter ``number_at_least``
(see docs/harness.md). Pure functions; no imports from the rest of the collection.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_ANY_FRACTION = r"(?:\.[0-9]*)?"
_END = r"(?![0-9.])"


def _greater_digit(digit: str) -> str | None:
    """A character class of the digits greater than ``digit``, or None for 9."""
    value = int(digit)
    if value == 9:
        return None
    return "[%d-9]" % (value + 1) if value < 8 else "9"


def number_at_least(threshold: Any) -> str:
    """A regex matching a whole decimal numeral (``76.456``, ``0076``, ``90.``) >= ``threshold``.

    The numeral must not be followed by another digit or a dot; a sign or an exponent is not a
    numeral here. ``threshold`` is a non-negative number or numeric string.
    """
    try:
        value = Decimal(str(threshold))
    except InvalidOperation:
        raise ValueError("number_at_least needs a number, got %r" % (threshold,)) from None
    if not value.is_finite() or value < 0:
        raise ValueError("number_at_least needs a finite number >= 0, got %r" % (threshold,))
    text = format(value, "f")
    integer, _dot, fraction = text.partition(".")
    integer = integer.lstrip("0")
    fraction = fraction.rstrip("0")
    width = len(integer)
    alternatives = ["[1-9][0-9]{%d,}%s" % (width, _ANY_FRACTION)]  # more integer digits
    for index, digit in enumerate(integer):  # as many integer digits, and a greater one
        greater = _greater_digit(digit)
        if greater is not None:
            rest = width - index - 1
            alternatives.append(
                "%s%s%s%s"
                % (integer[:index], greater, "[0-9]{%d}" % rest if rest else "", _ANY_FRACTION)
            )
    if fraction:  # the same integer part, and a fraction at least as large
        options = [fraction + "[0-9]*"]
        for index, digit in enumerate(fraction):
            greater = _greater_digit(digit)
            if greater is not None:
                options.append(fraction[:index] + greater + "[0-9]*")
        alternatives.append(r"%s\.(?:%s)" % (integer, "|".join(options)))
    else:
        alternatives.append(integer + _ANY_FRACTION)
    return "(?=\\.?[0-9])0*(?:%s)%s" % ("|".join(alternatives), _END)
