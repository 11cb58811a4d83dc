"""Accept VXLAN only from known peers: fabricd's own nftables table, `table inet fabricd_overlay`.

fabricd owns that one table and nothing else: it never flushes the ruleset nor touches other tables.
The table only drops (VXLAN from anyone not in the peer sets), so it can restrict traffic, never open
it; a packet another table drops stays dropped.

Ruleset text is piped to `nft -f -`, which applies a file as one transaction. It only ever holds our
constant names, integers and the text of parsed `ipaddress` objects, never a raw string from input.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_GETGEN, NFTSocket, nft_gen_msg

from fabricd.config.model import IPAddress
from fabricd.log import get_logger

log = get_logger("fabricd.overlay.firewall")

FAMILY = "inet"
TABLE = "fabricd_overlay"
CHAIN = "vxlan_in"
SET_V4 = "peers_v4"
SET_V6 = "peers_v6"
COUNTER_ACCEPTED = "vxlan_accepted"
COUNTER_DROPPED = "vxlan_dropped"
NFT_TIMEOUT = 30.0

_QUALIFIED = f"{FAMILY} {TABLE}"
# `ip netns` names: a file in /run/netns. Refusing a leading "-" keeps it from reading as an option.
_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class FirewallError(Exception):
    """nft failed or is missing; `action` is what was attempted, `stderr` what nft said."""

    def __init__(self, action: str, stderr: str, argv: Sequence[str] = ()) -> None:
        super().__init__(f"{action}: {stderr}" if stderr else action)
        self.action = action
        self.stderr = stderr
        self.argv = tuple(argv)


@dataclass(frozen=True, slots=True)
class PeerSets:
    """The peers split by family, each sorted and without duplicates: the two sets' contents."""

    v4: tuple[IPv4Address, ...] = ()
    v6: tuple[IPv6Address, ...] = ()

    def addresses(self) -> tuple[IPAddress, ...]:
        return (*self.v4, *self.v6)


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """The parts of one chain rule that decide what it does (from `nft -j` output)."""

    dport: int | None
    saddr_set: str | None  # "@peers_v4" and the like
    verdict: str | None


@dataclass(frozen=True, slots=True)
class LiveTable:
    """Our table as the kernel has it: enough to tell a set change from a needed rebuild."""

    handle: int
    peers: PeerSets | None  # None: a set is missing or not a plain address set of its family
    rules: tuple[RuleSummary, ...]
    hooked: bool  # vxlan_in is a filter/input base chain with policy accept


def check_port(port: int) -> int:
    # bool is an int too; neither it nor 0 is a UDP port we could mean.
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"VXLAN port must be an integer from 1 to 65535, not {port!r}")
    return port


def peer_sets(peers: Iterable[IPAddress]) -> PeerSets:
    """Split, deduplicate and sort. A scope (fe80::1%eth0) is dropped: nft matches addresses only."""
    v4: set[int] = set()
    v6: set[int] = set()
    for peer in peers:
        if isinstance(peer, IPv4Address):
            v4.add(int(peer))
        elif isinstance(peer, IPv6Address):
            v6.add(int(peer))
        else:
            raise TypeError(f"peer must be an IPv4Address or IPv6Address, not {type(peer).__name__}")
    # Rebuilt from integers, so the text nft gets is always the canonical form of a parsed address.
    return PeerSets(tuple(IPv4Address(a) for a in sorted(v4)), tuple(IPv6Address(a) for a in sorted(v6)))


def expected_rules(port: int) -> tuple[RuleSummary, ...]:
    return (
        RuleSummary(port, f"@{SET_V4}", "accept"),
        RuleSummary(port, f"@{SET_V6}", "accept"),
        RuleSummary(port, None, "drop"),
    )


def _elements(addresses: Sequence[IPAddress]) -> str:
    return ", ".join(str(a) for a in addresses)


def _set_block(name: str, kind: str, addresses: Sequence[IPAddress]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if addresses:  # nft rejects `elements = { }`: an empty set just has no elements line
        lines.append(f"\t\telements = {{ {_elements(addresses)} }}")
    lines.append("\t}")
    return lines


def render_ruleset(port: int, peers: Iterable[IPAddress]) -> str:
    """One `nft -f` batch that (re)creates our table from scratch, atomically.

    Adding an empty table first makes the delete succeed whether or not the table existed; the
    whole file is one transaction, so no packet ever sees the table half built or missing.
    """
    port = check_port(port)
    sets = peer_sets(peers)
    lines = [
        f"table {_QUALIFIED} {{}}",
        f"delete table {_QUALIFIED}",
        f"table {_QUALIFIED} {{",
        f"\tcounter {COUNTER_ACCEPTED} {{}}",
        f"\tcounter {COUNTER_DROPPED} {{}}",
        *_set_block(SET_V4, "ipv4_addr", sets.v4),
        *_set_block(SET_V6, "ipv6_addr", sets.v6),
        f"\tchain {CHAIN} {{",
        "\t\ttype filter hook input priority filter; policy accept;",
        f'\t\tudp dport {port} ip saddr @{SET_V4} counter name "{COUNTER_ACCEPTED}" accept',
        f'\t\tudp dport {port} ip6 saddr @{SET_V6} counter name "{COUNTER_ACCEPTED}" accept',
        f'\t\tudp dport {port} counter name "{COUNTER_DROPPED}" drop',
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_peer_update(peers: Iterable[IPAddress]) -> str:
    """One batch that refills both sets and leaves the chain (and the counters) as they are."""
    sets = peer_sets(peers)
    lines = [f"flush set {_QUALIFIED} {SET_V4}", f"flush set {_QUALIFIED} {SET_V6}"]
    for name, addresses in ((SET_V4, sets.v4), (SET_V6, sets.v6)):
        if addresses:
            lines.append(f"add element {_QUALIFIED} {name} {{ {_elements(addresses)} }}")
    return "\n".join(lines) + "\n"


def render_remove() -> str:
    """Delete our table; the empty add first makes it succeed when there is none."""
    return f"table {_QUALIFIED} {{}}\ndelete table {_QUALIFIED}\n"


# --- reading `nft -j` output ---------------------------------------------------------------------


def _objects(document: Any, kind: str) -> list[dict[str, Any]]:
    """The `kind` objects of an `nft -j` document that belong to our table."""
    if not isinstance(document, dict) or not isinstance(document.get("nftables"), list):
        raise ValueError("not an nft JSON document")
    found = []
    for item in document["nftables"]:
        obj = item.get(kind) if isinstance(item, dict) else None
        if not isinstance(obj, dict) or obj.get("family") != FAMILY:
            continue
        # A table object names itself in "name"; everything inside a table names it in "table".
        owner = obj.get("name") if kind == "table" else obj.get("table")
        if owner == TABLE:
            found.append(obj)
    return found


def parse_tables(document: Any) -> bool:
    """Whether a `nft -j list tables` document has our table."""
    return bool(_objects(document, "table"))


def parse_counters(document: Any) -> dict[str, int]:
    """{counter name: packets} from `nft -j list counters table inet fabricd_overlay`."""
    return {str(c["name"]): int(c.get("packets", 0)) for c in _objects(document, "counter")}


def _summarize(rule: dict[str, Any]) -> RuleSummary:
    dport: int | None = None
    saddr: str | None = None
    verdict: str | None = None
    for expr in rule.get("expr", []):
        if not isinstance(expr, dict):
            continue
        if "accept" in expr or "drop" in expr:
            verdict = "accept" if "accept" in expr else "drop"
        match = expr.get("match")
        if not isinstance(match, dict):
            continue
        payload = match.get("left", {}).get("payload", {}) if isinstance(match.get("left"), dict) else {}
        field = (payload.get("protocol"), payload.get("field"))
        right = match.get("right")
        if field == ("udp", "dport") and isinstance(right, int):
            dport = right
        elif field in (("ip", "saddr"), ("ip6", "saddr")) and isinstance(right, str):
            saddr = right
    return RuleSummary(dport, saddr, verdict)


def _set_elements(sets: list[dict[str, Any]], name: str, kind: str) -> list[IPAddress] | None:
    found = [s for s in sets if s.get("name") == name]
    if len(found) != 1 or found[0].get("type") != kind or found[0].get("flags"):
        return None
    elements = found[0].get("elem", [])
    # A plain address set lists strings; ranges, prefixes or per-element counters are not ours.
    if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
        return None
    try:
        return [ip_address(e) for e in elements]
    except ValueError:
        return None


def parse_table(document: Any) -> LiveTable | None:
    """Our table from `nft -j list table inet fabricd_overlay`, or None when it is not there."""
    tables = _objects(document, "table")
    if not tables:
        return None
    sets = _objects(document, "set")
    chains = [c for c in _objects(document, "chain") if c.get("name") == CHAIN]
    hooked = bool(chains) and all(
        (c.get("type"), c.get("hook"), c.get("policy")) == ("filter", "input", "accept") for c in chains
    )
    rules = tuple(_summarize(r) for r in _objects(document, "rule") if r.get("chain") == CHAIN)
    v4 = _set_elements(sets, SET_V4, "ipv4_addr")
    v6 = _set_elements(sets, SET_V6, "ipv6_addr")
    peers = None if v4 is None or v6 is None else peer_sets([*v4, *v6])
    return LiveTable(int(tables[0].get("handle", -1)), peers, rules, hooked)


# --- the kernel ----------------------------------------------------------------------------------


def ruleset_generation() -> int:
    """The nftables ruleset generation ID (NFT_MSG_GETGEN): it changes with every committed
    transaction, ours or anyone's, and with nothing else (not with counters)."""
    with NFTSocket() as nft:
        request = nft_gen_msg()
        request["nfgen_family"] = 0  # NFPROTO_UNSPEC
        (reply,) = nft.request_get(request, NFT_MSG_GETGEN, NLM_F_REQUEST)
    return int(reply.get_attr("NFTA_GEN_ID"))


class OverlayFirewall:
    """Keeps our table in one network namespace (None: the one fabricd runs in) as apply() last asked."""

    def __init__(self, port: int, netns: str | None = None, nft: str = "nft") -> None:
        self.port = check_port(port)
        if netns is not None and (not _NETNS_NAME.fullmatch(netns) or netns in (".", "..")):
            raise ValueError(f"not a network namespace name: {netns!r}")
        self.netns = netns
        self.nft = nft
        # The handle of the table our last full apply made: another handle means someone replaced it.
        self._table_handle: int | None = None
        # The counters of the last table read (monotonic time, packets by name): the status asks
        # right after a pass that read the table, and need not run nft again for them.
        self._counted: tuple[float, dict[str, int]] | None = None
        # The ruleset generation (nftables' counter of committed transactions) at which the table
        # was last read and found as wanted, with the peers it held then.
        self._verified: tuple[int, PeerSets] | None = None

    def apply(self, peers: Iterable[IPAddress]) -> None:
        """Full ruleset the first time, when the table is gone or not ours as built; else only the sets.

        When no transaction was committed since the table was last read and found as wanted (the
        ruleset generation is the same) and the peers are the same, nothing can differ, and the
        table is not read again: that read (an `nft` process) was the largest part of an idle pass."""
        wanted = peer_sets(peers)  # before any I/O: a bad peer changes nothing
        generation = self._generation()  # before the read: a change after it shows next time
        if generation is not None and self._verified == (generation, wanted):
            return
        self._verified = None
        live = self._read_table()
        reason = self._rebuild_reason(live)
        if reason is not None or live is None:  # a missing table always has a reason; this is for mypy
            self._batch(render_ruleset(self.port, wanted.addresses()), f"create table {_QUALIFIED}")
            built = self._read_table()
            self._table_handle = built.handle if built is not None else None
            log.info("vxlan firewall built", reason=reason, port=self.port, **_counts(wanted))
            return
        if live.peers == wanted:
            if generation is not None:
                self._verified = (generation, wanted)
            return
        self._batch(render_peer_update(wanted.addresses()), f"update peer sets in {_QUALIFIED}")
        log.info("vxlan firewall peers updated", port=self.port, **_counts(wanted))

    def _generation(self) -> int | None:
        """nftables' ruleset generation in our own namespace (one netlink request, no process);
        None when it cannot be read, or for another namespace: then the table is always read."""
        if self.netns is not None:
            return None
        try:
            return ruleset_generation()
        except Exception as exc:  # netfilter's netlink family missing or refused: read as before
            log.debug("nftables generation not readable", reason=str(exc))
            return None

    def remove(self) -> None:
        """Delete our table if it exists; nothing else in the ruleset is touched."""
        self._batch(render_remove(), f"delete table {_QUALIFIED}")
        self._table_handle = None
        self._verified = None
        self._counted = None
        log.info("vxlan firewall removed")

    def exists(self) -> bool:
        listed = self._run(["-j", "list", "tables", FAMILY], "list nftables tables")
        return parse_tables(_json(listed, "list nftables tables"))

    def counters(self, max_age: float = 0.0) -> dict[str, int]:
        """Packets per named counter; {} when the table is not there. Counters read (with the table
        or alone) at most max_age seconds ago are returned as they were read."""
        counted = self._counted
        if counted is not None and max_age > 0 and time.monotonic() - counted[0] <= max_age:
            return dict(counted[1])
        action = f"list counters of {_QUALIFIED}"
        found = self._run(["-j", "list", "counters", "table", FAMILY, TABLE], action, check=False)
        if found.returncode != 0:
            if not self.exists():
                return {}
            raise FirewallError(action, found.stderr.strip(), found.args)
        counters = parse_counters(_json(found, action))
        self._counted = (time.monotonic(), counters)
        return dict(counters)

    def _rebuild_reason(self, live: LiveTable | None) -> str | None:
        if self._table_handle is None:
            return "first apply"
        if live is None:
            return "table missing"
        if live.handle != self._table_handle:
            return "table replaced"
        if live.rules != expected_rules(self.port) or not live.hooked:
            return "chain differs (port changed or edited)"
        if live.peers is None:
            return "peer sets differ in type"
        return None

    def _read_table(self) -> LiveTable | None:
        action = f"list {_QUALIFIED}"
        found = self._run(["-j", "list", "table", FAMILY, TABLE], action, check=False)
        if found.returncode != 0:
            # Telling "no such table" apart by asking again beats matching nft's error text.
            if not self.exists():
                self._counted = (time.monotonic(), {})
                return None
            raise FirewallError(action, found.stderr.strip(), found.args)
        document = _json(found, action)
        self._counted = (time.monotonic(), parse_counters(document))
        return parse_table(document)

    def _batch(self, ruleset: str, action: str) -> None:
        self._run(["-f", "-"], action, stdin=ruleset)

    def _run(
        self, args: Sequence[str], action: str, *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if shutil.which(self.nft) is None:
            raise FirewallError(action, f"{self.nft!r} not found: is nftables installed?")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        argv = [*prefix, self.nft, *args]
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
            )
        except FileNotFoundError as exc:
            raise FirewallError(action, f"{exc.filename or argv[0]!r} not found", argv) from exc
        except subprocess.TimeoutExpired as exc:
            raise FirewallError(action, f"nft did not finish within {NFT_TIMEOUT:g}s", argv) from exc
        if check and done.returncode != 0:
            raise FirewallError(action, done.stderr.strip() or f"exit status {done.returncode}", argv)
        return done


def _json(done: subprocess.CompletedProcess[str], action: str) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise FirewallError(action, f"nft printed no JSON: {exc}", done.args) from exc


def _counts(sets: PeerSets) -> dict[str, int]:
    return {"peers_v4": len(sets.v4), "peers_v6": len(sets.v6)}
