"""`pyprobe top`'s numbers: a little is not shown as nothing."""

import pytest

from pyprobe.top import _rate


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.0, "%", "0%"),
        (0.004, "%", "<0.1%"),
        (0.06, "%", "0.1%"),
        (2.5, "/s", "2.5/s"),
        (3.0, "/s", "3/s"),
        (1530.0, "B/s", "1.5kB/s"),
        (2.2e6, "/s", "2.2M/s"),
    ],
)
def test_rates(value, unit, shown):
    assert _rate(value, unit) == shown
