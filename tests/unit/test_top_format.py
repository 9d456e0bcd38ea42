"""`pyprobe top`'s numbers: a little is not shown as nothing."""

import pytest

from pyprobe.views.top import _rate


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


def test_state_columns_are_named_as_the_stream_names_them():
    from pyprobe.views.tables import column_name, metric_tables

    assert column_name("old_state") == "OLDSTATE" and column_name("new_state") == "NEWSTATE"
    assert column_name("device") == "DEVICE"
    rows = [
        {
            "metric": "tcp_state_transitions_total",
            "netns": 1,
            "old_state": "SYN_SENT",
            "new_state": "ESTABLISHED",
            "value": 5,
            "delta": 2,
        },
    ]
    (table,) = metric_tables(rows, {})
    assert [c.header for c in table.columns] == ["NETNS", "OLDSTATE", "NEWSTATE", "DELTA", "TOTAL"]
