"""BGP UPDATEs on a lab link, captured with tcpdump inside the router's namespace (passive only).

Splits a route's path in two at the wire: before it, the speaker (fabricd's relay and ExaBGP);
after it, the router (bgpd, zebra and the kernel). Timestamps are the kernel's capture times
(wall clock, microseconds), comparable with fabricd's log and with time.time().
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from fabric_lab import netns
from fabric_lab.runner import Lab

BGP_MARKER = b"\xff" * 16
UPDATE = 2
LINKTYPE_ETHERNET = 1


@dataclass(frozen=True)
class Segment:
    wall: float
    src: str
    updates: int  # BGP UPDATE messages that start in this segment


class BgpCapture:
    def __init__(self, lab: Lab, node_name: str, interface: str) -> None:
        self.lab, self.node_name, self.interface = lab, node_name, interface
        node = lab.node(node_name)
        self.path = node.directory / f"bench-bgp-{interface}.pcap"
        self.pid: int | None = None

    def __enter__(self) -> BgpCapture:
        node = self.lab.node(self.node_name)
        command = ["tcpdump", "-i", self.interface, "-n", "-U", "-Z", "root", "-w", str(self.path)]
        self.pid = node.spawn([*command, "tcp port 179"], f"bench-tcpdump-{self.interface}")
        state = self.lab.state()
        state.nodes[self.node_name].pids.append(self.pid)
        state.save()
        deadline = time.monotonic() + 5
        while not self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.pid is not None and netns.alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while netns.alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)

    def segments(self) -> list[Segment]:
        """TCP segments to or from port 179 that carry the start of at least one UPDATE."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return []
        return list(_segments(data))


def _segments(data: bytes) -> list[Segment]:
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B2C3D4:
        order, scale = "<", 1e-6
    elif magic == 0xA1B23C4D:
        order, scale = "<", 1e-9
    else:
        return []
    if struct.unpack(order + "I", data[20:24])[0] != LINKTYPE_ETHERNET:
        return []
    found: list[Segment] = []
    at = 24
    while at + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(order + "IIII", data[at : at + 16])
        frame = data[at + 16 : at + 16 + caplen]
        at += 16 + caplen
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue  # IPv4 only: the routes measured here go over the IPv4 sessions
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        tcp = ip[header:]
        payload = tcp[(tcp[12] >> 4) * 4 :] if len(tcp) >= 20 else b""
        updates = 0
        start = payload.find(BGP_MARKER)
        while start >= 0 and start + 19 <= len(payload):
            length = int.from_bytes(payload[start + 16 : start + 18], "big")
            if payload[start + 18] == UPDATE:
                updates += 1
            start = payload.find(BGP_MARKER, start + max(length, 19))
        if updates:
            found.append(Segment(sec + frac * scale, str(IPv4Address(ip[12:16])), updates))
    return found


def first_update(segments: list[Segment], src: str, after_wall: float) -> float | None:
    """Wall time of the first UPDATE from `src` captured at or after `after_wall`."""
    return next((s.wall for s in segments if s.src == src and s.wall >= after_wall), None)
