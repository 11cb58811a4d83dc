"""The overlay benchmark's same-run floor: raw kernel VXLAN between h1 and h2, built without fabricd.

In each of the two hosts' lab namespaces (never the machine's own), through netlink (pyroute2):

    bfl-a (192.168.201.N/24)  ==veth==  bfl-b -- bridge bfl0 -- bvx0 (VXLAN VNI 4242, UDP 4790,
                                                                 no learning, local = the host's
                                                                 underlay address)

with one all-zeros FDB entry on bvx0 towards the other host (head-end replication, as fabricd
sets up), every device at the overlay's MTU. A packet takes the instance's datapath (veth, bridge,
VXLAN, the routed underlay through r1) with the kernel's defaults and nothing of fabricd's: no
nftables filter (the port differs from fabricd's), no FDB entries but the flood one. The only
difference from an instance is that the veth's other end stays in the host's namespace.
`remove` deletes the three devices again (deleting bfl-a takes bfl-b with it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

VNI = 4242
PORT = 4790  # not fabricd's 4789: fabricd's nftables filter does not apply to the floor
BRIDGE, VXLAN, VETH, VETH_PORT = "bfl0", "bvx0", "bfl-a", "bfl-b"
SUBNET = "192.168.201"
FLOOD_MAC = "00:00:00:00:00:00"
NTF_SELF = 0x02
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80


@dataclass(frozen=True, slots=True)
class FloorEnd:
    netns: str  # the host's lab namespace
    underlay: str  # its underlay (VTEP) address
    address: str  # its address on the floor, on bfl-a


def ends(h1_netns: str, h1_underlay: str, h2_netns: str, h2_underlay: str) -> tuple[FloorEnd, FloorEnd]:
    return FloorEnd(h1_netns, h1_underlay, f"{SUBNET}.1"), FloorEnd(h2_netns, h2_underlay, f"{SUBNET}.2")


def build(end: FloorEnd, peer: FloorEnd, mtu: int) -> None:
    with NetNS(end.netns) as ns:
        ns.link("add", ifname=BRIDGE, kind="bridge")
        ns.link(
            "add",
            ifname=VXLAN,
            kind="vxlan",
            vxlan_id=VNI,
            vxlan_port=PORT,
            vxlan_learning=0,
            vxlan_udp_csum=0,
            vxlan_local=end.underlay,
        )
        ns.link("add", ifname=VETH, kind="veth", peer={"ifname": VETH_PORT})
        bridge, vxlan, veth, port = (ns.link_lookup(ifname=n)[0] for n in (BRIDGE, VXLAN, VETH, VETH_PORT))
        for index in (vxlan, port):
            ns.link("set", index=index, master=bridge, mtu=mtu)
        for index in (bridge, veth):
            ns.link("set", index=index, mtu=mtu)
        ns.addr("add", index=veth, address=end.address, prefixlen=24)
        for index in (vxlan, port, bridge, veth):
            ns.link("set", index=index, state="up")
        ns.fdb(
            "append",
            ifindex=vxlan,
            lladdr=FLOOD_MAC,
            dst=peer.underlay,
            flags=NTF_SELF,
            state=NUD_PERMANENT | NUD_NOARP,
        )


def remove(end: FloorEnd) -> list[str]:
    """Delete the floor's devices in this namespace; what could not be deleted (expected: [])."""
    left = []
    with NetNS(end.netns) as ns:
        for name in (VETH, VXLAN, BRIDGE):
            found = ns.link_lookup(ifname=name)
            if found:
                with contextlib.suppress(NetlinkError):
                    ns.link("del", index=found[0])
            if ns.link_lookup(ifname=name):
                left.append(f"{end.netns}:{name}")
    return left
