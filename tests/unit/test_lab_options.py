"""`pyprobe lab up`'s options are checked before anything is built."""

from __future__ import annotations

import pytest

from pyprobe.errors import PyprobeError
from pyprobe.lab import topology


@pytest.mark.parametrize("rate", ["fast", "10Mbit", "1.5mbit", "0mbit", "-5mbit", "10 mbit", ""])
def test_a_rate_tc_would_refuse_is_one_clear_error(rate):
    with pytest.raises(PyprobeError) as e:
        topology.Lab("veth", rate=rate)
    assert str(e.value).startswith(f"--rate {rate!r}: a whole number above 0 and a unit (")
    assert "mbit" in str(e.value) and "e.g. 10mbit" in str(e.value)


@pytest.mark.parametrize("rate", ["10mbit", "500kbit", "1gbit", "2MBps", "1000"])
def test_rates_tc_takes_pass(rate):
    assert topology.Lab("veth", rate=rate).rate == rate


@pytest.mark.parametrize("loss", [-1, 100, 0.00001])
def test_a_loss_the_filter_cannot_drop_is_refused(loss):
    with pytest.raises(PyprobeError, match=r"^--loss .*: a percentage from 0\.0001 to 100"):
        topology.Lab("veth", loss=loss)


@pytest.mark.parametrize("loss", [0, 0.0001, 0.05, 20, 99.9])
def test_losses_the_filter_can_drop_pass(loss):
    assert topology.Lab("veth", loss=loss).loss == loss
