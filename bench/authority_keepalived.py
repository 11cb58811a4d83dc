"""The authority benchmark's baseline: keepalived (VRRP) moving the server address, dnsmasq started by
keepalived's notify scripts, in the same lab, measured by the same clients in the same run.

After fabricd's rounds every fabricd is stopped cleanly (its overlay stays: bridge, VXLAN and flood
entries) and each host gets a veth `kad0` on fabric0 (its own address 192.168.100.24N/24; keepalived
adds the server address 192.168.100.1/24 on the master) and keepalived with its defaults that matter
here (advert_int 1, priority 100, all BACKUP with nopreempt, so a repaired host does not take the
address back). notify_master starts dnsmasq (the same DHCP range, lease time, names and ping check as
fabricd's, and option 224 naming the host); notify_backup and notify_fault stop it.

A round fails the master as fabricd's SIGKILL fails the authority: its service goes at once (the
veth carrying the address is deleted, keepalived and dnsmasq are killed). The gap is to the first
DHCPACK from another host and the first DNS answer, from the same client loops. The failed host is
then repaired (veth back, keepalived started) and joins as a backup. Everything runs in the lab's
namespaces with files under the lab's state directory; lab.down removes whatever is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import NetNS

from bench.authority_clients import DnsReply, GapClient, dns_outage, first_ack, first_dns
from bench.labs import stop_agent
from bench.stats import TIMED_OUT, Json
from fabric_lab import netns
from fabric_lab.runner import Lab

HOSTS = ("h1", "h2", "h3")
DEVICE, PORT = "kad0", "kadp0"
HOST_ADDRESS = {"h1": "192.168.100.241", "h2": "192.168.100.242", "h3": "192.168.100.243"}
SERVER = "192.168.100.1"
VRID = 51
ROUND_TIMEOUT = 15.0
SETTLE_TIMEOUT = 30.0

Progress = Callable[[str], None]


def keepalived_binary() -> str | None:
    return shutil.which("keepalived", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _answered(reply: DnsReply) -> bool:
    return reply.rcode == 0 and bool(reply.answers)


@dataclass
class BaselineRound:
    index: int
    old: str
    dhcp_s: dict[str, float] = field(default_factory=dict)
    dns_s: dict[str, float] = field(default_factory=dict)
    new: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def dhcp_all(self) -> float:
        return max(self.dhcp_s.values(), default=TIMED_OUT)

    @property
    def dns_all(self) -> float:
        return max(self.dns_s.values(), default=TIMED_OUT)


class KeepalivedBaseline:
    def __init__(
        self, lab: Lab, clients: list[GapClient], names: dict[str, str], domain: str, progress: Progress
    ) -> None:
        self.lab, self.clients, self.names, self.domain, self.progress = lab, clients, names, domain, progress
        self.root = lab.state_dir / "keepalived"
        self.binary = keepalived_binary() or "keepalived"
        self.rounds: list[BaselineRound] = []
        self.started_at = 0.0

    def dir(self, host: str) -> Path:
        return self.root / host

    # set-up ------------------------------------------------------------------------------------------

    def build(self) -> None:
        for host in HOSTS:
            stop_agent(self.lab, host)  # a clean stop: the address and dnsmasq go, the overlay stays
        for host in HOSTS:
            self._write_files(host)
            self._add_device(host)
            self._start(host)

    def _write_files(self, host: str) -> None:
        directory = self.dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        hosts = "".join(f"{address} {name}.{self.domain} {name}\n" for name, address in self.names.items())
        (directory / "hosts.dns").write_text(hosts)
        (directory / "dnsmasq.conf").write_text(
            f"""interface={DEVICE}
bind-interfaces
except-interface=lo
no-resolv
no-hosts
no-poll
domain-needed
bogus-priv
user=root
log-facility={directory}/dnsmasq.log
quiet-dhcp
domain={self.domain}
local=/{self.domain}/
addn-hosts={directory}/hosts.dns
dhcp-leasefile={directory}/leases
pid-file={directory}/dnsmasq.pid
dhcp-authoritative
dhcp-ignore-names
dhcp-range=192.168.100.100,192.168.100.199,255.255.255.0,600
dhcp-option-force=option:mtu,1450
dhcp-option=option:router
dhcp-option-force=224,"{host}"
"""
        )
        start, stop = directory / "start-dnsmasq", directory / "stop-dnsmasq"
        start.write_text(f"#!/bin/sh\nexec /usr/sbin/dnsmasq --conf-file={directory}/dnsmasq.conf\n")
        stop.write_text(
            f"#!/bin/sh\n[ -f {directory}/dnsmasq.pid ] && kill $(cat {directory}/dnsmasq.pid)\n"
            f"rm -f {directory}/dnsmasq.pid\nexit 0\n"
        )
        for script in (start, stop):
            script.chmod(0o755)
        (directory / "keepalived.conf").write_text(
            f"""global_defs {{
  router_id bau-{host}
  enable_script_security
  script_user root
}}
vrrp_instance bau {{
  state BACKUP
  nopreempt
  interface {DEVICE}
  virtual_router_id {VRID}
  priority 100
  advert_int 1
  virtual_ipaddress {{
    {SERVER}/24 dev {DEVICE}
  }}
  notify_master {start}
  notify_backup {stop}
  notify_fault {stop}
}}
"""
        )

    def _add_device(self, host: str) -> None:
        ns = self.lab.node(host).netns_name
        with NetNS(ns) as ipr:
            ipr.link("add", ifname=DEVICE, kind="veth", peer={"ifname": PORT})
            (device,) = ipr.link_lookup(ifname=DEVICE)
            (port,) = ipr.link_lookup(ifname=PORT)
            (bridge,) = ipr.link_lookup(ifname="fabric0")
            ipr.link("set", index=device, mtu=1450)
            ipr.link("set", index=port, mtu=1450, master=bridge, state="up")
            ipr.addr("add", index=device, address=HOST_ADDRESS[host], prefixlen=24)
            ipr.link("set", index=device, state="up")

    def _start(self, host: str) -> None:
        directory = self.dir(host)
        argv = [self.binary, "--dont-fork", "--log-console", "--log-detail", "--vrrp"]
        argv += ["-f", str(directory / "keepalived.conf"), "-p", str(directory / "keepalived.pid")]
        argv += ["-r", str(directory / "vrrp.pid")]
        self.lab.node(host).spawn(argv, "keepalived")

    def _processes(self, host: str, names: tuple[str, ...]) -> list[int]:
        found = []
        for pid in netns.pids_in(self.lab.node(host).netns_name):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() in names:
                    found.append(pid)
        return found

    def _fail(self, host: str) -> None:
        """The master's service goes at once: the device with the address, keepalived, dnsmasq."""
        with NetNS(self.lab.node(host).netns_name) as ipr:
            for index in ipr.link_lookup(ifname=PORT):
                ipr.link("del", index=index)
        for pid in self._processes(host, ("keepalived", "dnsmasq")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _repair(self, host: str) -> None:
        with contextlib.suppress(OSError):
            (self.dir(host) / "dnsmasq.pid").unlink()
        self._add_device(host)
        self._start(host)

    def teardown(self) -> list[str]:
        """Stop keepalived and dnsmasq by PID and delete the devices; what was left running."""
        left = []
        for host in HOSTS:
            pids = self._processes(host, ("keepalived", "dnsmasq"))
            netns.stop_pids(pids, grace=3.0)
            left += [f"{host}: pid {p}" for p in pids if netns.alive(p)]
            with contextlib.suppress(Exception), NetNS(self.lab.node(host).netns_name) as ipr:
                for index in ipr.link_lookup(ifname=PORT):
                    ipr.link("del", index=index)
        return left

    # measuring ---------------------------------------------------------------------------------------

    def master(self, timeout: float = SETTLE_TIMEOUT) -> tuple[str | None, bool]:
        """The host whose dnsmasq answers every client now (and answered for the last second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            hosts: set[str | None] = set()
            fresh = True
            for client in self.clients:
                records = client.snapshot(now - 2)
                acks = [r for r in records.dhcp if r.kind == "ack" and r.at >= now - 1]
                dns = [r for r in records.dns if _answered(r) and r.at >= now - 1]
                fresh = fresh and bool(acks) and bool(dns)
                hosts |= {r.host for r in acks}
            if fresh and len(hosts) == 1:
                return hosts.pop(), True
            time.sleep(0.2)
        return None, False

    def run(self, rounds: int) -> Json:
        self.started_at = time.monotonic()
        self.progress("keepalived baseline: fabricd stopped on every host; keepalived + dnsmasq instead")
        self.build()
        for index in range(rounds):
            old, settled = self.master()
            if old is None:
                raise TimeoutError(
                    f"keepalived baseline: no single master answering within {SETTLE_TIMEOUT:g}s"
                )
            round_ = BaselineRound(index, old)
            if not settled:
                round_.notes.append("not settled before the round")
            t0 = time.monotonic()
            self._fail(old)
            deadline = t0 + ROUND_TIMEOUT
            while time.monotonic() < deadline and not self._all_answered(t0, old):
                time.sleep(0.05)
            time.sleep(0.3)
            self._gaps(round_, t0)
            self.progress(
                f"keepalived {index + 1}: {old} -> {round_.new}: DHCP {round_.dhcp_all:.3f}s, "
                f"DNS {round_.dns_all:.3f}s"
            )
            self._repair(old)
            self.rounds.append(round_)
        return {"seconds": round(time.monotonic() - self.started_at, 1)}

    def _all_answered(self, t0: float, old: str) -> bool:
        now = time.monotonic()
        for client in self.clients:
            records = client.snapshot(t0 - 1)
            outage = dns_outage(records, t0, now)
            if first_ack(records, t0, now, old) is None:
                return False
            if outage is None or first_dns(records, outage, now, _answered) is None:
                return False
        return True

    def _gaps(self, round_: BaselineRound, t0: float) -> None:
        until = t0 + ROUND_TIMEOUT
        hosts: set[str] = set()
        for client in self.clients:
            records = client.snapshot(t0 - 1)
            ack = first_ack(records, t0, until, round_.old)
            outage = dns_outage(records, t0, until)
            dns = first_dns(records, outage, until, _answered) if outage is not None else None
            round_.dhcp_s[client.host] = ack.at - t0 if ack is not None else TIMED_OUT
            round_.dns_s[client.host] = dns.at - t0 if dns is not None else TIMED_OUT
            if ack is not None and ack.host:
                hosts.add(ack.host)
        round_.new = hosts.pop() if len(hosts) == 1 else None
