"""The lease table, handed from one cluster authority to the next through LXD.

Why: a new authority's dnsmasq started with no leases, so the first DISCOVER from a client it did
not know made it ping-check a pool address, and dnsmasq answers no DHCP during its 3 s ping: one
SIGKILL failover in bench.authority kept two hosts' renewals waiting 6.2 s instead of 2.2 s.
With the last term's leases, dnsmasq offers a known client its address without a ping.

- While serving, the holder publishes its active IPv4 leases to one network ACL that nothing
  uses (`HANDOVER_ACL`; its name carries the election's prefix, so the LXD observer ignores its
  events): when they changed, at most every `PUBLISH_INTERVAL`, and when only expiries moved, at
  most every minute. A clean stop publishes once more after dnsmasq has stopped and before the
  election record is freed.
- A host that takes the authority reads it before its dnsmasq starts, and keeps it only when it
  is the term just ended (epoch one below its own): leases from an older term may name addresses
  given out again since. Otherwise the term starts with no leases, as it did before.
- What comes from LXD is checked entry by entry (expiry, MAC, address in the served subnet,
  hostname, client id, one lease per address); a bad entry is left out and counted.

Blocking: `HandoverStore` is called from a worker thread.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

from fabricd.authority.dnsmasq import Lease
from fabricd.authority.lease_store import PROJECT, READ_ATTEMPTS, RETRY_PAUSE, get_acl
from fabricd.lxd.api import LXDApi, LXDRequestFailed, LXDUnavailable
from fabricd.lxd.events import ELECTION_ACL
from fabricd.lxd.nics import normalize_mac

HANDOVER_ACL = f"{ELECTION_ACL}leases"  # not a number: the election's chain skips it
HANDOVER_KEY = "user.fabric.authority.leases"
PUBLISH_INTERVAL = 2.0
MAX_LEASES = 4096  # the latest-expiring ones beyond this are not handed over
DESCRIPTION = "fabricd DHCP lease hand-over between authorities; attached to nothing, do not attach or edit"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_CLIENT_ID = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){0,254}")


@dataclass(frozen=True, slots=True)
class HandedOver:
    """The leases a new term starts with, as dnsmasq lease-file lines, and what was left out."""

    lease_file: str = ""
    count: int = 0
    refused: tuple[str, ...] = ()
    why_none: str = ""  # why nothing was taken, when nothing was


def table_rows(leases: Iterable[Lease], now: float) -> list[list[Any]]:
    """The active IPv4 leases as rows [expiry, mac, address, hostname, client id], by address."""
    active = [
        lease
        for lease in leases
        if isinstance(lease.address, IPv4Address)
        and lease.mac is not None
        and (lease.expires is None or lease.expires > now)
    ]
    active.sort(key=lambda lease: lease.expires or float("inf"), reverse=True)
    return [
        [lease.expires or 0, lease.mac, str(lease.address), lease.hostname or "", lease.client_id or ""]
        for lease in sorted(active[:MAX_LEASES], key=lambda lease: int(lease.address))
    ]


def encode_rows(rows: list[list[Any]], epoch: int) -> str:
    return json.dumps({"epoch": epoch, "leases": rows}, separators=(",", ":"))


def encode(leases: Iterable[Lease], epoch: int, now: float) -> str:
    """The active IPv4 leases of term `epoch`, as the text LXD stores."""
    return encode_rows(table_rows(leases, now), epoch)


def decode(text: str | None, epoch: int, subnet: IPv4Network, now: float) -> HandedOver:
    """The lease file for term `epoch` from what term `epoch - 1` published; nothing for any other."""
    if not text:
        return HandedOver(why_none="nothing was published")
    try:
        data = json.loads(text)
    except ValueError:
        return HandedOver(why_none="the published table is not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("leases"), list):
        return HandedOver(why_none="the published table has no lease list")
    published = data.get("epoch")
    if not isinstance(published, int) or published != epoch - 1:
        return HandedOver(why_none=f"the published table is of epoch {published!r}, not {epoch - 1}")
    lines: list[str] = []
    refused: list[str] = []
    taken: set[IPv4Address] = set()
    for index, row in enumerate(data["leases"]):
        try:
            line, address = _line(row, subnet, now)
        except ValueError as exc:
            refused.append(f"entry {index}: {exc}")
            continue
        if address in taken:
            refused.append(f"entry {index}: {address} is leased twice")
            continue
        taken.add(address)
        lines.append(line)
    return HandedOver("".join(lines), len(lines), tuple(refused))


def _line(row: Any, subnet: IPv4Network, now: float) -> tuple[str, IPv4Address]:
    if not isinstance(row, list) or len(row) != 5:
        raise ValueError("expected [expiry, mac, address, hostname, client id]")
    expires, mac_text, address_text, hostname, client_id = row
    if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
        raise ValueError(f"expiry {expires!r} is not a whole number of seconds")
    if expires and expires <= now:
        raise ValueError(f"expired at {expires}")
    mac, why = normalize_mac(mac_text if isinstance(mac_text, str) else None)
    if mac is None:
        raise ValueError(why)
    try:
        address = ip_address(address_text if isinstance(address_text, str) else "")
    except ValueError:
        raise ValueError(f"address {address_text!r} is not an IP address") from None
    if not isinstance(address, IPv4Address) or address not in subnet:
        raise ValueError(f"address {address} is not in {subnet}")
    if not isinstance(hostname, str) or (hostname and not _HOSTNAME.fullmatch(hostname)):
        raise ValueError(f"hostname {hostname!r} is not a DNS name")
    if not isinstance(client_id, str) or (client_id and not _CLIENT_ID.fullmatch(client_id)):
        raise ValueError(f"client id {client_id!r} is not hex bytes")
    return f"{expires} {mac} {address} {hostname or '*'} {client_id or '*'}\n", address


class HandoverStore:
    def __init__(self, api: LXDApi, name: str = HANDOVER_ACL, project: str = PROJECT) -> None:
        self._api = api
        self._name = name
        self._project = project
        self.last_error = ""  # why the last fetch or publish failed, for the log
        self.retries = 0  # reads and writes LXD refused at first (see `lease_store.get_acl`)

    def fetch(self) -> str | None:
        """The published text; None when there is none or LXD did not answer."""
        self.last_error = ""
        try:
            metadata, retries = get_acl(self._api, self._name, self._project)
            self.retries += retries
        except (LXDUnavailable, LXDRequestFailed) as exc:
            self.last_error = str(exc)
            return None
        config = (metadata.get("config") if isinstance(metadata, dict) else None) or {}
        text = config.get(HANDOVER_KEY)
        return text if isinstance(text, str) else None

    def publish(self, text: str) -> bool:
        """Replace the published text (create the ACL the first time); False when LXD refused."""
        config = {HANDOVER_KEY: text}
        body = {"description": DESCRIPTION, "config": config, "ingress": [], "egress": []}
        self.last_error = ""
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                self.retries += 1
                time.sleep(RETRY_PAUSE)
            try:
                self._api.put(f"/network-acls/{self._name}", body, project=self._project)
                return True
            except LXDRequestFailed as exc:
                self.last_error = str(exc)
                if exc.status != 404:  # 404: not created yet, or the race of `lease_store.get_acl`
                    return False
            except LXDUnavailable as exc:
                self.last_error = str(exc)
                return False
            try:
                self._api.post("/network-acls", {"name": self._name, **body}, project=self._project)
                return True
            except LXDRequestFailed as exc:  # it exists after all: the PUT's 404 was that race
                self.last_error = str(exc)
            except LXDUnavailable as exc:
                self.last_error = str(exc)
                return False
        return False
