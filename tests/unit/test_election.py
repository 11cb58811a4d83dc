"""The election: compare-and-swap on one record, fencing without comparing clocks.

The property test runs three electors against an in-memory store with compare-and-swap, under
random schedules: hosts crash and come back, lose the store (a partition), stop cleanly, and time
advances unevenly. At no instant may two hosts serve.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.authority.election import (
    ElectionTimers,
    Elector,
    LeaseRecord,
    Memory,
    StoreRead,
    Write,
)

TIMERS = ElectionTimers(ttl=2.0, renew_interval=0.5, margin=0.5)


@dataclass
class Store:
    """A record with versions: a write must name the version it read, and the version is a
    hash of the content (writing the same text again leaves it unchanged)."""

    text: str = ""
    writes: int = 0

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def read(self) -> StoreRead:
        return StoreRead(LeaseRecord.decode(self.text), self.etag)

    def write(self, write: Write) -> bool:
        if write.if_match != self.etag:
            return False
        self.text, self.writes = write.record.encode(), self.writes + 1
        return True


def held(store: Store) -> tuple[str, int]:
    record = LeaseRecord.decode(store.text)
    assert record is not None
    return record.holder, record.epoch


@dataclass
class Host:
    name: str
    elector: Elector = field(init=False)
    memory: Memory = field(default_factory=Memory)
    up: bool = True
    reaches_store: bool = True

    def __post_init__(self) -> None:
        self.elector = Elector(self.name, TIMERS)

    def tick(self, store: Store, now: float) -> None:
        if not self.up:
            return
        read = store.read() if self.reaches_store else StoreRead(None, None, "unreachable")
        self.memory, write = self.elector.step(self.memory, read, now)
        if write is not None:
            ok = self.reaches_store and store.write(write)
            self.memory = self.elector.written(self.memory, write, now, ok)

    def serving(self, now: float) -> bool:
        return self.up and self.elector.serving(self.memory, now)


def test_a_free_lease_is_taken_and_renewed() -> None:
    store, h1 = Store(), Host("h1")
    h1.tick(store, 0.0)
    assert h1.serving(0.0) and held(store) == ("h1", 1)
    etag = store.etag
    h1.tick(store, 0.5)
    assert h1.serving(1.9) and held(store) == ("h1", 1)
    assert store.etag != etag  # every renewal changes the ETag, or standbys would see silence


def test_a_standby_waits_a_full_ttl_of_silence_and_the_holder_fenced_before() -> None:
    store, h1, h2 = Store(), Host("h1"), Host("h2")
    h1.tick(store, 0.0)
    h2.tick(store, 0.1)
    assert not h2.serving(0.1) and "standby: h1 holds epoch 1" in h2.memory.reason
    assert h2.memory.epoch == 1  # a standby's status shows the holder's epoch, not its own last one
    h1.up = False  # crashed right after its write at 0.0
    for now in (0.6, 1.1, 1.6, 2.05):
        h2.tick(store, now)
        assert not h2.serving(now)
    h2.tick(store, 2.1)  # 2.0 s after it first saw h1's record
    assert h2.serving(2.1) and held(store) == ("h2", 2)
    h1.up = True
    assert not h1.elector.serving(h1.memory, 1.5)  # h1 had fenced itself at 0.0 + 1.5


def test_a_holder_that_loses_the_store_fences_itself() -> None:
    store, h1 = Store(), Host("h1")
    h1.tick(store, 0.0)
    h1.reaches_store = False
    h1.tick(store, 0.5)
    h1.tick(store, 1.0)
    assert h1.serving(1.4) and not h1.serving(1.5)
    assert "store unreadable" in h1.memory.reason


def test_a_clean_release_hands_over_without_waiting() -> None:
    store, h1, h2 = Store(), Host("h1"), Host("h2")
    h1.tick(store, 0.0)
    h2.tick(store, 0.1)
    release = h1.elector.release(h1.memory, store.read())
    assert release is not None and store.write(release)
    h1.memory = h1.elector.written(h1.memory, release, 0.2, True)
    assert not h1.serving(0.2)
    h2.tick(store, 0.3)
    assert h2.serving(0.3)


def test_a_lost_race_never_serves() -> None:
    store, h1, h2 = Store(), Host("h1"), Host("h2")
    read = store.read()
    m1, w1 = h1.elector.step(Memory(), read, 0.0)
    m2, w2 = h2.elector.step(Memory(), read, 0.0)
    assert w1 is not None and w2 is not None
    assert store.write(w1) and not store.write(w2)
    assert h1.elector.serving(h1.elector.written(m1, w1, 0.0, True), 0.1)
    assert not h2.elector.serving(h2.elector.written(m2, w2, 0.0, False), 0.1)


def test_an_unreadable_record_is_waited_out_then_replaced() -> None:
    store, h1 = Store(text="{not json"), Host("h1")
    h1.tick(store, 0.0)
    assert not h1.serving(0.0)
    h1.tick(store, 2.0)
    assert h1.serving(2.0) and held(store) == ("h1", 1)


def test_timers_must_leave_room_to_fence() -> None:
    with pytest.raises(ValueError):
        ElectionTimers(ttl=1.0, renew_interval=0.6, margin=0.5)


EVENTS = st.sampled_from(["crash", "restart", "cut", "heal", "stop", "none", "none", "none"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), EVENTS, st.floats(0.05, 0.9)),
        min_size=10,
        max_size=80,
    )
)
def test_never_two_servers(schedule: list[tuple[int, str, float]]) -> None:
    store = Store()
    hosts = [Host(f"h{i}") for i in range(3)]
    now = 0.0
    for index, event, advance in schedule:
        host = hosts[index]
        if event == "crash":
            host.up = False
        elif event == "restart" and not host.up:
            host.up, host.memory = True, Memory()  # a restart remembers nothing
        elif event == "cut":
            host.reaches_store = False
        elif event == "heal":
            host.reaches_store = True
        elif event == "stop" and host.up and host.reaches_store:
            release = host.elector.release(host.memory, store.read())
            if release is not None:
                host.memory = host.elector.written(host.memory, release, now, store.write(release))
            host.up = False
        # Every live host ticks at its own renew interval, with uneven steps of time between.
        for h in hosts:
            h.tick(store, now)
        for t in itertools.islice(itertools.count(), 0, 10):
            instant = now + advance * t / 10
            assert sum(h.serving(instant) for h in hosts) <= 1, (instant, [h.memory for h in hosts])
        now += advance
