"""The LXD observer without LXD: its snapshot store, its hints, and how it behaves when LXD is away."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fabricd.config.model import LXDConfig
from fabricd.frozen import FrozenMap
from fabricd.lxd import observer as observer_module
from fabricd.lxd.api import LXDRequestFailed
from fabricd.lxd.events import InstanceHint, NetworkHint, ResyncHint
from fabricd.lxd.observer import LXDObservation, LXDObserver
from fabricd.lxd.reader import NetworkBundle
from fabricd.lxd.records import (
    InstanceRecord,
    ListenerRecord,
    LXDSnapshot,
    MemberRecord,
    NetworkRecord,
    NicRecord,
    RefusedObject,
)
from tests.unit.test_lxd_parse import BRIDGE, CONTAINER, OVN, UNMANAGED, variant
from tests.unit.test_lxd_reader import FakeApi, listing, standard_routes

NOWHERE = Path("/nonexistent/unix.socket")


def instance(name: str, project: str = "default", status: str = "Running", **user: str) -> InstanceRecord:
    nic = NicRecord("eth0", FrozenMap({"network": "br0", "type": "nic"}), "00:16:3e:00:00:01")
    return InstanceRecord(project, name, "container", status, "h1", (nic,), FrozenMap(user))


BR0 = NetworkRecord("default", "br0", "bridge", True, FrozenMap({"ipv4.address": "10.10.0.1/24"}))
OVN0 = NetworkRecord("p2", "ovn0", "ovn", True, FrozenMap({"network": "UPLINK"}), ovn_chassis="h1")
FWD = ListenerRecord(
    "forward", "default", "br0", "192.0.2.10", "h1", FrozenMap({"target_address": "10.10.0.5"})
)
FWD_OVN = ListenerRecord("forward", "p2", "ovn0", "192.0.2.30", "", FrozenMap())
LB = ListenerRecord("load-balancer", "p2", "ovn0", "192.0.2.20", "", FrozenMap({"healthcheck": "false"}))
REFUSED_C9 = RefusedObject("instance", "default", "c9", "expanded_config: keys and values must be strings")

SNAPSHOT = LXDSnapshot(
    member="h1",
    clustered=True,
    projects=("default", "p2"),
    networks=(BR0, OVN0),
    instances=(instance("c1"), instance("c2", "p2")),
    forwards=(FWD, FWD_OVN),
    load_balancers=(LB,),
    members=(MemberRecord("h1", "Online"), MemberRecord("h2", "Online")),
    refused=(REFUSED_C9,),
)


class Changes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def make(config: LXDConfig | None = None) -> tuple[LXDObserver, Changes]:
    changes = Changes()
    return LXDObserver(config or LXDConfig(socket=NOWHERE), changes), changes


def observe(obs: LXDObserver) -> LXDObservation:
    return asyncio.run(obs.observe())


def snapshot_of(obs: LXDObserver) -> LXDSnapshot:
    snapshot = observe(obs).snapshot
    assert snapshot is not None
    return snapshot


# --- construction ---------------------------------------------------------------------------------


def test_constructing_does_not_connect() -> None:
    started = time.monotonic()
    obs, changes = make()
    assert time.monotonic() - started < 0.5
    assert observe(obs) == LXDObservation(None, False, None, None, None)
    assert changes.count == 0


# --- the snapshot store --------------------------------------------------------------------------


def test_full_load_is_the_snapshot() -> None:
    obs, changes = make()
    before = time.time()
    obs._load_full(SNAPSHOT)
    assert changes.count == 1
    observation = observe(obs)
    assert observation.snapshot == SNAPSHOT
    assert observation.last_sync_at is not None
    assert observation.last_sync_at >= before
    # the snapshot is built once and reused until something changes
    assert snapshot_of(obs) is snapshot_of(obs)


def test_changed_instance_rebuilds_the_snapshot() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    first = snapshot_of(obs)
    updated = instance("c1", status="Stopped", **{"user.fabric.announce": "false"})
    obs._put_instance(("default", "c1"), updated)
    assert changes.count == 2
    second = snapshot_of(obs)
    assert second is not first
    assert second.instances == (updated, instance("c2", "p2"))
    # everything else carried over
    assert (second.member, second.clustered, second.projects) == ("h1", True, ("default", "p2"))
    assert (second.networks, second.forwards, second.load_balancers) == (
        SNAPSHOT.networks,
        SNAPSHOT.forwards,
        SNAPSHOT.load_balancers,
    )
    assert second.members == SNAPSHOT.members
    assert second.refused == (REFUSED_C9,)


def test_new_instance_is_added() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    obs._put_instance(("p2", "c3"), instance("c3", "p2"))
    assert changes.count == 2
    assert [i.name for i in snapshot_of(obs).instances] == ["c1", "c2", "c3"]


def test_unchanged_rereads_do_not_call_on_change() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    first = snapshot_of(obs)
    obs._put_instance(("default", "c1"), instance("c1"))  # equal, not identical
    obs._put_network(("default", "br0"), NetworkBundle(BR0, (FWD,), ()))
    obs._put_network(("p2", "ovn0"), NetworkBundle(OVN0, (FWD_OVN,), (LB,)))
    obs._put_instance(("default", "c9"), REFUSED_C9)  # the same refusal again
    obs._put_instance(("default", "gone"), None)  # deleting what is not there
    obs._put_network(("default", "gone"), None)
    assert changes.count == 1
    assert snapshot_of(obs) is first


def test_deleted_instance_disappears() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    obs._put_instance(("p2", "c2"), None)
    assert changes.count == 2
    assert [i.name for i in snapshot_of(obs).instances] == ["c1"]
    obs._put_instance(("p2", "c2"), None)
    assert changes.count == 2


def test_refused_reread_replaces_the_record_and_a_good_read_clears_it() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    refusal = RefusedObject(
        "instance", "default", "c1", "expanded_devices.eth0: expected a mapping, got list"
    )
    obs._put_instance(("default", "c1"), refusal)
    assert changes.count == 2
    snapshot = snapshot_of(obs)
    assert [i.name for i in snapshot.instances] == ["c2"]
    assert snapshot.refused == (REFUSED_C9, refusal)

    obs._put_instance(("default", "c1"), instance("c1"))
    assert changes.count == 3
    snapshot = snapshot_of(obs)
    assert instance("c1") in snapshot.instances
    assert snapshot.refused == (REFUSED_C9,)


def test_refusal_from_the_full_load_is_cleared_by_a_good_read() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    obs._put_instance(("default", "c9"), instance("c9"))
    assert changes.count == 2
    snapshot = snapshot_of(obs)
    assert snapshot.refused == ()
    assert instance("c9") in snapshot.instances


def test_refusal_that_changes_reason_is_a_change() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    other = RefusedObject("instance", "default", "c9", "name: expected a non-empty string, got int 5")
    obs._put_instance(("default", "c9"), other)
    assert changes.count == 2
    assert snapshot_of(obs).refused == (other,)


def test_network_bundles_keep_their_forwards() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    # br0 re-read after a forward was added: its forwards change, ovn0's are kept
    fwd2 = ListenerRecord("forward", "default", "br0", "192.0.2.11", "h2", FrozenMap())
    obs._put_network(("default", "br0"), NetworkBundle(BR0, (FWD, fwd2), ()))
    assert changes.count == 2
    snapshot = snapshot_of(obs)
    assert set(snapshot.forwards) == {FWD, fwd2, FWD_OVN}
    assert snapshot.load_balancers == (LB,)

    # the active chassis moved: only the network record changes, its forwards and balancers stay
    moved = NetworkRecord("p2", "ovn0", "ovn", True, OVN0.config, ovn_chassis="h2")
    obs._put_network(("p2", "ovn0"), NetworkBundle(moved, (FWD_OVN,), (LB,)))
    snapshot = snapshot_of(obs)
    assert snapshot.network("p2", "ovn0") == moved
    assert set(snapshot.forwards) == {FWD, fwd2, FWD_OVN}
    assert snapshot.load_balancers == (LB,)

    # a deleted network takes its forwards and balancers along
    obs._put_network(("p2", "ovn0"), None)
    snapshot = snapshot_of(obs)
    assert snapshot.network("p2", "ovn0") is None
    assert set(snapshot.forwards) == {FWD, fwd2}
    assert snapshot.load_balancers == ()
    assert changes.count == 4


def test_refused_network_reread_and_recovery() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    refusal = RefusedObject(
        "network", "default", "br0", "config: keys and values must be strings ('bridge.mtu')"
    )
    obs._put_network(("default", "br0"), refusal)
    snapshot = snapshot_of(obs)
    assert snapshot.network("default", "br0") is None
    assert FWD not in snapshot.forwards
    assert refusal in snapshot.refused
    obs._put_network(("default", "br0"), NetworkBundle(BR0, (FWD,), ()))
    snapshot = snapshot_of(obs)
    assert snapshot.network("default", "br0") == BR0
    assert FWD in snapshot.forwards
    assert refusal not in snapshot.refused
    assert changes.count == 3


def test_full_reload_replaces_everything() -> None:
    obs, changes = make()
    obs._load_full(SNAPSHOT)
    obs._put_instance(("p2", "c3"), instance("c3", "p2"))
    smaller = LXDSnapshot(
        member="h1", clustered=True, projects=("default",), networks=(BR0,), forwards=(FWD,)
    )
    obs._load_full(smaller)
    assert changes.count == 3
    assert snapshot_of(obs) == smaller


# --- hints: events and re-reads through the (fake) API --------------------------------------------


def test_events_become_hints_and_started_instances_are_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observer_module, "ADDRESS_REREADS", (0.01, 0.02))
    obs, _ = make()

    async def main() -> list[Any]:
        obs._hints = asyncio.Queue()
        for garbage in (b"", b"not json", b"[1, 2]", b'"lifecycle"', b"{}", b'{"type": "logging"}', b"\xff"):
            obs._on_event(garbage)
        started = {
            "type": "lifecycle",
            "metadata": {"action": "instance-started", "source": "/1.0/instances/c1?project=p1"},
            "project": "p1",
        }
        obs._on_event(json.dumps(started).encode())
        updated = {
            "type": "lifecycle",
            "metadata": {"action": "network-updated", "source": "/1.0/networks/br0"},
        }
        obs._on_event(json.dumps(updated).encode())
        await asyncio.sleep(0.1)
        hints = []
        while not obs._hints.empty():
            hints.append(obs._hints.get_nowait())
        return hints

    hint = InstanceHint("p1", "c1")
    assert asyncio.run(main()) == [hint, NetworkHint("default", "br0"), hint, hint]


@pytest.mark.parametrize("addressed", [False, True])
def test_a_started_instance_is_read_again_until_every_nic_has_an_address(
    monkeypatch: pytest.MonkeyPatch, addressed: bool
) -> None:
    """An address that comes after the first re-reads (a server's 3 s ping check, a client's retry)
    was missed until the 300 s resync: no event comes with it. Later re-reads stop once it is there."""
    monkeypatch.setattr(observer_module, "ADDRESS_REREADS", (0.01, 0.02, 0.03, 0.04, 0.05))
    obs, _ = make()
    record = instance("c1", "p1")
    if addressed:
        nic = dataclasses.replace(record.nics[0], addresses=("10.10.0.5/24",))
        record = dataclasses.replace(record, nics=(nic,))
    obs._put_instance(("p1", "c1"), record)
    started = {
        "type": "lifecycle",
        "metadata": {"action": "instance-started", "source": "/1.0/instances/c1?project=p1"},
        "project": "p1",
    }

    async def main() -> int:
        obs._hints = asyncio.Queue()
        obs._on_event(json.dumps(started).encode())
        await asyncio.sleep(0.15)
        return obs._hints.qsize()

    # the event itself, the two re-reads always made, and the later three only without an address
    assert asyncio.run(main()) == (3 if addressed else 6)


def test_hints_reread_single_objects_through_the_api() -> None:
    obs, changes = make(LXDConfig(socket=NOWHERE, project="*"))
    routes = standard_routes()
    api = FakeApi(routes)
    obs._api = api  # type: ignore[assignment]

    async def body() -> None:
        await obs._resync("test")
        assert changes.count == 1
        snapshot = await obs.observe()
        assert snapshot.snapshot is not None
        assert [i.name for i in snapshot.snapshot.instances] == ["c1", "c2"]

        # an instance updated in LXD: only that instance is read again
        routes[("/instances/c1", "p1")] = variant(CONTAINER, expanded_config={"user.fabric.announce": "no"})
        routes[("/instances/c1/state", "p1")] = CONTAINER["state"]
        api.calls.clear()
        await obs._apply_hint(InstanceHint("p1", "c1"))
        assert api.paths() == ["/instances/c1", "/instances/c1/state"]
        assert changes.count == 2
        c1 = next(i for i in obs._instances.values() if i.name == "c1")
        assert c1.config == {"user.fabric.announce": "no"}

        # the same again: no change
        await obs._apply_hint(InstanceHint("p1", "c1"))
        assert changes.count == 2

        # OVN chassis moved: the periodic network refresh notices
        routes[("/networks/ovn0", "p2")] = OVN
        routes[("/networks/ovn0/state", "p2")] = {"ovn": {"chassis": "h1"}}
        await obs._refresh_networks()
        assert changes.count == 3
        current = await obs.observe()
        assert current.snapshot is not None
        ovn = current.snapshot.network("p2", "ovn0")
        assert ovn is not None
        assert ovn.ovn_chassis == "h1"
        assert len(current.snapshot.load_balancers) == 1

        # deleted instance (404) disappears
        del routes[("/instances/c1", "p1")]
        await obs._apply_hint(InstanceHint("p1", "c1"))
        assert ("p1", "c1") not in obs._instances

        # a read that fails otherwise falls back to a full resync
        routes[("/instances/c2", "p2")] = LXDRequestFailed("/instances/c2", 500, "boom")
        api.calls.clear()
        await obs._apply_hint(InstanceHint("p2", "c2"))
        assert "/instances" in api.paths()
        assert ("p1", "c1") in obs._instances  # the full read still lists it

        # a resync hint reads everything
        api.calls.clear()
        await obs._apply_hint(ResyncHint("profile-updated"))
        assert api.paths()[0] == ""

    asyncio.run(body())


def queued(obs: LXDObserver) -> InstanceHint | NetworkHint | ResyncHint:
    hint = obs._hints.get_nowait()
    assert hint is not None
    return hint


def test_event_lag_runs_from_a_changing_event_to_the_pass_that_observes_it() -> None:
    obs, _ = make(LXDConfig(socket=NOWHERE, project="*"))
    routes = standard_routes()
    obs._api = FakeApi(routes)  # type: ignore[assignment]
    source = "/1.0/instances/c1?project=p1"
    metadata = {"action": "instance-updated", "source": source}
    event = {"type": "lifecycle", "metadata": metadata, "project": "p1"}

    async def body() -> None:
        obs._hints = asyncio.Queue()
        await obs._resync("test")
        for _ in range(2):  # the second time nothing changed in LXD: that re-read changes nothing
            obs._on_event(json.dumps(event).encode())
            await obs._apply_hint(queued(obs))
            await obs.observe()
        assert obs.event_lag.count <= 1  # the first re-read may differ from the full read
        before = obs.event_lag
        routes[("/instances/c1", "p1")] = variant(CONTAINER, expanded_config={"user.fabric.announce": "no"})
        routes[("/instances/c1/state", "p1")] = CONTAINER["state"]
        obs._on_event(json.dumps(event).encode())
        await asyncio.sleep(0.05)  # the event waits in the queue
        await obs._apply_hint(queued(obs))
        await asyncio.sleep(0.05)  # the snapshot changed; the next pass is later
        await obs.observe()
        await obs.observe()  # a second pass observes nothing new
        assert obs.event_lag.count == before.count + 1
        assert 0.1 <= obs.event_lag.total - before.total < 2.0

    asyncio.run(body())


# --- running: unreachable LXD, failing LXD, and a good session -------------------------------------


async def wait_for(
    obs: LXDObserver, predicate: Callable[[LXDObservation], bool], timeout: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(await obs.observe()):
        assert time.monotonic() < deadline, await obs.observe()
        await asyncio.sleep(0.01)


async def stop_promptly(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)
    assert time.monotonic() - started < 0.5


def test_unreachable_lxd_keeps_the_last_snapshot_and_stops_promptly(tmp_path: Path) -> None:
    socket = tmp_path / "lxd" / "unix.socket"
    obs, changes = make(LXDConfig(socket=socket, reconnect_backoff_max=0.05))
    obs._load_full(SNAPSHOT)
    loaded_at = observe(obs).last_sync_at

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(obs.run(stop))
        await wait_for(obs, lambda o: o.error is not None)
        first = await obs.observe()
        assert first.connected is False
        assert first.error is not None
        assert str(socket) in first.error
        assert first.snapshot == SNAPSHOT
        assert first.last_sync_at == loaded_at
        assert first.unreachable_since is not None
        await asyncio.sleep(0.2)  # several reconnect attempts at the 0.05 s cap
        later = await obs.observe()
        assert later.unreachable_since == first.unreachable_since  # since the first failure
        assert later.snapshot == SNAPSHOT
        assert not task.done()
        await stop_promptly(task, stop)

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 3
    assert changes.count == 1  # being unreachable is not a change of the snapshot


def test_run_without_a_snapshot_reports_none() -> None:
    obs, _ = make(LXDConfig(socket=NOWHERE, reconnect_backoff_max=0.05))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(obs.run(stop))
        await wait_for(obs, lambda o: o.error is not None)
        observation = await obs.observe()
        assert observation.snapshot is None
        assert observation.connected is False
        assert observation.error is not None
        assert str(NOWHERE) in observation.error
        await stop_promptly(task, stop)

    asyncio.run(main())


def test_run_returns_at_once_when_already_stopped() -> None:
    obs, _ = make()

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(obs.run(stop), timeout=1.0)

    asyncio.run(main())
    assert observe(obs).error is None


class FakeStream:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def connect_to(obs: LXDObserver, api: FakeApi) -> list[FakeStream]:
    """Replace LXD with a fake API and the events websocket with a stream that never speaks."""
    streams: list[FakeStream] = []

    def open_stream(loop: asyncio.AbstractEventLoop) -> FakeStream:
        streams.append(FakeStream())
        return streams[-1]

    obs._api = api  # type: ignore[assignment]
    obs._open_stream = open_stream  # type: ignore[assignment,method-assign]
    return streams


def test_failing_resync_is_retried_not_fatal() -> None:
    obs, changes = make(LXDConfig(socket=NOWHERE, reconnect_backoff_max=0.05))
    obs._load_full(SNAPSHOT)
    routes = standard_routes()
    routes["/instances"] = LXDRequestFailed("/instances", 403, "not authorized")
    streams = connect_to(obs, FakeApi(routes))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(obs.run(stop))
        await wait_for(obs, lambda o: o.error is not None and len(streams) >= 2)
        observation = await obs.observe()
        assert observation.connected is False
        assert observation.error is not None
        assert "403" in observation.error
        assert observation.snapshot == SNAPSHOT  # the last good one
        assert not task.done()

        # LXD recovers: the next attempt connects and loads a fresh snapshot
        routes["/instances"] = lambda params: []
        await wait_for(obs, lambda o: o.connected)
        observation = await obs.observe()
        assert observation.error is None
        assert observation.unreachable_since is None
        assert observation.snapshot is not None
        assert observation.snapshot.instances == ()
        await stop_promptly(task, stop)

    asyncio.run(main())
    assert all(stream.closed == 1 for stream in streams)
    assert changes.count >= 2


def test_connected_session_applies_hints_and_ends_on_a_closed_websocket() -> None:
    obs, changes = make(LXDConfig(socket=NOWHERE, project="*", reconnect_backoff_max=0.05))
    routes = standard_routes()
    api = FakeApi(routes)
    streams = connect_to(obs, api)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(obs.run(stop))
        await wait_for(obs, lambda o: o.connected)
        observation = await obs.observe()
        assert observation.snapshot is not None
        assert [i.name for i in observation.snapshot.instances] == ["c1", "c2"]
        assert observation.last_sync_at is not None

        # an instance-deleted event: re-read, 404, gone
        obs._hints.put_nowait(InstanceHint("p1", "c1"))
        await wait_for(obs, lambda o: o.snapshot is not None and len(o.snapshot.instances) == 1)

        # the websocket closes: the session ends, the observer reconnects with a full resync
        obs._hints.put_nowait(ResyncHint("events websocket: events websocket closed (1006)"))
        await wait_for(obs, lambda o: len(streams) >= 2 and o.connected)
        observation = await obs.observe()
        assert observation.snapshot is not None
        assert [i.name for i in observation.snapshot.instances] == ["c1", "c2"]
        await stop_promptly(task, stop)

    asyncio.run(main())
    assert [stream.closed for stream in streams] == [1] * len(streams)
    assert changes.count >= 3


def test_network_refresh_finds_networks_created_without_an_event() -> None:
    """LXD 5.0.2 sends no event for a network created cluster-wide; the periodic listing finds it."""
    obs, changes = make(LXDConfig(socket=NOWHERE, project="*"))
    routes = standard_routes()
    api = FakeApi(routes)
    obs._api = api  # type: ignore[assignment]

    async def body() -> None:
        await obs._resync("test")
        routes[("/networks/ovn0", "p2")] = OVN  # OVN networks are re-read on every refresh
        before = changes.count
        new = variant(BRIDGE, name="br9")
        routes[("/networks", "default")] = listing([BRIDGE, UNMANAGED, new])
        routes[("/networks/br9", "default")] = new
        await obs._refresh_networks()
        current = await obs.observe()
        assert current.snapshot is not None and current.snapshot.network("default", "br9") is not None
        assert changes.count == before + 1
        # and one deleted meanwhile disappears
        routes[("/networks", "default")] = listing([UNMANAGED, new])
        routes.pop(("/networks/br0", "default"), None)
        await obs._refresh_networks()
        current = await obs.observe()
        assert current.snapshot is not None and current.snapshot.network("default", "br0") is None

    asyncio.run(body())


@pytest.mark.parametrize(
    ("clustered", "networks", "polls"),
    [
        (False, [BRIDGE, UNMANAGED], False),  # every change comes as an event: nothing to poll
        (False, [BRIDGE, OVN], True),  # an OVN gateway moves without an event
        (True, [BRIDGE, UNMANAGED], True),  # 5.0.2: no event for a network created cluster-wide
    ],
)
def test_the_periodic_network_listing_runs_only_where_events_can_miss_a_change(
    clustered: bool, networks: list[dict[str, Any]], polls: bool
) -> None:
    obs, _ = make(LXDConfig(socket=NOWHERE, project="default"))
    routes = standard_routes(clustered=clustered)
    routes[("/networks", "default")] = listing(networks)
    routes[("/networks/ovn0", "default")] = variant(OVN, project="default")
    routes[("/networks/ovn0/state", "default")] = {"ovn": {"chassis": "h1"}}
    api = FakeApi(routes)
    obs._api = api  # type: ignore[assignment]

    async def body() -> None:
        await obs._resync("test")
        api.calls.clear()
        await obs._refresh_networks()
        assert ("/networks" in api.paths()) == polls, api.paths()

    asyncio.run(body())


# --- instances LXD lists as unreachable stubs -----------------------------------------------------


def stub_of(raw: dict[str, Any]) -> dict[str, Any]:
    """What LXD lists for an instance on a member it cannot reach: status Error, no devices."""
    return variant(raw, status="Error", status_code=400, expanded_devices={}, devices={}, state=None)


def test_full_reads_with_stubs_are_planned_again_with_a_doubling_wait_and_end_without() -> None:
    obs, _ = make()
    stub = InstanceRecord("default", "c3", "container", "Error", "h3")
    with_stub = dataclasses.replace(SNAPSHOT, instances=(*SNAPSHOT.instances, stub))
    waits = []
    for _ in range(8):
        before = time.monotonic()
        obs._load_full(with_stub)
        assert obs._stub_reread_at is not None
        waits.append(round(obs._stub_reread_at - before))
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]
    # A single stub read while a re-read is planned does not move it; a full read without stubs ends it.
    planned = obs._stub_reread_at
    obs._put_instance(("default", "c4"), dataclasses.replace(stub, name="c4"))
    assert obs._stub_reread_at == planned
    obs._load_full(SNAPSHOT)
    assert obs._stub_reread_at is None and obs._stub_wait is None
    # ...and the next stub, even from a single read, starts again from the shortest wait.
    before = time.monotonic()
    obs._put_instance(("default", "c4"), dataclasses.replace(stub, name="c4"))
    assert obs._stub_reread_at is not None and round(obs._stub_reread_at - before) == 2


def test_a_new_instance_first_listed_as_a_stub_is_read_whole_without_an_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member that did not answer LXD yet: its new instance has no NICs to keep. No event comes
    when the member answers again; the planned re-read finds the instance whole."""
    monkeypatch.setattr(observer_module, "STUB_REREAD", 0.05)
    monkeypatch.setattr(observer_module, "STUB_REREAD_MAX", 0.2)
    obs, _ = make(LXDConfig(socket=NOWHERE, project="default", resync_interval=3600))
    routes = standard_routes()
    routes["/instances"] = lambda params: [CONTAINER, stub_of(variant(CONTAINER, name="c3"))]
    connect_to(obs, FakeApi(routes))

    def nics_of_c3(observation: LXDObservation) -> bool:
        instances = observation.snapshot.instances if observation.snapshot else ()
        found = [i for i in instances if i.name == "c3"]
        return len(found) == 1 and bool(found[0].nics) and found[0].status == "Running"

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(obs.run(stop))
        await wait_for(obs, lambda o: o.connected)
        assert not nics_of_c3(await obs.observe())
        await asyncio.sleep(0.2)  # re-reads keep finding the stub: still no NICs, and no crash
        assert not nics_of_c3(await obs.observe()) and obs._stub_wait is not None
        routes["/instances"] = lambda params: [CONTAINER, variant(CONTAINER, name="c3")]
        await wait_for(obs, nics_of_c3, timeout=5.0)
        assert obs._stub_reread_at is None
        await stop_promptly(task, stop)

    asyncio.run(main())
