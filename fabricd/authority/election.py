"""Who is the authority: a lease taken and renewed by compare-and-swap, and fencing without clocks.

The store (LXD's replicated database, `fabricd.authority.lease_store`) holds the record: holder,
epoch and ttl. Every write names the version it read and succeeds only if that is still the
newest (compare-and-swap), so of two writers racing only one wins, and a side of a partition that
cannot write (no quorum) cannot win.

No clock is compared between hosts; each host measures durations on its own monotonic clock:
- the holder counts from the moment it *sent* its last successful renewal and stops serving
  (fences itself) once `ttl - margin` has passed, even when it cannot reach the store;
- a standby takes over only after it has seen the very same record (same version) for `ttl`. It
  first saw that record after it was written, so the old holder fenced itself before.
A clean stop writes the record free, so a handover waits for nobody's ttl.

`Elector.step` is pure (record and time in, action out); the I/O lives in the lease store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Literal

LEASE_KEY = "user.fabric.authority"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str = ""  # "" when free
    epoch: int = 0  # +1 on every change of holder: a fencing token for logs and status
    ttl: float = 2.0
    # +1 on every write (the store's version), so every renewal is a visible change: standbys
    # would take an unchanged record for silence.
    seq: int = 0

    def encode(self) -> str:
        fields = {"holder": self.holder, "epoch": self.epoch, "ttl": self.ttl, "seq": self.seq}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def decode(cls, text: str | None) -> LeaseRecord | None:
        """None for an absent or unreadable record: treated as held by someone unknown (waited out)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            holder, epoch, ttl, seq = data["holder"], data["epoch"], data["ttl"], data.get("seq", 0)
        except (ValueError, TypeError, KeyError):
            return None
        numbers = isinstance(epoch, int) and isinstance(seq, int) and isinstance(ttl, int | float)
        if not isinstance(holder, str) or not numbers:
            return None
        return cls(holder, epoch, float(ttl), seq)


@dataclass(frozen=True, slots=True)
class StoreRead:
    """One read of the store: the record and its version, or why there is none."""

    record: LeaseRecord | None
    version: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Write:
    record: LeaseRecord
    if_match: str
    why: Literal["take", "renew", "release"]


@dataclass(frozen=True, slots=True)
class Memory:
    """What the elector remembers between steps (monotonic times)."""

    renewed_at: float | None = None  # when our last successful write was sent, while we hold it
    epoch: int = 0
    seen_version: str | None = None
    seen_since: float = 0.0
    holder: str = ""  # who holds it, as last read
    reason: str = "not read yet"


@dataclass(frozen=True, slots=True)
class ElectionTimers:
    ttl: float = 2.0  # how long a record may go unrenewed before a standby takes over
    renew_interval: float = 0.5
    margin: float = 0.5  # the holder fences this long before a standby may take over

    def __post_init__(self) -> None:
        if not 0 < self.margin < self.ttl or not 0 < self.renew_interval < self.ttl - self.margin:
            raise ValueError("need 0 < renew_interval < ttl - margin and 0 < margin < ttl")


class Elector:
    def __init__(self, me: str, timers: ElectionTimers = ElectionTimers()) -> None:
        self.me = me
        self.timers = timers

    def serving(self, memory: Memory, now: float) -> bool:
        """Whether this host may serve now: it holds a lease it renewed recently enough."""
        fence_after = self.timers.ttl - self.timers.margin
        return memory.renewed_at is not None and now - memory.renewed_at < fence_after

    def step(self, memory: Memory, read: StoreRead, now: float) -> tuple[Memory, Write | None]:
        """What to write after reading the store at `now`, and what to remember."""
        if read.error is not None or read.version is None:
            why = read.error or "no version"
            return replace(memory, reason=f"store unreadable: {why}"), None
        if read.version != memory.seen_version:
            memory = replace(memory, seen_version=read.version, seen_since=now)
        record = read.record
        if record is None:  # unreadable record: someone wrote it; wait it out like any holder
            memory = replace(memory, holder="?", renewed_at=None)
            if now - memory.seen_since >= self.timers.ttl:
                return self._take(memory, LeaseRecord(), read.version, "unreadable record unchanged for ttl")
            return replace(memory, reason="unreadable record; waiting ttl before taking over"), None
        memory = replace(memory, holder=record.holder)
        if record.holder == self.me:
            renewed = LeaseRecord(self.me, record.epoch, self.timers.ttl, record.seq + 1)
            return replace(memory, epoch=record.epoch, reason="holder"), Write(renewed, read.version, "renew")
        memory = replace(memory, renewed_at=None)  # someone else's (or nobody's): not ours
        if not record.holder:
            return self._take(memory, record, read.version, "lease free")
        waited = now - memory.seen_since
        if waited >= self.timers.ttl:
            why = f"{record.holder} did not renew for {waited:.1f}s"
            return self._take(memory, record, read.version, why)
        return replace(memory, reason=f"standby: {record.holder} holds epoch {record.epoch}"), None

    def _take(self, memory: Memory, record: LeaseRecord, version: str, why: str) -> tuple[Memory, Write]:
        taken = LeaseRecord(self.me, record.epoch + 1, self.timers.ttl, record.seq + 1)
        return replace(memory, reason=f"taking over: {why}"), Write(taken, version, "take")

    def written(self, memory: Memory, write: Write, sent_at: float, ok: bool) -> Memory:
        """After a write: a success holds the lease from the moment it was sent."""
        if write.why == "release":
            return replace(memory, renewed_at=None, holder="", reason="released")
        if ok:
            return replace(memory, renewed_at=sent_at, epoch=write.record.epoch, holder=self.me)
        return replace(memory, renewed_at=None, reason=f"{write.why} lost: another host wrote first")

    def release(self, memory: Memory, read: StoreRead) -> Write | None:
        """On a clean stop: free the record if it is ours, so a standby takes over at once."""
        if read.record is None or read.version is None or read.record.holder != self.me:
            return None
        record = read.record
        return Write(LeaseRecord("", record.epoch, self.timers.ttl, record.seq + 1), read.version, "release")
