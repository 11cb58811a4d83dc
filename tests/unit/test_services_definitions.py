"""Services on instances: the user.fabric.anycast.* keys, and which definitions are in force."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fabricd.config import load_config_text
from fabricd.config.model import BackendSelector, ServiceConfig
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import InstanceRecord
from fabricd.services.definitions import resolve_services
from fabricd.services.instance_keys import MAX_KEYS, PREFIX, read_instance
from fabricd.services.model import ServiceProblem
from tests.unit.test_config_properties import service_lists

HOST = "host: {name: h1, underlay_address: 192.0.2.11}\n"


def keys(service: str, **settings: str) -> dict[str, str]:
    return {f"{PREFIX}{service}.{k.replace('__', '.')}": v for k, v in settings.items()}


def instance(name: str, config: dict[str, str], project: str = "default") -> InstanceRecord:
    return InstanceRecord(project, name, "container", "Running", "h1", (), FrozenMap(config))


DNS = keys("dns", addresses="10.250.0.53, 2001:db8:250::53", check__type="dns", check__query="dns.example",
           med="20", communities="65000:1,65000:2")  # fmt: skip


def test_a_full_definition_reads_like_the_file() -> None:
    read = read_instance("tenant", DNS)
    assert read.refused == {}
    service = read.defines["dns"]
    assert service.addresses == (ip_address("10.250.0.53"), ip_address("2001:db8:250::53"))
    assert service.backends == BackendSelector(project="tenant", key=True)
    assert service.check is not None and (service.check.type, service.check.port) == ("dns", 53)
    assert (service.med, service.communities) == (20, ("65000:1", "65000:2"))
    assert read.member("dns") is True and read.member("other") is None


def test_joining_and_leaving() -> None:
    read = read_instance("default", {f"{PREFIX}web": "yes", f"{PREFIX}db": "off", "user.other": "x"})
    assert (read.member("web"), read.member("db"), read.refused) == (True, False, {})
    # false wins over a definition, which is then not even read
    read = read_instance("default", {**keys("dns", addresses="nope"), f"{PREFIX}dns": "false"})
    assert (read.member("dns"), read.defines, read.refused) == (False, {}, {})


def test_bad_keys_refuse_that_service_with_the_key_and_reason() -> None:
    read = read_instance(
        "default",
        {
            **keys("dns", addresses="10.0.0.1", check__type="tcp"),
            **keys("web", addresses="10.0.0.2"),
            f"{PREFIX}x": "maybe",
            f"{PREFIX}a_b": "true",
        },
    )
    assert read.refused == {
        "dns": f"{PREFIX}dns.check.port: missing required key 'port' (needed for a tcp check)",
        "x": f"{PREFIX}x: expected true or false, got 'maybe'",
        "a_b": f"{PREFIX}a_b: 'a_b' is not a service name",
    }
    assert set(read.defines) == {"web"}  # the other service on the instance still counts


def test_key_shapes_that_cannot_be_a_definition() -> None:
    cases = {
        **keys("a", check="tcp", check__port="5"),
        **keys("b", addresses="10.0.0.1", Check__type="tcp"),
        **keys("c", addresses="10.0.0.1", backends__key="true"),
        **keys("d", addresses="10.0.0.1", check__type="exec", check__command="'open"),
        **keys("e", addresses="10.0.0.1", check__type="udp", check__port="7", check__send="x" * 5000),
    }
    refused = read_instance("default", cases).refused
    assert refused["a"] == f"{PREFIX}a.check.port: {PREFIX}a.check is set as a value too"
    assert refused["b"] == f"{PREFIX}b.Check.type: not a setting"
    assert refused["c"].startswith(f"{PREFIX}c.backends: unknown key 'backends'")
    assert refused["d"] == f"{PREFIX}d.check.command: cannot split the command: No closing quotation"
    assert refused["e"] == f"{PREFIX}e.check.send: longer than 4096 characters"
    many = {f"{PREFIX}s{n}": "true" for n in range(MAX_KEYS + 1)}
    assert read_instance("default", many).refused == {"*": f"{MAX_KEYS + 1} {PREFIX}* keys, more than 64"}


def test_exec_command_is_split_like_a_shell_without_one() -> None:
    read = read_instance("p", keys("c", addresses="10.0.0.1", check__type="exec",
                                   check__command="/bin/sh -c 'test -e /run/ok; echo $x'"))  # fmt: skip
    check = read.defines["c"].check
    assert check is not None and check.command == ("/bin/sh", "-c", "test -e /run/ok; echo $x")


def flatten(data: Any, path: str = "") -> dict[str, str]:
    """A service as instance keys: nested keys dotted, lists joined, the command quoted."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{path}.{key}" if path else key))
        return out
    if path == "check.command":
        return {path: " ".join(yaml.safe_dump(a).strip() if " " in a else a for a in data)}
    if isinstance(data, list):
        return {path: ", ".join(map(str, data))}
    if isinstance(data, bool):
        return {path: str(data).lower()}
    return {path: str(data) if not isinstance(data, float) else repr(data)}


@settings(max_examples=150, deadline=None)
@given(service_lists().filter(bool))
@example(  # a plain exponent ("1e-05") is a number on an instance, as in the file
    [{"name": "a0", "addresses": ["1.0.0.0"], "backends": {"instances": ["a0"]},
      "check": {"type": "tcp", "port": 1, "interval": 0.001, "timeout": 1e-05}}]
)  # fmt: skip
@example(  # a payload's spaces are kept
    [{"name": "a0", "addresses": ["::2"], "backends": {"pattern": "a0-*"},
      "check": {"type": "udp", "port": 1, "send": "0 ", "expect": " "}}]
)  # fmt: skip
@example(  # `null` is a name to ask for, not nothing
    [{"name": "a0", "addresses": ["::2"], "backends": {"pattern": "a0-*"},
      "check": {"type": "dns", "query": "null"}}]
)  # fmt: skip
def test_an_instance_definition_means_what_the_file_says(services: list[dict[str, Any]]) -> None:
    spec = dict(services[0])
    name = spec.pop("name")
    spec.pop("backends")
    text = HOST + yaml.safe_dump({"services": [{"name": name, "backends": {"key": True}, **spec}]})
    from_file = load_config_text(text).services[0]
    settings_ = {f"{PREFIX}{name}.{k}": v for k, v in flatten(spec).items()}
    read = read_instance("default", settings_)
    assert read.refused == {}, settings_
    assert read.defines[name] == from_file


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(
            st.text(max_size=30).map(lambda t: PREFIX + t),
            st.sampled_from(["addresses", "check.type", "check.port", "med", "flap.limit", "check"]).map(
                lambda s: f"{PREFIX}svc.{s}"
            ),
        ),
        st.one_of(
            st.text(max_size=40), st.sampled_from(["10.0.0.1", "tcp", "5", "true", "[1, 2]", "{a: b}"])
        ),
        max_size=12,
    )
)
def test_hostile_keys_never_raise_and_every_refusal_names_a_key(config: dict[str, str]) -> None:
    read = read_instance("default", config)
    for service, reason in read.refused.items():
        assert reason.startswith(PREFIX) or service == "*", reason
    for name, service in read.defines.items():
        assert service.name == name and service.addresses


# --- which definitions are in force -------------------------------------------------------------


def configured(name: str, address: str) -> ServiceConfig:
    return ServiceConfig(name, (ip_address(address),), BackendSelector(key=True))


def test_instance_definitions_in_force_when_they_agree() -> None:
    found = resolve_services((), [instance("a", DNS), instance("b", DNS), instance("c", {})])
    assert [(s.name, s.source) for s in found.services] == [("dns", "instances")]
    assert found.problems == ()


def test_instances_that_disagree_are_all_refused_whatever_the_order() -> None:
    other = {**DNS, f"{PREFIX}dns.med": "30"}
    records = [instance("a", DNS), instance("b", other), instance("c", DNS)]
    found = resolve_services((), records)
    assert found.services == ()
    reason = "the instances defining service dns disagree on it: a, c | b"
    assert found.problems == tuple(ServiceProblem("dns", "default", n, reason) for n in "abc")
    assert resolve_services((), records[::-1]).problems == found.problems
    assert found.refusal("dns", "default", "b") == reason


def test_a_config_service_cannot_be_redefined_by_an_instance() -> None:
    found = resolve_services((configured("dns", "10.9.9.9"),), [instance("a", DNS)])
    assert [(s.name, s.source) for s in found.services] == [("dns", "config")]
    assert found.refusal("dns", "default", "a") == (
        f"service dns is defined in fabricd's config; an instance may only join it ({PREFIX}dns=true)"
    )


def test_one_service_name_in_two_projects_is_refused() -> None:
    found = resolve_services((), [instance("a", DNS, "p1"), instance("b", DNS, "p2")])
    assert found.services == ()
    assert {p.reason for p in found.problems} == {"service dns is defined in more than one project (p1, p2)"}


def test_an_address_belongs_to_one_service() -> None:
    same = keys("dns2", addresses="10.250.0.53", check__type="tcp", check__port="53")
    found = resolve_services((), [instance("a", DNS), instance("b", same)])
    assert found.services == ()
    assert {(p.service, p.reason) for p in found.problems} == {
        ("dns", "address 10.250.0.53 is also claimed by service dns2"),
        ("dns2", "address 10.250.0.53 is also claimed by service dns"),
    }
    found = resolve_services((configured("web", "10.250.0.53"),), [instance("a", DNS)])
    assert [s.name for s in found.services] == ["web"]
    assert found.problems == (
        ServiceProblem("dns", "default", "", "address 10.250.0.53 belongs to service web (config)"),
    )
