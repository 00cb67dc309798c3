"""number_at_least (plugins/plugin_utils/_regex_numbers.py) against Decimal comparison."""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._regex_numbers import (
    number_at_least,
)

# MLPerf's accuracy targets (submission checker): resnet 76.46 x 0.99, retinanet 37.55 x 0.99,
# bert 90.874 x 0.99 and x 0.999; and edge cases.
THRESHOLDS = [
    "75.6954",
    "37.1745",
    "89.96526",
    "90.783126",
    "0",
    "0.5",
    "1",
    "9",
    "10",
    "99.9",
    "100",
    "0.05",
    "909.0909",
    "19.99",
]


def numerals(rng: random.Random, threshold: Decimal) -> list[str]:
    """Numerals around and far from the threshold, as accuracy scripts print them."""
    found = set()
    for _draw in range(400):
        scale = rng.choice(
            [Decimal("0.001"), Decimal("0.01"), Decimal("0.1"), Decimal(1), Decimal(10)]
        )
        value = abs(threshold + Decimal(rng.randint(-2000, 2000)) * scale)
        places = rng.randint(0, 6)
        text = format(round(value, places), "f")
        if rng.random() < 0.1:
            text = "0" + text
        if rng.random() < 0.1 and "." not in text:
            text += "."
        found.add(text)
    text = format(threshold, "f")
    found.update({text, text + "0", text + "1", "0" + text})
    return sorted(found)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_matches_exactly_the_numbers_at_least_the_threshold(threshold: str) -> None:
    pattern = re.compile("^v=" + number_at_least(threshold))
    limit = Decimal(threshold)
    rng = random.Random(threshold)
    for numeral in numerals(rng, limit):
        for after in ("", "%", ", good=1", "}"):
            line = "v=" + numeral + after
            assert bool(pattern.match(line)) == (Decimal(numeral.rstrip(".") or "0") >= limit), line


def test_not_a_partial_number() -> None:
    pattern = re.compile("^v=" + number_at_least("75.6954"))
    for line in ("v=", "v=.", "v=abc", "v=-80", "v=7", "v=75.69539", "v=75.6953999"):
        assert not pattern.match(line), line
    assert pattern.match("v=75.6954")


@pytest.mark.parametrize("bad", ["x", "-1", "nan", "inf", None])
def test_bad_thresholds(bad: object) -> None:
    with pytest.raises(ValueError, match="number_at_least needs"):
        number_at_least(bad)
