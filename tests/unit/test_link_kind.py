"""A device's kind from its link message: the tun driver says "tun" for its
tap devices too; IFLA_TUN_TYPE tells them apart."""

from __future__ import annotations

import pytest

from pyprobe.netns.devices import link_kind


class Attrs:
    def __init__(self, **attrs: object) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> object:
        return self.attrs.get(name)


def link(kind: str | None, **data: object) -> Attrs:
    if kind is None:
        return Attrs()  # lo, a NIC: no IFLA_LINKINFO
    info = Attrs(IFLA_INFO_KIND=kind, IFLA_INFO_DATA=Attrs(**data) if data else None)
    return Attrs(IFLA_LINKINFO=info)


@pytest.mark.parametrize(
    ("msg", "kind"),
    [
        (link("tun", IFLA_TUN_TYPE=2, IFLA_TUN_PI=0), "tap"),
        (link("tun", IFLA_TUN_TYPE=1), "tun"),
        (link("tun"), "tun"),  # no data (an older kernel): what it says
        (link("veth"), "veth"),
        (link("vxlan", IFLA_TUN_TYPE=2), "vxlan"),  # the attribute means nothing there
        (link(None), ""),
    ],
)
def test_link_kind(msg, kind):
    assert link_kind(msg) == kind
