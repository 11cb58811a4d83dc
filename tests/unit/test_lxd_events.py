"""classify(): LXD 5.0 lifecycle events into re-read hints; anything else (or garbage) into None."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.lxd.events import ELECTION_ACL, InstanceHint, NetworkHint, ResyncHint, classify

FAST = settings(max_examples=150, deadline=None)


def lifecycle(action: str, source: str, project: str | None = None, **metadata: Any) -> dict[str, Any]:
    """An event as LXD 5.0 sends it on /1.0/events?type=lifecycle."""
    event: dict[str, Any] = {
        "type": "lifecycle",
        "timestamp": "2024-01-10T10:00:00.123456789Z",
        "metadata": {
            "action": action,
            "source": source,
            "context": metadata.pop("context", {}),
            "requestor": {"username": "root", "protocol": "unix", "address": "@"},
            **metadata,
        },
        "location": "none",
    }
    if project is not None:
        event["project"] = project
    return event


INSTANCE_ACTIONS = [
    "instance-started",
    "instance-stopped",
    "instance-shutdown",
    "instance-restarted",
    "instance-paused",
    "instance-resumed",
    "instance-deleted",
    "instance-created",
    "instance-updated",
]


@pytest.mark.parametrize("action", INSTANCE_ACTIONS)
def test_instance_events_name_the_instance(action: str) -> None:
    assert classify(lifecycle(action, "/1.0/instances/c1", "default")) == InstanceHint("default", "c1")


@pytest.mark.parametrize("action", INSTANCE_ACTIONS)
def test_instance_project_from_the_event_or_the_source_query(action: str) -> None:
    top_level = lifecycle(action, "/1.0/instances/c1?project=p1", "p1")
    assert classify(top_level) == InstanceHint("p1", "c1")
    query_only = lifecycle(action, "/1.0/instances/c1?project=p1")
    assert classify(query_only) == InstanceHint("p1", "c1")
    empty_top_level = lifecycle(action, "/1.0/instances/c1?project=p1", "")
    assert classify(empty_top_level) == InstanceHint("p1", "c1")
    neither = lifecycle(action, "/1.0/instances/c1")
    assert classify(neither) == InstanceHint("default", "c1")


def test_top_level_project_wins_over_the_query() -> None:
    assert classify(lifecycle("instance-started", "/1.0/instances/c1?project=p2", "p1")) == InstanceHint(
        "p1", "c1"
    )


def test_instance_shutdown_without_requestor() -> None:
    event = lifecycle("instance-shutdown", "/1.0/instances/c1?project=p1", "p1")
    event["metadata"]["requestor"] = None
    assert classify(event) == InstanceHint("p1", "c1")


@pytest.mark.parametrize(
    ("action", "source"),
    [
        ("instance-snapshot-created", "/1.0/instances/c1/snapshots/s0"),
        ("instance-snapshot-deleted", "/1.0/instances/c1/snapshots/s0?project=p1"),
        ("instance-snapshot-renamed", "/1.0/instances/c1/snapshots/s1"),
        ("instance-backup-created", "/1.0/instances/c1/backups/b0"),
        ("instance-log-retrieved", "/1.0/instances/c1/logs/lxc.log"),
        ("instance-file-pushed", "/1.0/instances/c1/files?path=%2Fetc%2Fhosts"),
    ],
)
def test_sub_resource_events_still_name_the_instance(action: str, source: str) -> None:
    assert classify(lifecycle(action, source, "p1")) == InstanceHint("p1", "c1")


def test_instance_renamed_resyncs() -> None:
    event = lifecycle("instance-renamed", "/1.0/instances/c2?project=p1", "p1", context={"old_name": "c1"})
    assert classify(event) == ResyncHint("instance-renamed")


@pytest.mark.parametrize("action", ["network-created", "network-updated", "network-deleted"])
def test_network_events(action: str) -> None:
    assert classify(lifecycle(action, "/1.0/networks/br0", "default")) == NetworkHint("default", "br0")
    assert classify(lifecycle(action, "/1.0/networks/ovn0?project=p2")) == NetworkHint("p2", "ovn0")


@pytest.mark.parametrize(
    ("action", "source", "network"),
    [
        ("network-forward-created", "/1.0/networks/br0/forwards/10.0.0.5", "br0"),
        ("network-forward-updated", "/1.0/networks/br0/forwards/10.0.0.5", "br0"),
        ("network-forward-deleted", "/1.0/networks/br0/forwards/2001:db8::5", "br0"),
        ("network-load-balancer-created", "/1.0/networks/ovn0/load-balancers/192.0.2.20", "ovn0"),
        ("network-load-balancer-updated", "/1.0/networks/ovn0/load-balancers/192.0.2.20", "ovn0"),
        ("network-load-balancer-deleted", "/1.0/networks/ovn0/load-balancers/2001%3Adb8%3A%3A20", "ovn0"),
        ("network-peer-created", "/1.0/networks/ovn0/peers/other", "ovn0"),
    ],
)
def test_network_sub_resource_events_name_the_network(action: str, source: str, network: str) -> None:
    assert classify(lifecycle(action, source, "default")) == NetworkHint("default", network)
    assert classify(lifecycle(action, f"{source}?project=p2", "p2")) == NetworkHint("p2", network)


@pytest.mark.parametrize(
    ("action", "source"),
    [
        ("profile-updated", "/1.0/profiles/default"),
        ("profile-created", "/1.0/profiles/web?project=p1"),
        ("profile-deleted", "/1.0/profiles/web"),
        ("project-updated", "/1.0/projects/p1"),
        ("project-created", "/1.0/projects/p2"),
        ("cluster-member-added", "/1.0/cluster/members/h3"),
        ("cluster-member-removed", "/1.0/cluster/members/h3"),
        ("cluster-member-updated", "/1.0/cluster/members/h1"),
        ("config-updated", "/1.0"),
        ("network-acl-updated", "/1.0/network-acls/web"),
        ("network-zone-record-created", "/1.0/network-zones/example.org/records/www"),
        ("network-renamed", "/1.0/networks/br1"),  # the old name must disappear too
    ],
)
def test_indirect_changes_resync(action: str, source: str) -> None:
    assert classify(lifecycle(action, source, "default")) == ResyncHint(action)


def test_the_election_records_renewals_cause_no_resync() -> None:
    for action in ("network-acl-created", "network-acl-deleted"):
        assert classify(lifecycle(action, f"/1.0/network-acls/{ELECTION_ACL}17", "default")) is None
    other = classify(lifecycle("network-acl-updated", "/1.0/network-acls/fabricd-authorityx", "default"))
    assert isinstance(other, ResyncHint)
    assert classify(lifecycle("network-acl-updated", "/1.0/network-acls/other", "default")) == ResyncHint(
        "network-acl-updated"
    )


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("/1.0/instances/web%2D1", InstanceHint("default", "web-1")),
        ("/1.0/instances/c%201", InstanceHint("default", "c 1")),
        ("/1.0/networks/my%2Fnet", NetworkHint("default", "my/net")),
        ("/1.0/networks/br%C3%A9", NetworkHint("default", "bré")),
        ("/1.0/instances/c1?project=my%2Dproj", InstanceHint("my-proj", "c1")),
        ("/1.0/instances/c1?project=a+b", InstanceHint("a b", "c1")),
        ("/1.0/instances/c1/", InstanceHint("default", "c1")),
    ],
)
def test_url_encoded_names(source: str, hint: object) -> None:
    assert (
        classify(lifecycle("instance-updated" if "instances" in source else "network-updated", source))
        == hint
    )


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "logging",
            "timestamp": "2024-01-10T10:00:00Z",
            "metadata": {"context": {"instance": "c1"}, "level": "info", "message": "Started instance"},
            "location": "none",
            "project": "",
        },
        {
            "type": "operation",
            "timestamp": "2024-01-10T10:00:00Z",
            "metadata": {
                "id": "1b5d2c4a-0000-4000-8000-000000000000",
                "class": "task",
                "description": "Starting instance",
                "resources": {"instances": ["/1.0/instances/c1"]},
                "status": "Running",
                "status_code": 103,
                "may_cancel": False,
                "err": "",
                "location": "none",
            },
            "project": "default",
        },
        lifecycle("image-created", "/1.0/images/5f1b2a9c0e"),
        lifecycle("storage-pool-updated", "/1.0/storage-pools/default"),
        lifecycle("certificate-created", "/1.0/certificates/abcd"),
        lifecycle("operation-cancelled", "/1.0/operations/1b5d2c4a"),
        lifecycle("instance-started", "/1.0/instances"),  # no name
        lifecycle("network-updated", "/1.0/networks"),
        lifecycle("instance-started", "/2.0/instances/c1"),
        lifecycle("instance-started", ""),
    ],
)
def test_other_events_are_ignored(event: dict[str, Any]) -> None:
    assert classify(event) is None


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": "lifecycle"},
        {"type": "lifecycle", "metadata": None},
        {"type": "lifecycle", "metadata": "instance-started"},
        {"type": "lifecycle", "metadata": ["instance-started", "/1.0/instances/c1"]},
        {"type": "lifecycle", "metadata": {}},
        {"type": "lifecycle", "metadata": {"action": "instance-started", "source": "//[c1/1.0/instances/c1"}},
        {"type": "lifecycle", "metadata": {"action": "instance-started", "source": "http://[::1/1.0"}},
        {"type": "lifecycle", "metadata": {"action": None, "source": None}},
        {"type": "lifecycle", "metadata": {"action": 5, "source": ["x"]}},
        {"type": ["lifecycle"], "metadata": {"action": "instance-started", "source": "/1.0/instances/c1"}},
    ],
)
def test_garbage_is_ignored(event: dict[str, Any]) -> None:
    assert classify(event) is None


@pytest.mark.parametrize("event", [None, [], "lifecycle", 5, b"{}"])
def test_non_mapping_events_are_ignored(event: Any) -> None:
    assert classify(event) is None


# --- property: never raises ---------------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "[",
        "]",
        "%",
        "%ZZ",
        "%2F",
        "?",
        "#",
        "//",
        "/1.0/instances/",
        "/1.0/networks/",
        "?project=",
        "\x00",
        "é",
    ]
)
TEXT = st.one_of(st.text(max_size=15), HOSTILE)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=3)),
    max_leaves=12,
)
SOURCE = st.lists(
    st.one_of(
        st.sampled_from(["/1.0", "/instances", "/networks", "/c1", "/br0", "/snapshots", "/forwards"]),
        TEXT,
    ),
    max_size=6,
).map("".join)
ACTION = st.one_of(
    st.sampled_from(
        [
            "instance-started",
            "instance-renamed",
            "network-updated",
            "profile-updated",
            "network-forward-created",
        ]
    ),
    JSON,
)
EVENT = st.one_of(
    st.dictionaries(TEXT, JSON, max_size=4),
    st.fixed_dictionaries(
        {"type": st.one_of(st.just("lifecycle"), JSON)},
        optional={
            "metadata": st.one_of(
                JSON,
                st.fixed_dictionaries({}, optional={"action": ACTION, "source": st.one_of(SOURCE, JSON)}),
            ),
            "project": JSON,
            "location": JSON,
        },
    ),
)


@FAST
@given(EVENT)
def test_classify_never_raises(event: dict[str, Any]) -> None:
    hint = classify(event)
    assert hint is None or isinstance(hint, InstanceHint | NetworkHint | ResyncHint)
    if isinstance(hint, InstanceHint | NetworkHint):
        assert hint.name
        assert isinstance(hint.project, str)
        assert hint.project


@FAST
@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), st.sampled_from(["default", "p1", "my-proj"]))
def test_any_instance_name_round_trips(name: str, project: str) -> None:
    source = f"/1.0/instances/{name}" + ("" if project == "default" else f"?project={project}")
    assert classify(lifecycle("instance-updated", source)) == InstanceHint(project, name)
