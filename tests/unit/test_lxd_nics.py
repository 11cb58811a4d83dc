"""One reading of an instance NIC's network for the route planner and the overlay."""

from __future__ import annotations

import pytest

from fabricd.frozen import FrozenMap
from fabricd.lxd.nics import nic_network, on_bridge
from fabricd.lxd.records import NicRecord


@pytest.mark.parametrize(
    ("config", "network"),
    [
        ({"network": "fabric0"}, "fabric0"),
        ({"nictype": "bridged", "parent": "fabric0"}, "fabric0"),  # old style: the bridge is the parent
        ({"nictype": "macvlan", "parent": "eth0"}, ""),  # a parent that is no bridge
        ({}, ""),
    ],
)
def test_nic_network_and_on_bridge_agree(config: dict[str, str], network: str) -> None:
    nic = NicRecord("eth0", FrozenMap(config))
    assert nic_network(nic) == network
    assert on_bridge(nic, "fabric0") is (network == "fabric0")
