"""Frames for the overlay lab tests, run inside a lab node: sniff for a marker, send test frames.

python -m tests.lab.overlay_probe sniff IFACE MARKER SECONDS   # prints "ready", then JSON counts
python -m tests.lab.overlay_probe frames IFACE MARKER          # broadcast, IPv4 and IPv6 multicast
python -m tests.lab.overlay_probe vxlan DST VNI MARKER         # one VXLAN packet, broadcast inside
"""

from __future__ import annotations

import json
import socket
import sys
import time

ETH_P_ALL = 0x0003
KINDS = (b"bcast", b"mcast4", b"mcast6", b"vxlan")


def sniff(iface: str, marker: str, seconds: float) -> dict[str, int]:
    """Count frames on `iface` carrying marker+kind, by kind (taps see frames before the bridge)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    print("ready", flush=True)
    counts = {kind.decode(): 0 for kind in KINDS}
    counts["any"] = 0
    needle = marker.encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        at = frame.find(needle)
        if at < 0:
            continue
        counts["any"] += 1
        tail = frame[at + len(needle) :]
        for kind in KINDS:
            if tail.startswith(kind):
                counts[kind.decode()] += 1
    return counts


def frames(iface: str, marker: str) -> None:
    from scapy.all import IP, UDP, Ether, IPv6, Raw, sendp

    tag = marker.encode()
    sendp(
        [
            Ether(dst="ff:ff:ff:ff:ff:ff") / IP(dst="255.255.255.255") / UDP(dport=9) / Raw(tag + b"bcast"),
            Ether(dst="01:00:5e:01:01:01") / IP(dst="239.1.1.1") / UDP(dport=9999) / Raw(tag + b"mcast4"),
            Ether(dst="33:33:00:00:01:01") / IPv6(dst="ff0e::101") / UDP(dport=9999) / Raw(tag + b"mcast6"),
        ],
        iface=iface,
        verbose=False,
    )


def vxlan(dst: str, vni: int, marker: str) -> None:
    from scapy.all import IP, UDP, VXLAN, Ether, Raw, send

    inner = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:66:66") / IP(dst="255.255.255.255")
    # flags 0x08 (VNI valid) only: scapy would add the GPE next-protocol bit, which Linux drops.
    packet = IP(dst=dst) / UDP(sport=54321, dport=4789) / VXLAN(flags=0x08, vni=vni) / inner / UDP(dport=9999)
    send(packet / Raw(marker.encode() + b"vxlan"), verbose=False, count=3, inter=0.05)


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "sniff":
        print(json.dumps(sniff(args[0], args[1], float(args[2]))), flush=True)
    elif command == "frames":
        frames(args[0], args[1])
    elif command == "vxlan":
        vxlan(args[0], int(args[1]), args[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
