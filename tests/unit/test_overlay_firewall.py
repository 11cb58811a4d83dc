"""The VXLAN firewall without a kernel: rendering, parsing `nft -j`, and when apply() rebuilds.

`nft -c` needs CAP_NET_ADMIN even in check mode, so checking rendered rulesets with nft is in
tests/lab/test_overlay_firewall_lab.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabricd.config.model import IPAddress
from fabricd.overlay.firewall import (
    FirewallError,
    OverlayFirewall,
    PeerSets,
    RuleSummary,
    expected_rules,
    parse_counters,
    parse_table,
    parse_tables,
    peer_sets,
    render_peer_update,
    render_remove,
    render_ruleset,
)

A1, A2, A9, A10 = (IPv4Address(f"10.77.0.{n}") for n in (1, 2, 9, 10))
B1, B2, B10 = (IPv6Address(f"fd77::{n}") for n in ("1", "2", "10"))

addresses = st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), max_size=30)


def elements(text: str, set_name: str) -> list[IPAddress]:
    """The addresses a batch puts in one set, from `elements = {}` or `add element` lines."""
    found: list[IPAddress] = []
    in_set = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == f"set {set_name} {{":
            in_set = True
        elif in_set and stripped == "}":
            in_set = False
        elif in_set and stripped.startswith("elements = {"):
            found += [ip_address(a.strip()) for a in stripped[len("elements = {") : -1].split(",")]
        elif stripped.startswith(f"add element inet fabricd_overlay {set_name} {{"):
            found += [ip_address(a.strip()) for a in stripped.split("{", 1)[1].rstrip("} ").split(",")]
    return found


# --- rendering -----------------------------------------------------------------------------------


def test_ruleset_is_exactly_the_documented_table() -> None:
    assert render_ruleset(4789, [A2, B1]) == (
        "table inet fabricd_overlay {}\n"
        "delete table inet fabricd_overlay\n"
        "table inet fabricd_overlay {\n"
        "\tcounter vxlan_accepted {}\n"
        "\tcounter vxlan_dropped {}\n"
        "\tset peers_v4 {\n"
        "\t\ttype ipv4_addr\n"
        "\t\telements = { 10.77.0.2 }\n"
        "\t}\n"
        "\tset peers_v6 {\n"
        "\t\ttype ipv6_addr\n"
        "\t\telements = { fd77::1 }\n"
        "\t}\n"
        "\tchain vxlan_in {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        '\t\tudp dport 4789 ip saddr @peers_v4 counter name "vxlan_accepted" accept\n'
        '\t\tudp dport 4789 ip6 saddr @peers_v6 counter name "vxlan_accepted" accept\n'
        '\t\tudp dport 4789 counter name "vxlan_dropped" drop\n'
        "\t}\n"
        "}\n"
    )


def test_ruleset_recreates_the_table_in_one_batch() -> None:
    lines = render_ruleset(4789, []).splitlines()
    # Add-then-delete makes the delete succeed whether or not the table was there.
    assert lines[:3] == [
        "table inet fabricd_overlay {}",
        "delete table inet fabricd_overlay",
        "table inet fabricd_overlay {",
    ]
    assert not any("flush ruleset" in line for line in lines)
    assert {m for line in lines for m in re.findall(r"table (\w+ \w+)", line)} == {"inet fabricd_overlay"}


def test_empty_peers_leave_empty_sets_and_drop_all_vxlan() -> None:
    text = render_ruleset(4789, [])
    assert "elements" not in text  # nft rejects `elements = { }`
    assert "\tset peers_v4 {\n\t\ttype ipv4_addr\n\t}\n" in text
    assert "\tset peers_v6 {\n\t\ttype ipv6_addr\n\t}\n" in text
    assert 'udp dport 4789 counter name "vxlan_dropped" drop' in text


def test_v4_only_and_v6_only() -> None:
    v4 = render_ruleset(4789, [A2, A1])
    assert elements(v4, "peers_v4") == [A1, A2] and elements(v4, "peers_v6") == []
    v6 = render_ruleset(4789, [B2, B1])
    assert elements(v6, "peers_v4") == [] and elements(v6, "peers_v6") == [B1, B2]


def test_elements_sort_numerically_and_deduplicate() -> None:
    text = render_ruleset(4789, [A10, B10, A9, A2, B2, A9, B10, A2])
    assert elements(text, "peers_v4") == [A2, A9, A10]  # 10.77.0.10 after .9, not after .1
    assert elements(text, "peers_v6") == [B2, B10]


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    peers: list[IPAddress] = [A10, B10, A9, A2, B2]
    assert render_ruleset(4789, peers) == render_ruleset(4789, list(reversed(peers)))
    assert render_peer_update(peers) == render_peer_update(iter(sorted(peers, key=str)))


def test_port_appears_in_every_rule() -> None:
    rules = [line for line in render_ruleset(8472, [A1]).splitlines() if "udp dport" in line]
    assert len(rules) == 3 and all("udp dport 8472 " in rule for rule in rules)
    assert "4789" not in render_ruleset(8472, [A1])


@pytest.mark.parametrize("port", [0, -1, 65536, True, 4789.0, "4789"])
def test_bad_ports_are_refused(port: Any) -> None:
    with pytest.raises(ValueError, match="VXLAN port"):
        render_ruleset(port, [A1])
    with pytest.raises(ValueError, match="VXLAN port"):
        OverlayFirewall(port)


def test_only_parsed_addresses_reach_the_ruleset() -> None:
    with pytest.raises(TypeError, match="IPv4Address or IPv6Address"):
        render_ruleset(4789, ["10.0.0.1; flush ruleset"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        render_peer_update([A1, "fd77::1"])  # type: ignore[list-item]


def test_a_scope_id_is_dropped_and_deduplicated() -> None:
    scoped = IPv6Address("fe80::1%eth0")
    text = render_ruleset(4789, [scoped, IPv6Address("fe80::1")])
    assert "%" not in text and "eth0" not in text
    assert elements(text, "peers_v6") == [IPv6Address("fe80::1")]


def test_peer_update_only_touches_the_sets() -> None:
    text = render_peer_update([B2, A2, A1])
    assert text == (
        "flush set inet fabricd_overlay peers_v4\n"
        "flush set inet fabricd_overlay peers_v6\n"
        "add element inet fabricd_overlay peers_v4 { 10.77.0.1, 10.77.0.2 }\n"
        "add element inet fabricd_overlay peers_v6 { fd77::2 }\n"
    )
    assert "chain" not in text and "delete" not in text


def test_peer_update_to_nobody_only_flushes() -> None:
    assert render_peer_update([]) == (
        "flush set inet fabricd_overlay peers_v4\nflush set inet fabricd_overlay peers_v6\n"
    )


def test_remove_works_with_or_without_the_table() -> None:
    assert render_remove() == "table inet fabricd_overlay {}\ndelete table inet fabricd_overlay\n"


@given(addresses)
def test_set_elements_are_the_sorted_unique_inputs_of_each_family(peers: list[IPAddress]) -> None:
    want_v4 = sorted({a for a in peers if isinstance(a, IPv4Address)})
    want_v6 = sorted({a for a in peers if isinstance(a, IPv6Address)})
    for text in (render_ruleset(4789, peers), render_peer_update(peers)):
        assert elements(text, "peers_v4") == want_v4
        assert elements(text, "peers_v6") == want_v6
    assert peer_sets(peers) == PeerSets(tuple(want_v4), tuple(want_v6))


@given(addresses, st.integers(1, 65535))
def test_ruleset_has_only_numbers_addresses_and_our_words(peers: list[IPAddress], port: int) -> None:
    text = render_ruleset(port, peers)
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    ours = {
        "table", "inet", "fabricd_overlay", "delete", "counter", "vxlan_accepted", "vxlan_dropped", "set",
        "peers_v4", "peers_v6", "type", "ipv4_addr", "ipv6_addr", "elements", "chain", "vxlan_in",
        "filter", "hook", "input", "priority", "policy", "accept", "udp", "dport", "ip", "ip6", "saddr",
        "name", "drop",
    }  # fmt: skip
    hex_words = {w for w in words - ours if re.fullmatch(r"[0-9a-fA-F]+", w)}  # inside IPv6 addresses
    assert words - ours - hex_words <= {"ffff"}
    assert f"udp dport {port} " in text


# --- parsing `nft -j` output (as nft 1.0.6 prints it) --------------------------------------------

META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}


def rule(handle: int, *exprs: dict[str, Any]) -> dict[str, Any]:
    return {"rule": {"family": "inet", "table": "fabricd_overlay", "chain": "vxlan_in", "handle": handle,
                     "expr": list(exprs)}}  # fmt: skip


def match(protocol: str, field: str, right: object) -> dict[str, Any]:
    payload = {"payload": {"protocol": protocol, "field": field}}
    return {"match": {"op": "==", "left": payload, "right": right}}


def table_doc(port: int = 4789, v4: Sequence[str] = ("10.77.0.2",), v6: Sequence[str] = (),
              handle: int = 5) -> dict[str, Any]:  # fmt: skip
    sets = []
    for name, kind, elems in (("peers_v4", "ipv4_addr", v4), ("peers_v6", "ipv6_addr", v6)):
        obj: dict[str, Any] = {"family": "inet", "name": name, "table": "fabricd_overlay", "type": kind}
        if elems:
            obj["elem"] = list(elems)
        sets.append({"set": obj})
    return {"nftables": [
        META,
        {"table": {"family": "inet", "name": "fabricd_overlay", "handle": handle}},
        {"counter": {"family": "inet", "name": "vxlan_accepted", "table": "fabricd_overlay", "packets": 3}},
        {"counter": {"family": "inet", "name": "vxlan_dropped", "table": "fabricd_overlay", "packets": 7}},
        *sets,
        {"chain": {"family": "inet", "table": "fabricd_overlay", "name": "vxlan_in", "handle": 1,
                   "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
        rule(6, match("udp", "dport", port), match("ip", "saddr", "@peers_v4"), {"counter": "vxlan_accepted"},
             {"accept": None}),
        rule(7, match("udp", "dport", port), match("ip6", "saddr", "@peers_v6"),
             {"counter": "vxlan_accepted"}, {"accept": None}),
        rule(8, match("udp", "dport", port), {"counter": "vxlan_dropped"}, {"drop": None}),
    ]}  # fmt: skip


def test_parse_table_reads_handle_sets_and_rules() -> None:
    live = parse_table(table_doc(v4=["10.77.0.9", "10.77.0.2"], v6=["::ffff:1.2.3.4", "fd77::1"]))
    assert live is not None
    assert live.handle == 5 and live.hooked
    assert live.rules == expected_rules(4789)
    # nft prints a mapped address dotted; Python 3.11 prints ::ffff:102:304: compared parsed, they agree.
    assert live.peers == peer_sets([A9, A2, IPv6Address("::ffff:102:304"), B1])


def test_parse_table_sees_another_port_and_foreign_sets() -> None:
    live = parse_table(table_doc(port=8472))
    assert live is not None and live.rules[0] == RuleSummary(8472, "@peers_v4", "accept")
    doc = table_doc()
    doc["nftables"][4]["set"]["elem"] = [{"prefix": {"addr": "10.0.0.0", "len": 8}}]
    live = parse_table(doc)
    assert live is not None and live.peers is None


def test_parse_ignores_other_tables() -> None:
    other = {"nftables": [META, {"table": {"family": "ip", "name": "fabricd_overlay", "handle": 1}},
                          {"table": {"family": "inet", "name": "filter", "handle": 2}}]}  # fmt: skip
    assert parse_table(other) is None
    assert not parse_tables(other)
    assert parse_tables(table_doc())


def test_parse_counters() -> None:
    assert parse_counters(table_doc()) == {"vxlan_accepted": 3, "vxlan_dropped": 7}
    assert parse_counters({"nftables": [META]}) == {}
    with pytest.raises(ValueError):
        parse_counters({"not": "nft"})


# --- apply() decisions, against a fake nft ------------------------------------------------------


class FakeNft:
    """Stands in for subprocess.run: keeps one table in memory and records every batch."""

    def __init__(self) -> None:
        self.table: dict[str, Any] | None = None
        self.next_handle = 1
        self.generation = 1  # the kernel's ruleset generation: every committed batch moves it
        self.batches: list[str] = []
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.argvs.append(argv)
        args = argv[argv.index("nft") + 1 :]
        if args == ["-f", "-"]:
            return self.batch(argv, kwargs["input"])
        if args == ["-j", "list", "tables", "inet"]:
            tables = [] if self.table is None else [table_doc(handle=self.table["handle"])["nftables"][1]]
            return self.ok(argv, {"nftables": [META, *tables]})
        if self.table is None:
            return subprocess.CompletedProcess(argv, 1, "", "Error: No such file or directory\n")
        doc = table_doc(self.table["port"], self.table["v4"], self.table["v6"], self.table["handle"])
        return self.ok(argv, doc)

    def ok(self, argv: list[str], doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, json.dumps(doc), "")

    def batch(self, argv: list[str], text: str) -> subprocess.CompletedProcess[str]:
        self.batches.append(text)
        self.generation += 1
        if text == render_remove():
            self.table = None
        elif text.startswith("table inet fabricd_overlay {}\ndelete"):
            port = int(re.findall(r"udp dport (\d+)", text)[0])
            self.table = {"handle": self.next_handle, "port": port}
            self.next_handle += 1
            self.fill(text)
        elif self.table is None:
            return subprocess.CompletedProcess(argv, 1, "", "Error: No such file or directory\n")
        else:
            self.fill(text)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def fill(self, text: str) -> None:
        assert self.table is not None
        self.table["v4"] = [str(a) for a in elements(text, "peers_v4")]
        self.table["v6"] = [str(a) for a in elements(text, "peers_v6")]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    nft = FakeNft()
    monkeypatch.setattr("subprocess.run", nft)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr("fabricd.overlay.firewall.ruleset_generation", lambda: nft.generation)
    return nft


def kinds(fake: FakeNft) -> list[str]:
    return ["full" if b.startswith("table") and "chain" in b else b.split()[0] for b in fake.batches]


def test_apply_builds_once_then_updates_sets_then_does_nothing(fake: FakeNft) -> None:
    fw = OverlayFirewall(4789)
    fw.apply([A2])
    fw.apply([A2])
    fw.apply([A1, A2])
    fw.apply([A2, A1, A1])
    fw.apply([])
    assert kinds(fake) == ["full", "flush", "flush"]
    assert fake.batches[1] == render_peer_update([A1, A2])
    assert fake.table is not None and fake.table["v4"] == [] and fake.table["handle"] == 1


def test_first_apply_always_rebuilds_even_when_the_table_looks_right(fake: FakeNft) -> None:
    OverlayFirewall(4789).apply([A2])
    OverlayFirewall(4789).apply([A2])  # a restarted fabricd does not trust what it finds
    assert kinds(fake) == ["full", "full"]


def test_apply_rebuilds_a_missing_or_replaced_table(fake: FakeNft) -> None:
    fw = OverlayFirewall(4789)
    fw.apply([A2])
    fake.table = None  # someone deleted it (a transaction: the generation moves)
    fake.generation += 1
    fw.apply([A2])
    assert fake.table is not None
    fake.table["handle"] = 99  # someone recreated it
    fake.generation += 1
    fw.apply([A2])
    assert kinds(fake) == ["full", "full", "full"]


def test_apply_rebuilds_when_the_port_in_the_kernel_differs(fake: FakeNft) -> None:
    fw = OverlayFirewall(4789)
    fw.apply([A2])
    assert fake.table is not None
    fake.table["port"] = 8472
    fake.generation += 1
    fw.apply([A2])
    assert kinds(fake) == ["full", "full"] and fake.table["port"] == 4789


def test_remove_forgets_the_table(fake: FakeNft) -> None:
    fw = OverlayFirewall(4789)
    fw.apply([A2])
    fw.remove()
    assert fake.table is None and not fw.exists() and fw.counters() == {}
    fw.apply([A2])
    assert kinds(fake) == ["full", "table", "full"]


def test_counters_read_with_the_table_serve_the_status_for_max_age_without_nft(
    fake: FakeNft, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    fw = OverlayFirewall(4789)
    fw.apply([A2])
    runs = len(fake.argvs)
    assert fw.counters(max_age=1.0) == {"vxlan_accepted": 3, "vxlan_dropped": 7}
    assert len(fake.argvs) == runs  # the apply's own read
    now[0] += 1.5
    assert fw.counters(max_age=1.0) == {"vxlan_accepted": 3, "vxlan_dropped": 7}
    assert len(fake.argvs) == runs + 1  # too old: nft asked again
    assert fw.counters() == {"vxlan_accepted": 3, "vxlan_dropped": 7} and len(fake.argvs) == runs + 2
    fw.remove()
    assert fw.counters(max_age=1.0) == {} and len(fake.argvs) > runs + 3  # forgotten with the table


def test_an_unchanged_ruleset_generation_skips_the_read_and_any_change_brings_it_back(
    fake: FakeNft, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw = OverlayFirewall(4789)
    fw.apply([A2])  # built; the next apply reads it once to find it as wanted
    fw.apply([A2])
    runs = len(fake.argvs)
    fw.apply([A2])
    fw.apply([A2])
    assert len(fake.argvs) == runs  # same generation, same peers: no nft at all
    fw.apply([A1, A2])  # other peers: read and update, even at the same generation
    assert kinds(fake)[-1] == "flush" and len(fake.argvs) > runs
    assert fake.table is not None
    fake.table["v4"] = []  # an edit by someone else is a transaction too
    fake.generation += 1
    fw.apply([A1, A2])
    assert kinds(fake) == ["full", "flush", "flush"] and fake.table["v4"] == [str(A1), str(A2)]

    def unreadable() -> int:
        raise OSError("no nfnetlink")

    monkeypatch.setattr("fabricd.overlay.firewall.ruleset_generation", unreadable)
    runs = len(fake.argvs)
    fw.apply([A1, A2])
    fw.apply([A1, A2])
    assert len(fake.argvs) == runs + 2  # without the generation every apply reads the table


def test_a_bad_peer_changes_nothing(fake: FakeNft) -> None:
    fw = OverlayFirewall(4789)
    with pytest.raises(TypeError):
        fw.apply([A2, "10.0.0.1"])  # type: ignore[list-item]
    assert fake.argvs == []


def test_netns_runs_nft_through_ip_netns_exec(fake: FakeNft) -> None:
    OverlayFirewall(4789, netns="fw-a").exists()
    assert fake.argvs == [["ip", "netns", "exec", "fw-a", "nft", "-j", "list", "tables", "inet"]]


@pytest.mark.parametrize("name", ["", "-n", "a/b", "..", "a b"])
def test_bad_netns_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="network namespace"):
        OverlayFirewall(4789, netns=name)


DENIED = "Error: Could not process rule: Operation not permitted"


def test_nft_errors_carry_stderr_and_the_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", f"{DENIED}\n")

    monkeypatch.setattr("subprocess.run", failing)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/sbin/{name}")
    with pytest.raises(FirewallError) as caught:
        OverlayFirewall(4789).remove()
    assert caught.value.stderr == DENIED
    assert caught.value.action == "delete table inet fabricd_overlay"
    assert "delete table inet fabricd_overlay: Error: Could not process" in str(caught.value)
    assert caught.value.argv == ("nft", "-f", "-")


def test_missing_nft_says_so() -> None:
    fw = OverlayFirewall(4789, nft="/nonexistent/nft")
    for call in (fw.exists, fw.counters, fw.remove, lambda: fw.apply([A1])):
        with pytest.raises(FirewallError, match="nftables installed"):
            call()
