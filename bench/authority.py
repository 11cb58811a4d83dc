"""fabricd DHCP/DNS authority benchmark: failover and handover gaps, re-addressing, two servers, new names.

    sudo .venv/bin/python -m bench.authority [--rounds 5] [--standalone-rounds 3] [--skip-cluster]

Prints one JSON document on stdout; progress goes to stderr. Two parts, each in its own lab under a
fresh state directory in /tmp.

The cluster part: labs/overlay.clab.yml renamed "bau" (namespaces fl-bau-*), three LXD cluster
members with fabricd serving DHCP/DNS in cluster election mode. Three busybox instances (bau-a/b/c,
one per host) run udhcpc; three client namespaces (fl-bau-c1..c3, one on each host's fabric0) ask for
their lease every 50 ms and for bau-a's name every 20 ms; an offer counter sends a DISCOVER every
0.5 s. Each round: SIGKILL the authority's fabricd, then SIGTERM it, then create an instance and wait
for its name.

The standalone part (`bench/authority_standalone.py`, under the key "standalone"):
labs/authority-standalone.clab.yml renamed "bas", standalone election, the same kind of clients; each
round SIGKILLs and SIGTERMs the authority's fabricd and times the failover and the take-back.

Client namespaces, instances and the labs are removed in a finally. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.authority_clients import DHCP_EVERY, DNS_EVERY
from bench.authority_keepalived import KeepalivedBaseline, keepalived_binary
from bench.authority_rounds import (
    COUNTER_INTERVAL,
    CREATE_TIMEOUT,
    DOMAIN,
    HOSTS,
    ROUND_TIMEOUT,
    AuthorityBench,
    CreateRound,
    FailoverRound,
    readdressed_section,
    round_json,
)
from bench.authority_standalone import run_standalone
from bench.labs import REPO, lab_bench_main, named_lab, progress
from bench.lxd_events import LifecycleEvents
from bench.stats import TIMED_OUT, Json, distribution
from fabric_lab import netns
from fabric_lab.runner import namespace_prefix
from fabricd import __version__

OVERLAY_LAB = REPO / "labs" / "overlay.clab.yml"
LAB_NAME = "bau"  # the authority benchmark's own lab name: never "overlay", "tov" or "bov"
TOOLS = ("nsenter", "lxd", "lxc", "dnsmasq", "setpriv")
FAILOVER_GOAL_S = 3.0
HANDOVER_GOAL_S = 1.0
CREATE_GOAL_S = 1.0
# keepalived's VRRP backup declares the master dead after master_down_interval = 3 x advert_int +
# skew_time, skew_time = (256 - priority) x advert_int / 256; with its defaults (advert_int 1 s,
# priority 100) that is 3 + 156/256 = 3.609 s, before any service on the address starts.
KEEPALIVED_DEFAULT_S = round(3 + (256 - 100) / 256, 3)
KEEPALIVED_SOURCE = (
    "computed, not measured: keepalived's VRRP (RFC 3768/5798) master_down_interval = 3 x advert_int + "
    "(256 - priority) x advert_int / 256 with its defaults advert_int 1 s, priority 100"
)
TWO_SERVERS_MERGE_S = 1.0

FIGURES = """\
figures (times in seconds on this process's monotonic clock; each over --rounds rounds):
  failover_sigkill.dhcp_ack    SIGKILL of the authority's fabricd -> the first DHCPACK from the new
                               authority (option 224 names the host) to a REQUEST sent after the
                               signal, at every client (the round's figure is the slowest client)
  failover_sigkill.dns_answer  the same for the first DNS answer (A record of bau-a) to a query sent
                               after the signal
  handover_sigterm.*           the same after SIGTERM (a clean stop)
  (DNS, both)                  answers count for queries sent after the first query after the signal
                               that went unanswered: the old server answers until it dies or drops
                               the address, and DNS answers do not say which host sent them
  readdressed                  clients with a lease before a failover whose address differs after it
                               (instances' udhcpc renewing by SIGUSR1, and the client namespaces'
                               ACKs); goal 0
  two_servers                  DHCP transactions answered by two hosts (option 224), from the offer
                               counter's DISCOVERs and every client REQUEST, merged into windows;
                               goal 0
  instance_dns                 `lxc init` + `lxc start` returned (or LXD's instance-created event)
                               -> the new instance's name answers at 192.168.100.1; goal 1 s
  baselines.keepalived_default_s  keepalived's default failover time, computed (not measured)

standalone part (key "standalone"; each over --standalone-rounds rounds; best / median / worst):
  failover_sigkill.dhcp_ack    SIGKILL of the authority's fabricd (s1) -> first ACK from s2 at every
  failover_sigkill.dns_answer  client, and the first DNS answer; goal: worst <= the takeover bound
                               computed from dhcp.probe_interval and dhcp.silent_probes, plus a slack
  handover_sigterm.dhcp_ack    the same after SIGTERM (nothing tells the standbys: same goal)
  take_back.serving_again      s1's fabricd started again -> its first ACK at every client; goal:
                               silent_probes x probe_interval + probe window + takeover allowance
  take_back.two_servers_s      s1's first reply -> s2's last one; goal: probe_interval + window
  readdressed                  clients whose address changed across all of it; goal 0
"""


# --- figures -----------------------------------------------------------------------------------------


def figure(samples: Sequence[float], goal_max: float | None, digits: int = 4) -> Json:
    """Best and worst over the rounds (a timed-out round is infinite: worst null, goal missed)."""
    shown = distribution(samples, "s", digits)
    best = min(samples, default=math.inf)
    worst = max(samples, default=math.inf)
    result: Json = {
        "best": round(best, digits) if math.isfinite(best) else None,
        "worst": round(worst, digits) if math.isfinite(worst) else None,
        **{k: v for k, v in shown.items() if k not in ("min", "max")},
    }
    if goal_max is not None:
        result["goal"] = {"worst_max_s": goal_max}
        result["meets_goal"] = result["worst"] is not None and result["worst"] <= goal_max
    return result


def failover_section(rounds: list[FailoverRound], goal: float) -> Json:
    if not rounds:
        return {"rounds": 0}
    return {
        "dhcp_ack": figure([r.dhcp_all for r in rounds], goal),
        "dns_answer": figure([r.dns_all for r in rounds], goal),
        "first_client": {
            "what": "the first client answered in each round (the figures above wait for every client)",
            "dhcp_ack": figure([r.dhcp_first for r in rounds], None),
            "dns_answer": figure([r.dns_first for r in rounds], None),
        },
        "per_client": {
            host: {
                "dhcp_ack": figure([r.dhcp_s.get(host, TIMED_OUT) for r in rounds], None),
                "dns_answer": figure([r.dns_s.get(host, TIMED_OUT) for r in rounds], None),
            }
            for host in HOSTS
        },
        "steps": _steps(rounds),
        "timed_out_rounds": sum(1 for r in rounds if not math.isfinite(max(r.dhcp_all, r.dns_all))),
        "rounds_not_settled_before": sum(1 for r in rounds if not r.healthy_before),
        "per_round": [round_json(r) for r in rounds],
    }


def _steps(rounds: list[FailoverRound]) -> Json:
    """fabricd's own log lines, seconds after the signal: where the gap goes."""
    names = sorted({k for r in rounds for k in r.steps})
    found: Json = {}
    for name in names:
        values = [r.steps.get(name) for r in rounds]
        present = [float(v) for v in values if v is not None]
        found[name] = {
            "best": min(present, default=None),
            "worst": max(present, default=None),
            "samples": values,
        }
    return found


def keepalived_section(bench: AuthorityBench, kill: Json) -> Json:
    baseline = bench.baseline
    if baseline is None or not baseline.rounds:
        return {"skipped": "not run (see lab.keepalived)"}
    rounds = baseline.rounds
    version = _version(["dpkg-query", "-W", "-f=${Version}", "keepalived"]) or "?"
    dhcp = figure([r.dhcp_all for r in rounds], None)
    dns = figure([r.dns_all for r in rounds], None)
    return {
        "dhcp_ack": dhcp,
        "dns_answer": dns,
        "fabricd_dhcp_ack_worst_vs_keepalived_worst": _ratio(kill["dhcp_ack"]["worst"], dhcp["worst"]),
        "fabricd_dns_answer_worst_vs_keepalived_worst": _ratio(kill["dns_answer"]["worst"], dns["worst"]),
        "per_round": [
            {
                "round": r.index,
                "old": r.old,
                "new": r.new,
                "dhcp_ack_s": _secs(r.dhcp_s),
                "dns_answer_s": _secs(r.dns_s),
                "notes": r.notes,
            }
            for r in rounds
        ],
        "what": "the same lab and client loops after fabricd's rounds, every fabricd stopped: keepalived "
        f"{version} (VRRP, advert_int 1, priority 100, nopreempt) moves "
        "192.168.100.1 between veths on each host's fabric0 and its notify scripts start and stop dnsmasq "
        "(same range, lease time, names, ping check). A round deletes the master's veth and SIGKILLs its "
        "keepalived and dnsmasq at once (what fabricd's SIGKILL does to its server), then measures as for "
        "fabricd; the host is repaired and rejoins as a backup",
    }


def _secs(values: dict[str, float]) -> dict[str, float | None]:
    return {h: round(v, 4) if math.isfinite(v) else None for h, v in values.items()}


def two_servers_section(bench: AuthorityBench) -> Json:
    """Transactions that two hosts answered; merged into windows of events less than 1 s apart."""
    events: list[tuple[float, str, tuple[str, ...]]] = []
    single = none = 0
    for host, records in bench.all_replies():
        hosts_by_xid: dict[int, set[str]] = {}
        for reply in records.dhcp:
            hosts_by_xid.setdefault(reply.xid, set()).add(reply.host or "?")
        for xid, sent in records.dhcp_sent.items():
            hosts = hosts_by_xid.get(xid, set())
            if len(hosts) > 1:
                events.append((sent, f"client {host} REQUEST", tuple(sorted(hosts))))
            elif hosts:
                single += 1
            else:
                none += 1
    counter: Json = {"ran": bench.counter_log is not None}
    if bench.counter_log is not None:
        log = bench.counter_log
        own = log.answered_probes()
        for xid, doubled in log.doubled().items():
            at = log.probes.get(xid)
            if at is not None:
                events.append((bench.mono(at), "offer counter DISCOVER", tuple(sorted(doubled))))
        counter.update(
            {
                "discovers": len(own),
                "answered_by_one_host": sum(1 for h in own.values() if len(h) == 1),
                "answered_by_two_or_more": sum(1 for h in own.values() if len(h) > 1),
                "unanswered": sum(1 for h in own.values() if not h),
                "offers_per_host": dict(log.per_host()),
                "interval_s": COUNTER_INTERVAL,
            }
        )
    events.sort()
    windows: list[Json] = []
    for at, source, answering in events:
        seconds = round(at - bench.started_at, 3)
        if windows and at - windows[-1]["_last"] < TWO_SERVERS_MERGE_S:
            window = windows[-1]
            window["_last"], window["end_s"] = at, seconds
            window["transactions"] += 1
            window["hosts"] = sorted(set(window["hosts"]) | set(answering))
            window["sources"] = sorted(set(window["sources"]) | {source})
        else:
            first: Json = {"_last": at, "start_s": seconds, "end_s": seconds, "transactions": 1}
            windows.append(first | {"hosts": list(answering), "sources": [source]})
    for window in windows:
        window.pop("_last")
    return {
        "windows": len(windows),
        "goal": {"max": 0},
        "meets_goal": not windows and bench.counter_log is not None,
        "transactions_with_two_hosts": len(events),
        "window_list": windows,
        "client_requests": {"answered_by_one_host": single, "unanswered": none},
        "offer_counter": counter,
        "what": "every DHCP transaction of the run (the offer counter's DISCOVERs and the client "
        "namespaces' REQUESTs, all with the broadcast flag, so every server's reply reaches the sender) "
        "grouped by xid; two serving hosts (option 224) on one xid is two servers. start_s/end_s: "
        "seconds after the set-up finished",
    }


STALL_S = 0.5
AFTER_TAKEOVER_S = 15.0
AFTER_CREATE_S = 10.0


def silences_section(bench: AuthorityBench) -> Json:
    """Every stretch longer than STALL_S in which a client's loop got no answer, classified by what
    happened just before it: a failover or handover (the gap itself, or after it), a new instance,
    or nothing the benchmark did ("steady")."""
    signals = [r.signal_at for r in bench.failovers]
    creates = [r.issued_at for r in bench.creates]
    end = bench.measured_until or time.monotonic()
    span = max(end - bench.started_at, 1e-9)
    window = bench.steady_window

    def kind(start: float, stop: float) -> str:
        if any(start <= t <= stop for t in signals):
            return "failover_gap"
        if any(0 <= start - t <= AFTER_TAKEOVER_S for t in signals):
            return "after_takeover"
        if any(0 <= start - t <= AFTER_CREATE_S for t in creates):
            return "after_instance_create"
        return "steady"

    found: Json = {}
    for what in ("dhcp", "dns"):
        rows: list[Json] = []
        for host, records in bench.all_replies():
            if what == "dhcp":
                times = sorted(r.at for r in records.dhcp if r.kind == "ack")
            else:
                times = sorted(r.at for r in records.dns if r.rcode == 0)
            for a, b in itertools.pairwise(times):
                if b - a > STALL_S:
                    start = round(a - bench.started_at, 3)
                    rows.append(
                        {"client": host, "start_s": start, "seconds": round(b - a, 3), "kind": kind(a, b)}
                    )
        by_kind: Json = {}
        for name in ("failover_gap", "after_takeover", "after_instance_create", "steady"):
            picked = [row["seconds"] for row in rows if row["kind"] == name]
            by_kind[name] = {
                "count": len(picked),
                "longest_s": max(picked, default=None),
                "seconds_per_client": round(sum(picked) / len(bench.clients), 3) if bench.clients else None,
            }
        quiet: Json = {"seconds": None}
        if window is not None:
            length = window[1] - window[0]
            inside = [
                min(r["start_s"] + r["seconds"], window[1] - bench.started_at)
                - max(r["start_s"], window[0] - bench.started_at)
                for r in rows
            ]
            lost = sum(max(0.0, x) for x in inside) / max(len(bench.clients), 1)
            quiet = {
                "seconds": round(length, 1),
                "silences": sum(1 for x in inside if x > 0),
                "unavailable_fraction": round(lost / length, 4) if length > 0 else None,
            }
        found[what] = {
            **by_kind,
            "steady_window": quiet,
            "list": sorted(rows, key=lambda row: (row["start_s"], row["client"])),
        }
    return {
        "stall_threshold_s": STALL_S,
        "measured_s": round(span, 1),
        "steady_window_s": None
        if window is None
        else [round(window[0] - bench.started_at, 1), round(window[1] - bench.started_at, 1)],
        **found,
        "what": f"silences over {STALL_S:g}s between answers to a client's loop (DHCP: ACKs to its "
        "REQUEST every 50 ms; DNS: answers to its query every 20 ms) from the end of the set-up to the "
        f"end of the run. failover_gap: the silence holds a signal; after_takeover: starts within "
        f"{AFTER_TAKEOVER_S:g}s of one; after_instance_create: within {AFTER_CREATE_S:g}s of `lxc init`; "
        "steady: none of these. steady_window: the --steady-seconds before the first round, when nothing "
        "but the loops, the offer counter and fabricd itself ran. dnsmasq answers no DHCP while it pings "
        "an address it is about to offer (3 s, for a DISCOVER from a client without a lease, fabricd's own "
        "second-server probe included; a result is cached 30 s); DNS is served meanwhile",
    }


def instance_section(rounds: list[CreateRound]) -> Json:
    if not rounds:
        return {"rounds": 0}
    from_event = [r.resolved_s_after_created_event for r in rounds]
    return {
        "from_start_returned": figure([r.resolved_s_after_start_returned for r in rounds], CREATE_GOAL_S),
        "from_created_event": figure([TIMED_OUT if v is None else v for v in from_event], CREATE_GOAL_S),
        "from_init_issued": figure([r.resolved_s_after_init_issued for r in rounds], None),
        "lxc_init_s": distribution([r.init_s for r in rounds]),
        "lxc_start_s": distribution([r.start_s for r in rounds]),
        "authority_files_after_start_returned": {
            what: [r.files.get(what) for r in rounds] for what in ("reservation", "lease", "hosts_dns")
        },
        "per_round": [
            {
                "round": r.index,
                "name": r.name,
                "host": r.host,
                "address": r.address,
                "from_start_returned_s": _finite(r.resolved_s_after_start_returned),
                "from_created_event_s": None
                if r.resolved_s_after_created_event is None
                else round(r.resolved_s_after_created_event, 4),
                "created_event_after_init_issued_s": r.created_event_after_init_issued_s,
                "started_event_after_init_issued_s": r.started_event_after_init_issued_s,
                "files_after_start_returned_s": r.files,
                "notes": r.notes,
            }
            for r in rounds
        ],
        "what": "a busybox instance created with `lxc init` + `lxc start` on a rotating member; its name "
        "asked of 192.168.100.1 every 20 ms from the client namespace on h1 until it has an A record. "
        "The authority's files (hosts.dhcp: the reservation; leases: dnsmasq gave the lease; hosts.dns: "
        "LXD reported the address and fabricd published it) were polled at the same pace",
    }


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


# --- the run ------------------------------------------------------------------------------------------


def _version(command: Sequence[str]) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(list(command), capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else None
    return None


def _other_namespaces() -> list[str]:
    ours = namespace_prefix(LAB_NAME)
    with contextlib.suppress(OSError):
        names = {
            m.group(1) for p in Path("/run/netns").iterdir() if (m := re.match(r"fl-(.+)-[^-]+$", p.name))
        }
        return sorted(n for n in names if not f"fl-{n}-".startswith(ours))
    return []


def machine() -> Json:
    return {
        "cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fabricd": __version__,
        "lxd": _version(["lxd", "--version"]),
        "dnsmasq": _version(["dnsmasq", "--version"]),
        "other_lab_namespaces_at_start": _other_namespaces(),
    }


def measure(bench: AuthorityBench, args: argparse.Namespace) -> Json:
    lab = bench.setup()
    bench.started_at = time.monotonic()
    if args.steady_seconds > 0:
        progress(
            f"steady state: {args.steady_seconds:g}s with nothing but the loops, the counter and fabricd"
        )
        time.sleep(args.steady_seconds)
        bench.steady_window = (bench.started_at, time.monotonic())
    socket = bench.lab.state().nodes["h1"].lxd_socket
    if socket is None:
        raise RuntimeError("h1 has no LXD socket")
    with LifecycleEvents(Path(socket)) as events:
        for n in range(args.rounds):
            bench.failover("sigkill", n)
            bench.failover("sigterm", n)
            bench.create(n, events)
    bench.settle()
    bench.end_measurement()
    if keepalived_binary() is None or args.skip_keepalived:
        why = (
            "--skip-keepalived"
            if args.skip_keepalived
            else "keepalived is not installed (apt-get install keepalived)"
        )
        lab["keepalived"] = {"skipped": why}
    else:
        names = {name: info["address"] for name, info in lab["instances"].items()}
        baseline = KeepalivedBaseline(bench.lab, bench.clients, names, DOMAIN, progress)
        bench.baseline = baseline
        try:
            lab["keepalived"] = baseline.run(args.rounds)
        finally:
            lab.setdefault("keepalived", {})["left_running"] = baseline.teardown()
    bench.finish()
    return lab


def report(args: argparse.Namespace, bench: AuthorityBench, lab: Json) -> Json:
    kills = [r for r in bench.failovers if r.kind == "sigkill"]
    terms = [r for r in bench.failovers if r.kind == "sigterm"]
    kill = failover_section(kills, FAILOVER_GOAL_S)
    term = failover_section(terms, HANDOVER_GOAL_S)
    kill["baselines"] = {
        "keepalived_default_s": KEEPALIVED_DEFAULT_S,
        "source": KEEPALIVED_SOURCE,
        "dhcp_ack_worst_vs_keepalived": _ratio(kill["dhcp_ack"]["worst"], KEEPALIVED_DEFAULT_S),
        "dns_answer_worst_vs_keepalived": _ratio(kill["dns_answer"]["worst"], KEEPALIVED_DEFAULT_S),
        "measured_keepalived": keepalived_section(bench, kill),
    }
    readdressed = readdressed_section(bench.failovers)
    two = two_servers_section(bench)
    created = instance_section(bench.creates)
    silences = silences_section(bench)
    goals = {
        "failover_sigkill.dhcp_ack": kill["dhcp_ack"]["meets_goal"],
        "failover_sigkill.dns_answer": kill["dns_answer"]["meets_goal"],
        "handover_sigterm.dhcp_ack": term["dhcp_ack"]["meets_goal"],
        "handover_sigterm.dns_answer": term["dns_answer"]["meets_goal"],
        "readdressed": readdressed["meets_goal"],
        "two_servers": two["meets_goal"],
        "instance_dns.from_start_returned": created["from_start_returned"]["meets_goal"],
    }
    return {
        "benchmark": "fabricd DHCP/DNS authority (bench/authority.py)",
        "headline": {
            "failover_dhcp_ack_s": _best_worst(kill["dhcp_ack"]),
            "failover_dns_answer_s": _best_worst(kill["dns_answer"]),
            "handover_dhcp_ack_s": _best_worst(term["dhcp_ack"]),
            "handover_dns_answer_s": _best_worst(term["dns_answer"]),
            "keepalived_default_s": KEEPALIVED_DEFAULT_S,
            "clients_readdressed": readdressed["count"],
            "two_server_windows": two["windows"],
            "instance_created_to_dns_s": _best_worst(created["from_start_returned"]),
            "instance_created_event_to_dns_s": _best_worst(created["from_created_event"]),
            "dhcp_unavailable_fraction_steady_window": silences["dhcp"]["steady_window"].get(
                "unavailable_fraction"
            ),
            "dhcp_longest_steady_silence_s": silences["dhcp"]["steady"]["longest_s"],
        },
        "goals": goals,
        "all_goals_met": all(goals.values()),
        "params": {
            "rounds": args.rounds,
            "dhcp_request_every_s": DHCP_EVERY,
            "dns_query_every_s": DNS_EVERY,
            "offer_counter_every_s": COUNTER_INTERVAL,
            "round_timeout_s": ROUND_TIMEOUT,
            "create_timeout_s": CREATE_TIMEOUT,
        },
        "lab": {"file": str(OVERLAY_LAB.relative_to(REPO)), "name": LAB_NAME, **lab},
        "failover_sigkill": kill,
        "handover_sigterm": term,
        "readdressed": readdressed,
        "two_servers": two,
        "instance_dns": created,
        "silences": silences,
        "problems": bench.problems + [f"client {c.host}: {e}" for c in bench.clients for e in c.errors],
    }


def _best_worst(figure_: Json) -> Json:
    return {"best": figure_.get("best"), "worst": figure_.get("worst")}


def _ratio(top: float | None, bottom: float) -> float | None:
    return None if top is None else round(top / bottom, 3)


def run(args: argparse.Namespace, state_root: Path) -> Json:
    """Both parts, each in its own lab, into one document; a skipped part makes all_goals_met false."""
    started = time.time()
    info = machine()
    skipped: list[str] = []
    if args.skip_cluster:
        skipped.append("cluster")
        result: Json = {
            "benchmark": "fabricd DHCP/DNS authority (bench/authority.py)",
            "cluster": {"skipped": "--skip-cluster"},
            "goals": {},
        }
    else:
        result = run_cluster(args, state_root)
    if args.standalone_rounds > 0:
        add_part(result, "standalone", run_standalone(args.standalone_rounds, state_root, progress), skipped)
    else:
        add_part(result, "standalone", {"skipped": "--standalone-rounds 0"}, skipped)
    result["started_at"] = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["other_lab_namespaces_at_end"] = _other_namespaces()
    result["machine"] = info
    result["duration_s"] = round(time.time() - started, 1)
    return result


def add_part(result: Json, name: str, part: Json, skipped: list[str]) -> None:
    """A part's section under its key, its goals as "<name>.<goal>"; all_goals_met again: true only
    when there are goals, every one is met and no part was skipped (`skipped`, "skipped" in `part`)."""
    result[name] = part
    if "skipped" in part:
        skipped.append(name)
    result["goals"].update({f"{name}.{k}": v for k, v in part.get("goals", {}).items()})
    result["skipped_parts"] = skipped
    result["all_goals_met"] = bool(result["goals"]) and all(result["goals"].values()) and not skipped


def run_cluster(args: argparse.Namespace, state_root: Path) -> Json:
    lab = named_lab(OVERLAY_LAB, LAB_NAME, state_root)
    progress(f"bringing up {lab.topology.name} from {OVERLAY_LAB.relative_to(REPO)} (LXD cluster, fabricd)")
    lab.down()  # an aborted earlier run of this benchmark: namespaces fl-bau-* only
    left: Json = {}
    try:
        lab.up()
        bench = AuthorityBench(lab, progress)
        try:
            measured = measure(bench, args)
        finally:
            progress("removing the client namespaces and the instances")
            left.update(bench.teardown())
    finally:
        progress(f"taking {lab.topology.name} down")
        lab.down()
    left["namespaces"] = netns.list_with_prefix(namespace_prefix(LAB_NAME))
    result = report(args, bench, measured)
    result["left_behind"] = left
    return result


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return (
            "bench.authority needs root: it builds network namespaces and runs LXD, fabricd and dnsmasq in "
            "them. Run it from the repository root, e.g. `sudo .venv/bin/python -m bench.authority`."
        )
    missing = [tool for tool in TOOLS if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin")
               is None]  # fmt: skip
    if missing:
        return f"bench.authority needs {', '.join(missing)} (scripts/setup.sh installs them)"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.authority",
        description=(__doc__ or "").split("\n\n", 1)[0],
        epilog=FIGURES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds; each is one SIGKILL, one SIGTERM and one new instance"
    )
    parser.add_argument(
        "--steady-seconds",
        type=float,
        default=40.0,
        help="seconds of steady state before the first round (dnsmasq's ping cache lasts 30 s)",
    )
    parser.add_argument("--skip-keepalived", action="store_true", help="no keepalived + dnsmasq baseline")
    parser.add_argument("--skip-cluster", action="store_true", help="leave out the LXD-cluster part")
    parser.add_argument(
        "--standalone-rounds",
        type=int,
        default=3,
        help="rounds of the standalone part (each: SIGKILL, take-back, SIGTERM, take-back; about 3 min); "
        "0 skips it",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the lab's logs under the state dir")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steady_seconds < 0 or args.standalone_rounds < 0:
        parser.error("--rounds must be positive, --steady-seconds and --standalone-rounds not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return lab_bench_main("bench-authority-", parse_args(argv), unavailable(), run)


if __name__ == "__main__":
    sys.exit(main())
