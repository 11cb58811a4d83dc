"""dnsmasq as fabricd's supervised child: the planned files, SIGHUP for hosts, a restart for its config.

`DnsmasqServer.serve(plan)` makes the smallest change that gets a running dnsmasq serving `plan`:
- not running: write the three files and start it;
- `dnsmasq.conf` changed: write the files and restart it (options are only read at start);
- only `hosts.dhcp` / `hosts.dns` changed: write them and send SIGHUP, which makes dnsmasq re-read
  both without dropping a lease (leases live in the lease file and in memory, not in the files);
- nothing changed: nothing.
`stop()` stops it; the files stay for the next `serve`. The lease file is kept across restarts
while serving, but a fresh start (a new term as the authority) sets it aside as `leases.previous`
and starts empty: while this host stood by, another authority may have handed one of its old
pool addresses to another client (its old client gone), and dnsmasq, reading the stale lease,
would NAK that client's renewal ("address in use"), taking a live address away (lab test). An
empty table is what a new authority starts from, unless the term just ended handed its table over
(cluster mode, `fabricd.authority.handover`): renewals rebuild it (`dhcp-authoritative`) and the
ping check keeps a pool address a client still holds from being handed out.

The child is a `SupervisedChild`: it dies with fabricd (PR_SET_PDEATHSIG, even on SIGKILL), is
restarted with backoff when it exits, is always reaped, and writes to `dnsmasq.log` in the
directory. It runs in the foreground with no pid file.

Privileges. dnsmasq left to drop root itself (its `--user`) changes its user ID after start, and
the kernel then clears the parent-death signal: a SIGKILLed fabricd would leave it serving (seen in
the lab test). So when fabricd is root, dnsmasq is started through `setpriv` already as `nobody`,
with the state directory's group, no supplementary groups, no_new_privs, only the capabilities it
needs (bind port 53/67, ARP injection, the ping check's raw socket) as ambient and bounding set,
and `--pdeathsig SIGKILL` set again after the switch. dnsmasq then changes no credentials itself.
A process left from an earlier run with this directory's `dnsmasq.conf` (fabricd killed in the
microseconds between setpriv's switch and its prctl) is killed before a start.

Files are written atomically (temporary file, then rename). dnsmasq re-reads the hosts files as
`nobody` on SIGHUP and rewrites the lease file in place, so the directory and files carry the
group of the state directory (0750, files 0640, the lease file 0660) and dnsmasq runs with that
group: the state directory need not be opened to everyone (systemd makes /run/fabricd 0750).

`parse_leases` reads dnsmasq's lease file for status (`fabricctl leases`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Literal

from fabricd.authority.dnsmasq_plan import (
    CONF_FILE,
    HOSTS_DHCP_FILE,
    HOSTS_DNS_FILE,
    LEASE_FILE,
    DnsmasqPlan,
)
from fabricd.config.model import IPAddress
from fabricd.log import get_logger
from fabricd.lxd.nics import normalize_mac
from fabricd.process import SupervisedChild

log = get_logger("fabricd.authority.dnsmasq")

LOG_FILE = "dnsmasq.log"
# What dnsmasq needs after start: ports 53 and 67, ARP injection, the ping check's ICMP socket.
CAPABILITIES = "-all,+net_bind_service,+net_admin,+net_raw"
DROP_TO = "nobody"
ServeAction = Literal["started", "restarted", "reloaded", "unchanged"]
_SEARCH_PATH = os.pathsep.join((os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"))


def find_program(name: str) -> str:
    """An executable on PATH or in the sbin directories (often missing from PATH)."""
    return shutil.which(name, path=_SEARCH_PATH) or name


def processes_with(argument: str) -> list[int]:
    """Processes in this mount namespace with `argument` as one of their command-line arguments.

    A path names a file only in its own mount namespace: a process elsewhere with the same argument
    (another host's dnsmasq, when several hosts share one machine's PIDs, as lab nodes do) is not ours.
    """
    found = []
    ours = os.readlink("/proc/self/ns/mnt")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
                if argument.encode() in arguments and os.readlink(entry / "ns" / "mnt") == ours:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (so the signal will not kill it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


class DnsmasqServer:
    def __init__(
        self,
        directory: Path,
        *,
        executable: str | None = None,
        user: str | None = DROP_TO if os.geteuid() == 0 else None,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        stop_grace: float = 5.0,
        ready_wait: float = 2.0,
    ) -> None:
        self.directory = directory
        self.executable = executable or find_program("dnsmasq")
        self.user = user  # None: run dnsmasq as fabricd's own user (tests without root)
        self.setpriv = find_program("setpriv")
        self.backoff_initial, self.backoff_max, self.stop_grace = backoff_initial, backoff_max, stop_grace
        self.ready_wait = ready_wait  # how long a fresh dnsmasq may take to install its SIGHUP handler
        self.reloads = 0
        self.restarts = 0
        self._child: SupervisedChild | None = None
        self._conf: str | None = None  # the dnsmasq.conf the running child was started with
        self._hosts: tuple[str, str] | None = None  # what the running child has (after SIGHUP)
        self._starts_before = 0  # starts of children replaced by a restart
        # Lease-file lines the next fresh start begins with instead of an empty file (the lease
        # hand-over of `fabricd.authority.handover`); cleared by that start and by `stop`.
        self.seed_leases: str | None = None
        self._lock = asyncio.Lock()

    @property
    def conf_file(self) -> Path:
        return self.directory / CONF_FILE

    @property
    def lease_file(self) -> Path:
        return self.directory / LEASE_FILE

    @property
    def log_file(self) -> Path:
        return self.directory / LOG_FILE

    @property
    def serving(self) -> bool:
        """Whether dnsmasq is meant to run (it may be between a crash and its restart)."""
        return self._child is not None

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def starts(self) -> int:
        """How many times a dnsmasq process was started, over every restart."""
        return self._starts_before + (self._child.starts if self._child is not None else 0)

    def dead(self) -> str | None:
        """Why dnsmasq will not be restarted although it should run, or None."""
        return self._child.dead() if self._child is not None else None

    @property
    def last_exit(self) -> str | None:
        return self._child.last_exit if self._child is not None else None

    def argv(self, gid: int) -> list[str]:
        argv = [self.executable, "--keep-in-foreground", f"--conf-file={self.conf_file}", "--pid-file="]
        if self.user is None:
            return argv
        caps = [f"--{kind}={CAPABILITIES}" for kind in ("inh-caps", "ambient-caps", "bounding-set")]
        drop = [self.setpriv, f"--reuid={self.user}", f"--regid={gid}", "--clear-groups", *caps]
        return [*drop, "--no-new-privs", "--pdeathsig=SIGKILL", "--", *argv]

    async def serve(self, plan: DnsmasqPlan) -> ServeAction:
        """Make a running dnsmasq serve `plan` with the smallest change; says what it did."""
        async with self._lock:
            hosts = (plan.hosts_dhcp, plan.hosts_dns)
            child = self._child
            if child is not None and self._conf == plan.conf:
                if self._hosts == hosts:
                    return "unchanged"
                await asyncio.to_thread(self._write, plan)
                await self._reload(child)
                self._hosts = hosts
                return "reloaded"
            action: ServeAction = "started"
            if child is not None:
                await self._stop_child(child, "its configuration changed")
                self.restarts += 1
                action = "restarted"
            if action == "started":
                seed, self.seed_leases = self.seed_leases, None
                await asyncio.to_thread(self._set_aside_leases, seed)
            gid = await asyncio.to_thread(self._write, plan)
            if action == "started":
                await asyncio.to_thread(self._kill_leftovers)
            self._start(gid)
            self._conf, self._hosts = plan.conf, hosts
            log.info("dnsmasq serving", action=action, directory=str(self.directory))
            return action

    async def stop(self) -> None:
        """Stop dnsmasq and reap it; the files and the lease file stay."""
        async with self._lock:
            self.seed_leases = None
            if self._child is not None:
                await self._stop_child(self._child, "no longer the authority")

    def _start(self, gid: int) -> None:
        self._child = SupervisedChild(
            "dnsmasq",
            self.argv(gid),
            {"PATH": _SEARCH_PATH, "LC_ALL": "C"},
            self.log_file,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            stop_grace=self.stop_grace,
        )
        self._child.start()

    async def _stop_child(self, child: SupervisedChild, why: str) -> None:
        log.info("dnsmasq stopping", pid=child.pid, reason=why)
        self._child, self._conf, self._hosts = None, None, None
        await child.stop()
        self._starts_before += child.starts

    async def _reload(self, child: SupervisedChild) -> None:
        """SIGHUP, once the process has its handler: the default action of SIGHUP is to die."""
        deadline = time.monotonic() + self.ready_wait
        while True:
            pid = child.pid
            if pid is None:
                return  # between runs: the next start reads the new files
            if catches(pid, signal.SIGHUP) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
        self.reloads += 1
        log.info("dnsmasq reloaded", pid=pid)

    def _write(self, plan: DnsmasqPlan) -> int:
        """Write the files that differ; returns the group ID dnsmasq runs with."""
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        gid = self.directory.parent.stat().st_gid
        os.chown(self.directory, -1, gid)
        self.directory.chmod(0o750)
        files = {HOSTS_DHCP_FILE: plan.hosts_dhcp, HOSTS_DNS_FILE: plan.hosts_dns, CONF_FILE: plan.conf}
        for name, text in files.items():
            write_atomically(self.directory / name, text, gid)
        self.lease_file.touch(mode=0o660)
        os.chown(self.lease_file, -1, gid)
        self.lease_file.chmod(0o660)
        return gid

    def _set_aside_leases(self, seed: str | None = None) -> None:
        """A new term starts with no leases, or with those handed over (`seed`): this host's own
        from an earlier term may be stale (see the module doc)."""
        with contextlib.suppress(FileNotFoundError):
            if self.lease_file.stat().st_size:
                self.lease_file.replace(self.lease_file.with_name(LEASE_FILE + ".previous"))
                log.info("leases of an earlier term set aside", file=str(self.lease_file) + ".previous")
        if seed:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            self.lease_file.write_text(seed)

    def _kill_leftovers(self) -> None:
        for pid in processes_with(f"--conf-file={self.conf_file}"):
            log.warning("killing a dnsmasq left from an earlier run", pid=pid, conf=str(self.conf_file))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def write_atomically(path: Path, text: str, gid: int, mode: int = 0o640) -> bool:
    """Replace `path` with `text` unless it already holds it; True when it was written."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.chown(temporary, -1, gid)
    temporary.chmod(mode)
    temporary.replace(path)
    return True


# --- the lease file ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """One line of dnsmasq's lease file."""

    expires: int | None  # seconds since the epoch; None: an infinite lease (0 in the file)
    address: IPAddress
    mac: str | None  # IPv4 leases of Ethernet clients
    hostname: str | None
    client_id: str | None  # IPv4: the client identifier; IPv6: the client's DUID
    iaid: int | None = None  # IPv6 only

    def remaining(self, now: float) -> float | None:
        """Seconds left (negative once expired), None when infinite."""
        return None if self.expires is None else self.expires - now


@dataclass(frozen=True, slots=True)
class LeaseTable:
    leases: tuple[Lease, ...] = ()  # by address
    server_duid: str | None = None
    malformed: tuple[str, ...] = ()  # "line N: why", never fatal

    def active(self, now: float) -> tuple[Lease, ...]:
        return tuple(lease for lease in self.leases if lease.expires is None or lease.expires > now)


def parse_leases(text: str) -> LeaseTable:
    """dnsmasq's lease file: `EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID` per IPv4 lease, then after a
    `duid SERVER-DUID` line `EXPIRY IAID ADDRESS HOSTNAME CLIENT-DUID` per IPv6 lease; `*` is
    empty. A line that does not read is listed in `malformed` and the rest is still read."""
    leases, malformed = [], []
    duid: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "duid" and len(fields) == 2:
            duid = fields[1]
            continue
        try:
            leases.append(_lease(fields, ipv6=duid is not None))
        except ValueError as exc:
            malformed.append(f"line {number}: {exc}")
    leases.sort(key=lambda lease: (lease.address.version, int(lease.address)))
    return LeaseTable(tuple(leases), duid, tuple(malformed))


def _lease(fields: list[str], ipv6: bool) -> Lease:
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields, got {len(fields)}")
    expiry, hardware, address_text, hostname, client = fields
    if not expiry.isdigit():
        raise ValueError(f"expiry {expiry!r} is not a number")
    address = ip_address(address_text)  # ValueError names the text
    if isinstance(address, IPv4Address) == ipv6:
        raise ValueError(f"address {address} in the IPv{4 if not ipv6 else 6} part of the file")
    mac = iaid = None
    if ipv6:
        iaid_text = hardware.removeprefix("T")  # T: a temporary address
        if not iaid_text.isdigit():
            raise ValueError(f"IAID {hardware!r} is not a number")
        iaid = int(iaid_text)
    elif "-" not in hardware:  # Ethernet; other hardware types are written as TYPE-ADDRESS
        mac, why = normalize_mac(hardware)
        if mac is None:
            raise ValueError(why)
    return Lease(
        int(expiry) or None,
        address,
        mac,
        None if hostname == "*" else hostname,
        None if client == "*" else client,
        iaid,
    )


def read_leases(path: Path) -> LeaseTable:
    """The lease file's table; empty when there is no file yet."""
    try:
        return parse_leases(path.read_text(errors="replace"))
    except FileNotFoundError:
        return LeaseTable()
