"""Property tests for the LXD parsers: garbage is refused, never a crash; valid input is read as given."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.frozen import FrozenMap
from fabricd.lxd.parse import (
    RecordError,
    ovn_chassis_of,
    parse_instance,
    parse_listener,
    parse_member,
    parse_network,
)
from fabricd.lxd.reader import _Refusals
from fabricd.lxd.records import (
    STANDALONE,
    InstanceRecord,
    ListenerRecord,
    MemberRecord,
    NetworkRecord,
    RefusedObject,
)

FAST = settings(max_examples=60, deadline=None)

# --- arbitrary JSON-ish values -------------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\n",
        "../../etc/passwd",
        "%2F",
        "%",
        "é",
        "\u202e",
        "\ud7ff",
        "💥",
        "a" * 300,
        "None",
        "null",
        "true",
        "0",
        "-1",
        "{}",
        "[]",
        "user.",
        "volatile.eth0.hwaddr",
        "nic",
        "global",
        "Running",
    ]
)
TEXT = st.one_of(st.text(max_size=12), HOSTILE)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(TEXT, children, max_size=4),
    ),
    max_leaves=20,
)
FIELDS_INSTANCE = [
    "name",
    "project",
    "type",
    "status",
    "location",
    "expanded_config",
    "expanded_devices",
    "state",
]
FIELDS_NETWORK = ["name", "type", "managed", "config"]
FIELDS_FORWARD = ["listen_address", "location", "config"]
FIELDS_MEMBER = ["server_name", "status", "url"]


def near_valid(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the right keys (mostly) and arbitrary values: they reach deep into the parser."""
    return st.fixed_dictionaries({}, optional={f: JSON for f in fields}).flatmap(
        lambda known: st.dictionaries(TEXT, JSON, max_size=3).map(lambda extra: {**extra, **known})
    )


def plausible_instance() -> st.SearchStrategy[dict[str, Any]]:
    """Right top-level types, arbitrary nested content: garbage inside devices and state."""
    device = st.one_of(
        st.dictionaries(TEXT, st.one_of(TEXT, JSON), max_size=4).map(lambda d: {**d, "type": "nic"}),
        JSON,
    )
    iface = st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "addresses": st.one_of(
                    JSON,
                    st.lists(
                        st.fixed_dictionaries(
                            {}, optional={"address": JSON, "netmask": JSON, "scope": st.just("global")}
                        ),
                        max_size=3,
                    ),
                ),
                "host_name": JSON,
                "hwaddr": JSON,
            },
        ),
        JSON,
    )
    state = st.one_of(
        JSON,
        st.fixed_dictionaries(
            {},
            optional={"status": JSON, "network": st.one_of(JSON, st.dictionaries(TEXT, iface, max_size=3))},
        ),
    )
    return st.fixed_dictionaries(
        {"name": TEXT, "status": TEXT},
        optional={
            "project": TEXT,
            "location": TEXT,
            "type": TEXT,
            "expanded_config": st.one_of(JSON, st.dictionaries(TEXT, TEXT, max_size=4)),
            "expanded_devices": st.one_of(JSON, st.dictionaries(TEXT, device, max_size=4)),
            "state": state,
        },
    )


def returns_record_or_record_error(func: Any, raw: Any, record_type: type) -> None:
    try:
        result = func(raw)
    except RecordError as exc:
        assert str(exc)
        return
    assert isinstance(result, record_type)
    hash(result)  # records must stay hashable whatever came in


@FAST
@given(st.one_of(near_valid(FIELDS_INSTANCE), plausible_instance(), st.dictionaries(TEXT, JSON)))
def test_parse_instance_never_crashes(raw: dict[str, Any]) -> None:
    returns_record_or_record_error(parse_instance, raw, InstanceRecord)


@FAST
@given(st.one_of(near_valid(FIELDS_NETWORK), st.dictionaries(TEXT, JSON)), JSON)
def test_parse_network_never_crashes(raw: dict[str, Any], state: Any) -> None:
    chassis = ovn_chassis_of(state)
    assert chassis is None or (isinstance(chassis, str) and chassis)
    returns_record_or_record_error(lambda r: parse_network(r, "default", chassis), raw, NetworkRecord)


@FAST
@given(st.one_of(near_valid(FIELDS_FORWARD), st.dictionaries(TEXT, JSON)))
def test_parse_forward_and_load_balancer_never_crash(raw: dict[str, Any]) -> None:
    returns_record_or_record_error(
        lambda r: parse_listener(r, "forward", "default", "br0"), raw, ListenerRecord
    )
    returns_record_or_record_error(
        lambda r: parse_listener(r, "load-balancer", "default", "ovn0"), raw, ListenerRecord
    )


@FAST
@given(st.one_of(near_valid(FIELDS_MEMBER), st.dictionaries(TEXT, JSON)))
def test_parse_member_never_crashes(raw: dict[str, Any]) -> None:
    returns_record_or_record_error(parse_member, raw, MemberRecord)


@FAST
@given(JSON)
def test_refusals_turn_anything_into_a_record_or_a_refusal(raw: Any) -> None:
    refusals = _Refusals([])
    result = refusals.parse("instance", "p1", raw, parse_instance)
    if result is None:
        (refused,) = refusals.items
        assert isinstance(refused, RefusedObject)
        assert (refused.kind, refused.project) == ("instance", "p1")
        assert refused.reason
        assert isinstance(refused.name, str)
        assert len(refused.name) <= 80
    else:
        assert isinstance(result, InstanceRecord)
        assert refusals.items == []


@given(st.one_of(SCALAR, st.lists(JSON, max_size=3)))
def test_refusals_refuse_non_mappings_with_a_reason(raw: Any) -> None:
    refusals = _Refusals([])
    assert refusals.parse("network", "default", raw, lambda r: parse_network(r, "default")) is None
    assert refusals.items == [
        RefusedObject("network", "default", "?", f"expected an object, got {type(raw).__name__}")
    ]


# --- valid instances: the record reflects the input -----------------------------------------------

NAME = st.text(alphabet="abcdefgh0123-", min_size=1, max_size=8)
CONFIG_VALUE = st.text(max_size=10)
SCOPES = st.sampled_from(["global", "link", "local"])
ADDRESS = st.fixed_dictionaries(
    {
        "family": st.sampled_from(["inet", "inet6"]),
        "address": st.ip_addresses().map(str),
        "netmask": st.integers(min_value=0, max_value=128).map(str),
        "scope": SCOPES,
    }
)
MAC = st.lists(st.integers(0, 255), min_size=3, max_size=3).map(
    lambda b: "00:16:3e:" + ":".join(f"{x:02x}" for x in b)
)


@st.composite
def valid_instance(draw: st.DrawFn) -> dict[str, Any]:
    nic_names = draw(st.lists(NAME, max_size=4, unique=True))
    other_devices = draw(st.lists(NAME.map(lambda n: "d-" + n), max_size=2, unique=True))
    devices: dict[str, Any] = {name: {"type": "disk", "path": f"/{name}"} for name in other_devices}
    expanded_config: dict[str, str] = draw(
        st.dictionaries(
            st.sampled_from(["user.", "volatile.", "image.", "limits.", "security."]).flatmap(
                lambda prefix: NAME.map(lambda n: prefix + n)
            ),
            CONFIG_VALUE,
            max_size=6,
        )
    )
    interfaces: dict[str, Any] = {}
    for name in nic_names:
        devices[name] = {"type": "nic", "network": draw(NAME)}
        mac = draw(MAC)
        expanded_config[f"volatile.{name}.hwaddr"] = mac
        if draw(st.booleans()):
            interfaces[name] = {
                "addresses": draw(st.lists(ADDRESS, max_size=4)),
                "hwaddr": mac,
                "host_name": "veth" + draw(NAME),
                "state": "up",
            }
    raw: dict[str, Any] = {
        "name": draw(NAME),
        "type": draw(st.sampled_from(["container", "virtual-machine"])),
        "status": draw(st.sampled_from(["Running", "Stopped", "Frozen", "Error"])),
        "expanded_config": expanded_config,
        "expanded_devices": devices,
    }
    if draw(st.booleans()):
        raw["project"] = draw(NAME)
    if draw(st.booleans()):
        raw["location"] = draw(st.sampled_from(["none", "h1", "h2", ""]))
    if draw(st.booleans()):
        raw["state"] = {
            "status": draw(st.sampled_from(["Running", "Stopped", "Frozen"])),
            "network": interfaces or None,
        }
    return raw


@FAST
@given(valid_instance())
def test_valid_instances_are_read_as_given(raw: dict[str, Any]) -> None:
    record = parse_instance(raw, default_project="dflt")
    assert record.name == raw["name"]
    assert record.type == raw["type"]
    assert record.project == raw.get("project", "dflt")
    assert record.location == (raw.get("location") or STANDALONE)
    state = raw.get("state")
    assert record.status == (state["status"] if state else raw["status"])
    assert record.running == (record.status == "Running")
    assert record.config == {k: v for k, v in raw["expanded_config"].items() if k.startswith("user.")}

    nic_devices = sorted(name for name, dev in raw["expanded_devices"].items() if dev["type"] == "nic")
    assert [nic.device for nic in record.nics] == nic_devices
    interfaces = (state or {}).get("network") or {}
    for nic in record.nics:
        assert nic.config == raw["expanded_devices"][nic.device]
        assert nic.network == raw["expanded_devices"][nic.device]["network"]
        assert nic.hwaddr == raw["expanded_config"][f"volatile.{nic.device}.hwaddr"]
        iface = interfaces.get(nic.device, {})
        assert nic.host_name == iface.get("host_name")
        expected = sorted(
            f"{a['address']}/{a['netmask']}" for a in iface.get("addresses", []) if a["scope"] == "global"
        )
        assert list(nic.addresses) == expected
    # equal input, equal (and equally hashed) record
    assert parse_instance(raw, default_project="dflt") == record
    assert hash(parse_instance(raw, default_project="dflt")) == hash(record)


@FAST
@given(st.dictionaries(NAME, CONFIG_VALUE, max_size=8), st.randoms(use_true_random=False))
def test_frozen_map_ignores_insertion_order(content: dict[str, str], rnd: Any) -> None:
    items = list(content.items())
    rnd.shuffle(items)
    shuffled = FrozenMap(dict(items))
    assert shuffled == FrozenMap(content)
    assert hash(shuffled) == hash(FrozenMap(content))
    assert shuffled == content
    assert list(shuffled) == sorted(content)
