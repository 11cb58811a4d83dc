"""The lease hand-over between cluster authorities: the table's codec, its checks, and its timing
(published while serving and at a clean stop, read at a take, before dnsmasq starts)."""

from __future__ import annotations

import asyncio
import json
import time
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fabricd.authority.dnsmasq import DnsmasqServer, Lease, parse_leases
from fabricd.authority.election import ElectionTimers, Elector
from fabricd.authority.handover import HANDOVER_KEY, MAX_LEASES, HandoverStore, decode, encode
from fabricd.authority.handover_runner import LeaseHandover
from fabricd.authority.lease_store import READ_ATTEMPTS
from fabricd.authority.runner import ElectionRunner
from fabricd.lxd.api import LXDRequestFailed
from tests.unit.test_dnsmasq_server import fake_dnsmasq, plan, until
from tests.unit.test_election_runner import HangingStore

SUBNET = IPv4Network("192.168.100.0/24")
NOW = 1_800_000_000.0


def lease(host: int, mac_byte: int, expires: int | None = int(NOW) + 600, name: str | None = None) -> Lease:
    mac = f"02:ac:0d:00:00:{mac_byte:02x}"
    return Lease(expires, ip_address(f"192.168.100.{host}"), mac, name, f"01:{mac}")


def published(rows: list[object], epoch: int = 4) -> str:
    return json.dumps({"epoch": epoch, "leases": rows})


# --- the codec and its checks -------------------------------------------------------------------


@given(
    st.dictionaries(
        st.integers(1, 254),
        st.tuples(st.integers(1, 255), st.integers(int(NOW) + 1, int(NOW) + 86_400) | st.none()),
        max_size=40,
    ),
    st.integers(0, 1000),
)
def test_the_next_term_reads_back_every_active_lease_of_the_last(
    table: dict[int, tuple[int, int | None]], epoch: int
) -> None:
    leases = [lease(host, mac, expires, f"c{host}") for host, (mac, expires) in table.items()]
    taken = decode(encode(leases, epoch, NOW), epoch + 1, SUBNET, NOW)
    assert taken.refused == () and taken.count == len(leases)
    read = parse_leases(taken.lease_file)
    assert read.malformed == ()
    assert {(x.address, x.mac, x.expires, x.hostname, x.client_id) for x in read.leases} == {
        (x.address, x.mac, x.expires, x.hostname, x.client_id) for x in leases
    }


def test_only_the_term_just_ended_is_taken() -> None:
    text = encode([lease(10, 1)], 4, NOW)
    assert decode(text, 5, SUBNET, NOW).count == 1
    for epoch in (4, 6, 9):  # its own term, or a table older than the last term's
        taken = decode(text, epoch, SUBNET, NOW)
        assert taken.count == 0 and taken.lease_file == "" and "epoch 4" in taken.why_none
    for text_ in (None, "", "not json", "[]", '{"epoch": 4}', '{"epoch": "4", "leases": []}'):
        taken = decode(text_, 5, SUBNET, NOW)
        assert taken.count == 0 and taken.why_none


def test_a_bad_entry_is_left_out_and_the_rest_kept() -> None:
    good = [int(NOW) + 60, "02:ac:0d:00:00:01", "192.168.100.10", "c1", "01:02:ac:0d:00:00:01"]
    bad = {
        "not a row": "192.168.100.11",
        "short row": [int(NOW) + 60, "02:ac:0d:00:00:02"],
        "expired": [int(NOW) - 1, "02:ac:0d:00:00:03", "192.168.100.13", "", ""],
        "expiry a string": ["1", "02:ac:0d:00:00:04", "192.168.100.14", "", ""],
        "expiry a bool": [True, "02:ac:0d:00:00:05", "192.168.100.15", "", ""],
        "multicast MAC": [int(NOW) + 60, "01:00:5e:00:00:01", "192.168.100.16", "", ""],
        "outside the subnet": [int(NOW) + 60, "02:ac:0d:00:00:07", "10.0.0.7", "", ""],
        "IPv6": [int(NOW) + 60, "02:ac:0d:00:00:08", "fd00::8", "", ""],
        "a line break in the name": [int(NOW) + 60, "02:ac:0d:00:00:09", "192.168.100.19", "a\n1 x", ""],
        "a space in the client id": [int(NOW) + 60, "02:ac:0d:00:00:0a", "192.168.100.20", "", "01 02"],
        "the same address again": [int(NOW) + 60, "02:ac:0d:00:00:0b", "192.168.100.10", "", ""],
    }
    taken = decode(published([good, *bad.values()]), 5, SUBNET, NOW)
    assert taken.count == 1 and len(taken.refused) == len(bad), taken.refused
    assert taken.lease_file == f"{int(NOW) + 60} 02:ac:0d:00:00:01 192.168.100.10 c1 01:02:ac:0d:00:00:01\n"
    infinite = decode(published([[0, "02:ac:0d:00:00:01", "192.168.100.10", "", ""]]), 5, SUBNET, NOW)
    assert infinite.lease_file == "0 02:ac:0d:00:00:01 192.168.100.10 * *\n"


def test_the_published_table_leaves_out_expired_ipv6_and_macless_leases_and_keeps_the_latest() -> None:
    v6 = Lease(int(NOW) + 60, ip_address("fd00::5"), None, None, "00:01", 7)
    leases = [lease(10, 1), lease(11, 2, expires=int(NOW) - 5), v6, lease(12, 3, expires=None)]
    rows = json.loads(encode(leases, 3, NOW))["leases"]
    assert [row[2] for row in rows] == ["192.168.100.10", "192.168.100.12"]
    first = int(IPv4Address("10.1.0.0"))
    many = [Lease(int(NOW) + 10 + i, IPv4Address(first + i), "02:00:00:00:00:01", None, None)
            for i in range(MAX_LEASES + 5)]  # fmt: skip
    kept = json.loads(encode(many, 3, NOW))["leases"]
    assert len(kept) == MAX_LEASES and min(row[0] for row in kept) == int(NOW) + 15


# --- the hand-over, running ---------------------------------------------------------------------


class FakePublished:
    def __init__(self, text: str | None = None, hang: float = 0.0) -> None:
        self.text, self.hang, self.publishes = text, hang, 0
        self.last_error = ""

    def fetch(self) -> str | None:
        time.sleep(self.hang)
        return self.text

    def publish(self, text: str) -> bool:
        self.text, self.publishes = text, self.publishes + 1
        return True


def test_a_take_seeds_the_new_dnsmasq_and_a_wrong_or_late_table_starts_it_empty(tmp_path: Path) -> None:
    executable, _ = fake_dnsmasq(tmp_path)
    now = time.time()
    last_term = encode([lease(10, 1, int(now) + 600, "c1")], 6, now)

    async def take(store: FakePublished, epoch: int) -> str:
        directory = tmp_path / f"d{epoch}-{store.hang}"
        server = DnsmasqServer(directory, executable=executable, user=None, backoff_initial=0.05)
        handover = LeaseHandover(store, server, SUBNET, lambda: True, lambda: epoch)
        await handover.on_take(epoch)
        await server.serve(plan())
        await until(lambda: server.pid)
        text = server.lease_file.read_text()
        await server.stop()
        return text

    seeded = asyncio.run(take(FakePublished(last_term), 7))
    assert seeded == f"{int(now) + 600} 02:ac:0d:00:00:01 192.168.100.10 c1 01:02:ac:0d:00:00:01\n"
    assert asyncio.run(take(FakePublished(last_term), 8)) == ""  # a term in between published nothing
    assert asyncio.run(take(FakePublished(last_term, hang=1.0), 7)) == ""  # LXD slower than 0.5 s


def test_a_seed_is_dropped_when_the_term_ends_before_dnsmasq_starts(tmp_path: Path) -> None:
    executable, _ = fake_dnsmasq(tmp_path)
    now = time.time()

    async def main() -> str:
        server = DnsmasqServer(tmp_path / "d", executable=executable, user=None, backoff_initial=0.05)
        handover = LeaseHandover(FakePublished(encode([lease(10, 1, int(now) + 60)], 1, now)), server,
                                 SUBNET, lambda: True, lambda: 2)  # fmt: skip
        await handover.on_take(2)
        await server.stop()  # fenced before the pass that would have started dnsmasq
        await server.serve(plan())
        await until(lambda: server.pid)
        text = server.lease_file.read_text()
        await server.stop()
        return text

    assert asyncio.run(main()) == ""


def test_the_holder_publishes_when_its_bindings_change_and_once_more_at_a_clean_stop(tmp_path: Path) -> None:
    timers = ElectionTimers(ttl=0.6, renew_interval=0.05, margin=0.2)
    executable, _ = fake_dnsmasq(tmp_path)

    async def main() -> tuple[FakePublished, list[int]]:
        store, published_store = HangingStore(), FakePublished()
        server = DnsmasqServer(tmp_path / "d", executable=executable, user=None, backoff_initial=0.05)
        taken: list[int] = []
        runner: ElectionRunner

        async def fence() -> None:
            await server.stop()

        handover = LeaseHandover(published_store, server, SUBNET, lambda: runner.serving(),
                                 lambda: runner.state().epoch or 0, interval=0.05)  # fmt: skip

        async def on_take(epoch: int) -> None:
            taken.append(epoch)
            await handover.on_take(epoch)

        runner = ElectionRunner(Elector("h1", timers), store, lambda: None, fence,
                                on_take=on_take, on_release=handover.on_release)  # fmt: skip
        stop = asyncio.Event()
        tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(handover.run(stop))]
        await until(lambda: runner.serving())
        await server.serve(plan())
        await until(lambda: server.pid)
        await until(lambda: published_store.publishes == 1)  # the empty table of a new term
        await asyncio.sleep(0.3)
        assert published_store.publishes == 1  # unchanged: not published again
        expires = int(time.time()) + 600
        server.lease_file.write_text(f"{expires} 02:ac:0d:00:00:01 192.168.100.10 * *\n")
        await until(lambda: published_store.publishes == 2)
        server.lease_file.write_text(f"{expires + 300} 02:ac:0d:00:00:01 192.168.100.10 * *\n")  # a renewal
        await asyncio.sleep(0.3)
        assert published_store.publishes == 2  # only an expiry moved: not before EXPIRY_REFRESH
        lines = (f"{expires} 02:ac:0d:00:00:0{n} 192.168.100.1{n} * *\n" for n in (1, 2))
        server.lease_file.write_text("".join(lines))
        await server.stop()  # as the feature's stop does, before the election task frees the record
        stop.set()
        await asyncio.gather(*tasks)
        return published_store, taken

    published_store, taken = asyncio.run(main())
    assert taken == [1] and published_store.publishes == 3  # the final table, after dnsmasq stopped
    assert decode(published_store.text, 2, SUBNET, time.time()).count == 2


class RefusingApi:
    """An LXD that refuses every request the way the lease store sees it."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[str] = []

    def _refuse(self, method: str, path: str) -> None:
        self.calls.append(f"{method} {path}")
        raise LXDRequestFailed(path, self.status, "refused for the test", method)

    def get(self, path: str, **params: str) -> None:
        self._refuse("GET", path)

    def put(self, path: str, body: object, **params: str) -> None:
        self._refuse("PUT", path)

    def post(self, path: str, body: object, **params: str) -> None:
        self._refuse("POST", path)


class RacingApi(RefusingApi):
    """LXD's 404 for an ACL that exists, while another ACL is deleted: `refusals` times, then the ACL."""

    def __init__(self, refusals: int) -> None:
        super().__init__(404)
        self.refusals = refusals

    def get(self, path: str, **params: str) -> dict[str, object]:  # type: ignore[override]
        if len(self.calls) < self.refusals:
            self._refuse("GET", path)
        self.calls.append(f"GET {path}")
        return {"config": {HANDOVER_KEY: "table"}}


def test_a_read_refused_while_another_acl_is_deleted_is_retried_a_few_times_at_once() -> None:
    racing = RacingApi(refusals=2)
    store = HandoverStore(racing, name="t")  # type: ignore[arg-type]
    assert (store.fetch(), store.retries, store.last_error) == ("table", 2, "")
    gone = RacingApi(refusals=READ_ATTEMPTS)
    store = HandoverStore(gone, name="t")  # type: ignore[arg-type]
    assert store.fetch() is None and len(gone.calls) == READ_ATTEMPTS and "404" in store.last_error


def test_the_store_says_why_lxd_refused_and_creates_the_table_only_when_it_is_missing() -> None:
    busy = RefusingApi(500)
    store = HandoverStore(busy, name="t")  # type: ignore[arg-type]
    assert store.fetch() is None and "500" in store.last_error and len(busy.calls) == 1  # not retried
    assert not store.publish("{}") and busy.calls[-1] == "PUT /network-acls/t"
    assert "PUT /network-acls/t: 500" in store.last_error
    created = CreatingApi(put_refusals=1, exists=False)
    store = HandoverStore(created, name="t")  # type: ignore[arg-type]
    assert store.publish("{}") and created.calls == ["PUT /network-acls/t", "POST /network-acls"]
    assert store.retries == 0


def test_a_write_refused_while_another_acl_is_deleted_is_retried_as_a_replacement() -> None:
    racing = CreatingApi(put_refusals=2, exists=True)
    store = HandoverStore(racing, name="t")  # type: ignore[arg-type]
    assert store.publish("{}") and store.retries == 2
    assert racing.calls == ["PUT /network-acls/t", "POST /network-acls"] * 2 + ["PUT /network-acls/t"]
    always = CreatingApi(put_refusals=READ_ATTEMPTS, exists=True)
    store = HandoverStore(always, name="t")  # type: ignore[arg-type]
    assert not store.publish("{}") and "already exists" in store.last_error
    assert len(always.calls) == 2 * READ_ATTEMPTS


class CreatingApi(RefusingApi):
    """PUT answers 404 `put_refusals` times; POST creates the ACL, or says it exists already."""

    def __init__(self, put_refusals: int, exists: bool) -> None:
        super().__init__(404)
        self.put_refusals, self.exists, self.puts = put_refusals, exists, 0

    def put(self, path: str, body: object, **params: str) -> None:
        self.puts += 1
        if self.puts <= self.put_refusals:
            self._refuse("PUT", path)
        self.calls.append(f"PUT {path}")

    def post(self, path: str, body: object, **params: str) -> None:
        self.calls.append(f"POST {path}")
        if self.exists:
            raise LXDRequestFailed(path, 400, "The network ACL already exists", "POST")
