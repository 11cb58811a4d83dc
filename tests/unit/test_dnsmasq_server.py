"""The dnsmasq applier with a stand-in dnsmasq (no root): start, SIGHUP, restart, stop; the lease file."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from pathlib import Path
from typing import TypeVar

from hypothesis import given
from hypothesis import strategies as st

from fabric_lab.netns import alive
from fabricd.authority.dnsmasq import DnsmasqServer, Lease, LeaseTable, parse_leases, read_leases
from fabricd.authority.dnsmasq_plan import DnsmasqPlan

_T = TypeVar("_T")

# Records its argv and every SIGHUP, as one JSON line per event, in $FAKE_LOG; like dnsmasq it reads
# the hosts files at start and again on SIGHUP. HANDLER_DELAY: seconds before it handles SIGHUP.
FAKE = textwrap.dedent(
    """\
    import json, os, signal, sys, time
    log = {log!r}
    conf = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--conf-file="))
    directory = os.path.dirname(conf)

    def note(event):
        hosts = open(os.path.join(directory, "hosts.dns")).read()
        with open(log, "a") as out:
            entry = {{"pid": os.getpid(), "event": event, "argv": sys.argv, "hosts": hosts}}
            out.write(json.dumps(entry) + "\\n")

    time.sleep({delay})
    signal.signal(signal.SIGHUP, lambda *_: note("hup"))
    note("start")
    while True:
        time.sleep(1)
    """
)


def fake_dnsmasq(tmp_path: Path, delay: float = 0.0) -> tuple[str, Path]:
    log = tmp_path / "events.jsonl"
    script = tmp_path / "fake-dnsmasq"
    script.write_text(f"#!{sys.executable}\n" + FAKE.format(log=str(log), delay=delay))
    script.chmod(0o755)
    return str(script), log


def events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def plan(
    conf: str = "interface=x\n", names: str = "10.0.0.5 c1\n", hosts: str = "02:00:00:00:00:01,c1\n"
) -> DnsmasqPlan:
    return DnsmasqPlan(conf=conf, hosts_dhcp=hosts, hosts_dns=names)


async def until(check: Callable[[], _T], timeout: float = 5.0) -> _T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
    return value


def run(main: Callable[[], Awaitable[_T]]) -> _T:
    return asyncio.run(main())


def test_start_reload_restart_and_stop(tmp_path: Path) -> None:
    executable, log = fake_dnsmasq(tmp_path)
    directory = tmp_path / "state" / "dnsmasq"

    async def main() -> None:
        server = DnsmasqServer(directory, executable=executable, user=None, backoff_initial=0.05)
        assert await server.serve(plan()) == "started"
        first = await until(lambda: server.pid)
        await until(lambda: events(log))
        assert await server.serve(plan()) == "unchanged"

        # hosts only: the same process, one SIGHUP, and it reads the new names
        assert await server.serve(plan(names="10.0.0.6 c2\n")) == "reloaded"
        hup = await until(lambda: [e for e in events(log) if e["event"] == "hup"])
        assert server.pid == first and hup == [{**hup[0], "pid": first, "hosts": "10.0.0.6 c2\n"}]
        assert await server.serve(plan(names="10.0.0.6 c2\n", hosts="")) == "reloaded"
        assert (directory / "hosts.dhcp").read_text() == ""

        # the config: a new process, the old one reaped
        assert await server.serve(plan(conf="interface=y\n", names="10.0.0.6 c2\n", hosts="")) == "restarted"
        second = await until(lambda: server.pid)
        assert second != first and not alive(first)
        assert server.starts == 2 and server.reloads == 2 and server.restarts == 1

        await server.stop()
        assert server.pid is None and not server.serving and not alive(second)
        assert (directory / "dnsmasq.conf").read_text() == "interface=y\n"  # files stay
        assert await server.serve(plan()) == "started"  # and it can serve again
        await until(lambda: server.pid)
        await server.stop()

    run(main)
    start = next(e for e in events(log) if e["event"] == "start")
    argv = start["argv"]
    assert isinstance(argv, list)
    assert argv[1:] == ["--keep-in-foreground", f"--conf-file={directory / 'dnsmasq.conf'}", "--pid-file="]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    for name in ("dnsmasq.conf", "hosts.dhcp", "hosts.dns"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o640
    assert stat.S_IMODE((directory / "leases").stat().st_mode) == 0o660  # dnsmasq rewrites it in place
    assert not list(directory.glob(".*.tmp"))
    assert (directory / "dnsmasq.log").exists()


def test_forgotten_leases_are_gone_at_the_next_start_only(tmp_path: Path) -> None:
    executable, _ = fake_dnsmasq(tmp_path)
    directory = tmp_path / "state" / "dnsmasq"
    lease = "1700000000 02:00:00:00:00:01 10.0.0.5 c1 *\n"

    async def main() -> None:
        server = DnsmasqServer(directory, executable=executable, user=None, backoff_initial=0.05)
        assert await server.serve(plan()) == "started"
        (directory / "leases").write_text(lease)
        await server.stop()
        assert await server.serve(plan()) == "started"  # kept without being told
        assert (directory / "leases").read_text() == lease
        server.forget_leases()
        assert await server.serve(plan(names="10.0.0.6 c2\n")) == "reloaded"  # a running one keeps them
        assert (directory / "leases").read_text() == lease
        await server.stop()
        assert (directory / "leases").read_text() == lease
        assert await server.serve(plan()) == "started"
        assert (directory / "leases").read_text() == ""
        (directory / "leases").write_text(lease)
        await server.stop()
        assert await server.serve(plan()) == "started"  # once: the start after that keeps them
        assert (directory / "leases").read_text() == lease
        await server.stop()

    run(main)


def test_as_root_dnsmasq_starts_as_nobody_through_setpriv_and_keeps_its_death_signal(tmp_path: Path) -> None:
    server = DnsmasqServer(tmp_path, executable="/usr/sbin/dnsmasq", user="nobody")
    caps = "-all,+net_bind_service,+net_admin,+net_raw"
    assert server.argv(123)[1:] == [
        "--reuid=nobody", "--regid=123", "--clear-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}",
        "--no-new-privs", "--pdeathsig=SIGKILL", "--",
        "/usr/sbin/dnsmasq", "--keep-in-foreground", f"--conf-file={tmp_path / 'dnsmasq.conf'}",
        "--pid-file=",
    ]  # fmt: skip
    assert server.argv(123)[0].endswith("setpriv")


def test_a_dnsmasq_left_from_an_earlier_run_is_killed_before_a_start(tmp_path: Path) -> None:
    executable, _ = fake_dnsmasq(tmp_path)
    directory = tmp_path / "d"
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--conf-file={directory / 'dnsmasq.conf'}"]
    )

    async def main() -> None:
        server = DnsmasqServer(directory, executable=executable, user=None)
        await server.serve(plan())
        await until(lambda: server.pid)
        await server.stop()

    try:
        run(main)
        assert leftover.wait(5) == -9
    finally:
        leftover.kill()


def test_sighup_waits_for_the_handler_of_a_fresh_dnsmasq(tmp_path: Path) -> None:
    executable, log = fake_dnsmasq(tmp_path, delay=0.3)  # SIGHUP would kill it for 0.3 s

    async def main() -> tuple[int, int | None, int]:
        server = DnsmasqServer(tmp_path / "d", executable=executable, user=None, backoff_initial=5)
        await server.serve(plan())
        first = await until(lambda: server.pid)
        assert await server.serve(plan(names="10.0.0.7 c3\n")) == "reloaded"
        await until(lambda: [e for e in events(log) if e["event"] == "hup"])
        pid = server.pid
        starts = server.starts
        await server.stop()
        return first, pid, starts

    first, pid, starts = run(main)
    assert pid == first and starts == 1


def test_a_dnsmasq_that_exits_is_restarted_with_the_current_files(tmp_path: Path) -> None:
    executable, log = fake_dnsmasq(tmp_path)

    async def main() -> None:
        server = DnsmasqServer(tmp_path / "d", executable=executable, user=None, backoff_initial=0.05)
        await server.serve(plan())
        first = await until(lambda: server.pid)
        await until(lambda: events(log))
        os.kill(first, 9)
        second = await until(lambda: server.pid if server.pid != first else None)
        assert server.serving and server.starts == 2 and second != first
        assert server.last_exit is not None and "exited with status -9" in server.last_exit
        await server.stop()

    run(main)


def test_a_missing_dnsmasq_is_retried_not_fatal(tmp_path: Path) -> None:
    async def main() -> str | None:
        server = DnsmasqServer(
            tmp_path / "d", executable=str(tmp_path / "nope"), user=None, backoff_initial=0.05
        )
        assert await server.serve(plan()) == "started"
        reason = await until(lambda: server.last_exit)
        await server.stop()
        return reason

    assert "cannot start dnsmasq" in run(main)


# --- the lease file ---------------------------------------------------------------------------------

LEASES = """\
1796402958 02:aa:00:00:00:77 10.200.0.191 * 01:02:aa:00:00:00:77
1796402955 02:AA:00:00:00:05 10.200.0.5 c1 01:02:aa:00:00:00:05
0 02:aa:00:00:00:06 10.200.0.6 forever *
1796402955 06-02:aa:00:00:00:08 10.200.0.8 tr *
junk
1796402955 02:aa:00:00:00:09 10.200.0.300 x *
1796402955 02:aa:00:00:00:0a fd00::1 x *
duid 00:01:00:01:2c:5e:3b:1a:02:00:00:00:00:01
1796402955 12345 fd00:200::5 c1 00:01:00:01:aa
1796402955 T7 fd00:200::6 * 00:01:00:01:bb
1796402955 02:aa:00:00:00:0b 10.200.0.9 x *
"""


def test_lease_file_is_read_line_by_line() -> None:
    table = parse_leases(LEASES)
    assert [str(lease.address) for lease in table.leases] == [
        "10.200.0.5", "10.200.0.6", "10.200.0.8", "10.200.0.191", "fd00:200::5", "fd00:200::6",
    ]  # fmt: skip
    c1 = table.leases[0]
    assert c1 == Lease(
        1796402955, ip_address("10.200.0.5"), "02:aa:00:00:00:05", "c1", "01:02:aa:00:00:00:05"
    )
    assert table.leases[1].expires is None and table.leases[1].remaining(0) is None
    assert table.leases[2].mac is None  # not Ethernet
    assert table.leases[4].iaid == 12345 and table.leases[5].iaid == 7 and table.leases[5].hostname is None
    assert table.server_duid == "00:01:00:01:2c:5e:3b:1a:02:00:00:00:00:01"
    assert [m.split(":")[0] for m in table.malformed] == ["line 5", "line 6", "line 7", "line 11"]
    assert "expected 5 fields" in table.malformed[0]
    assert table.active(1796402956) == (table.leases[1], table.leases[3])


def test_missing_lease_file_is_an_empty_table(tmp_path: Path) -> None:
    assert read_leases(tmp_path / "leases") == LeaseTable()
    (tmp_path / "leases").write_bytes(LEASES.encode() + b"\xff\xfe\n")
    assert len(read_leases(tmp_path / "leases").leases) == 6


@given(st.text())
def test_any_text_reads_without_raising(text: str) -> None:
    table = parse_leases(text)
    assert len(table.leases) + len(table.malformed) <= len(text.splitlines())


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**40),
            st.integers(1, 2**32 - 2).map(lambda n: ip_address(n)),
            st.binary(min_size=6, max_size=6).map(
                lambda b: ":".join(f"{x:02x}" for x in bytes([b[0] & 0xFE | 0x02, *b[1:]]))
            ),
            st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)),
        ),
        max_size=10,
    )
)
def test_written_leases_read_back(rows: list[tuple[int, object, str, str | None]]) -> None:
    text = "".join(f"{e} {mac} {a} {h or '*'} *\n" for e, a, mac, h in rows)
    table = parse_leases(text)
    assert table.malformed == ()
    got = sorted(
        (lease.expires or 0, str(lease.address), lease.mac, lease.hostname or "") for lease in table.leases
    )
    assert got == sorted((e, str(a), mac, h or "") for e, a, mac, h in rows)
