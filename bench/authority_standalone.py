"""The authority benchmark's standalone part: the election among hosts without a shared store.

labs/authority-standalone.clab.yml renamed "bas" (namespaces fl-bas-*): three hosts s1, s2, s3, each
with its own LXD, one overlay bridge fabric0, `dhcp.election: standalone` with priority s1, s2, s3 and
fabricd's DHCP probe as the liveness signal. The same real clients as the cluster part
(`bench/authority_rounds.py`, whose rounds this reuses): a client namespace on each host's fabric0
(a DHCPREQUEST every 50 ms, a DNS query for bas-b every 20 ms), busybox instances bas-a/b/c (one per
host, udhcpc sending its name as hostname) renewing after every event, and an offer counter on s3.

Each round: SIGKILL s1's fabricd (the authority) and time the first ACK and DNS answer from s2; start
it again and time s1 serving again (the take-back) and how long s1 and s2 both answered; then the
same with SIGTERM. Every time is this process's monotonic clock. Goals come from the lab's own
settings (`bench/authority_standalone_report.py`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

from bench.authority_clients import first_ack
from bench.authority_rounds import (
    COUNTER_INTERVAL,
    DOMAIN,
    AuthorityBench,
    FailoverRound,
    Progress,
    readdressed_section,
    round_json,
    seconds_by_host,
)
from bench.authority_standalone_report import (
    Reply,
    StandaloneGoals,
    StandaloneSettings,
    doubled_transactions,
    finite,
    goal_figure,
    padded,
    standalone_goals,
    two_servers_seconds,
)
from bench.labs import REPO, Terminated, named_lab, restart_agent
from bench.stats import TIMED_OUT, Json
from fabric_lab import netns
from fabric_lab.dhcp_clients import DhcpClient
from fabric_lab.node import LabError
from fabric_lab.runner import Lab, namespace_prefix

LAB_FILE = REPO / "labs" / "authority-standalone.clab.yml"
LAB_NAME = "bas"  # never "authority-standalone" or "tas" (the lab test's)
HOSTS = ("s1", "s2", "s3")
BRIDGE = "fabric0"
OVERLAY_MTU = 1450
SERVER = "192.168.101.1"
# Instance names are unique machine-wide (every lab's LXD shares the cgroup tree): "bas-" is ours.
INSTANCES = {"bas-a": "s1", "bas-b": "s2", "bas-c": "s3"}
# The clients ask for bas-b: s2, next in line, has the name from its own LXD the moment it serves;
# s1 publishes it from the hostname bas-b's udhcpc sends (renewed after every take-back).
QUERY_INSTANCE = "bas-b"
CLIENT_MACS = {"s1": "02:ba:5a:00:00:01", "s2": "02:ba:5a:00:00:02", "s3": "02:ba:5a:00:00:03"}
# The counter asks as s3's client namespace (a MAC with a lease: no 3 s ping check), on s3, whose
# fabricd is never stopped.
COUNTER_HOST = "s3"
ROUND_MARGIN_S = 15.0  # a round times out this long after its goal
QUIET_S = 2.0  # the leaving server stopped: no reply from it this long (the clients ask every 50 ms)
WHOLE_RUN = -1  # the index of the check over the whole run


@dataclass
class TakeBackRound(FailoverRound):
    """The better-ranked host started again (`new`) takes the authority back from `old`."""

    restart_returned_s: float | None = None
    two_servers_s: float = TIMED_OUT
    doubled: int = 0
    doubled_span_s: list[float] | None = None


class StandaloneBench(AuthorityBench):
    poll_s = 0.25  # rounds of a minute: looking at the records less often costs no precision

    def __init__(self, lab: Lab, progress: Progress, goals: StandaloneGoals) -> None:
        super().__init__(lab, progress, HOSTS, goals.failover_goal_s + ROUND_MARGIN_S)
        self.goals = goals
        self.takeback_timeout = goals.takeback_goal_s + goals.two_servers_goal_s + ROUND_MARGIN_S
        self.takebacks: list[TakeBackRound] = []

    def setup(self) -> Json:
        self.progress("waiting for one authority that every fabricd agrees on (standalone: about 25 s)")
        first = self.wait_holder(timeout=120)
        for name, host in INSTANCES.items():
            self.progress(f"creating {name} on {host}'s own LXD; udhcpc sending its name in it")
            node = self.lab.node(host)
            self.created.append(name)
            node.run(
                ["lxc", "init", "busybox", name, "-p", "default", "-p", "overlay"], input_text="", timeout=120
            )
            node.run(["lxc", "start", name], input_text="", timeout=60)
            udhcpc = DhcpClient(node, name)
            udhcpc.start("-x", f"hostname:{name}")
            self.instances[name] = udhcpc
        self.leases = {name: client.wait_bound(40).ip for name, client in self.instances.items()}
        self.progress(f"instances bound: {self.leases}; client namespaces on each host's {BRIDGE}")
        self.start_clients(SERVER, f"{QUERY_INSTANCE}.{DOMAIN}", CLIENT_MACS, COUNTER_HOST)
        holder, settled = self.settle()
        if holder != self.goals.settings.priority[0]:
            self.problems.append(f"the first authority is {holder}, not the best-ranked host")
        return {
            "first_holder": first,
            "holder_after_setup": holder,
            "settled_after_setup": settled,
            "instances": {n: {"host": INSTANCES[n], "address": self.leases[n]} for n in INSTANCES},
            "clients": {
                c.host: {"namespace": c.netns, "mac": c.mac, "lease": c.lease, "port": f"{c.host}:{c.port}"}
                for c in self.clients
            },
            "query_name": f"{QUERY_INSTANCE}.{DOMAIN}",
        }

    # the take-back ---------------------------------------------------------------------------------

    def after_failover(self, round_: FailoverRound) -> None:
        """Start the stopped (better-ranked) host's fabricd again and time it taking the authority
        back: every client's first ACK from it, and until the other host stopped answering."""
        returning, leaving = round_.old, round_.new or "?"
        take = TakeBackRound(f"take_back_after_{round_.kind}", round_.index, leaving, True, new=returning)
        offsets = {h: log.offset() for h, log in self.logs.items()}
        t0 = take.signal_at = time.monotonic()
        restart_agent(self.lab, returning)
        take.restart_returned_s = round(time.monotonic() - t0, 4)
        deadline = t0 + self.takeback_timeout
        while time.monotonic() < deadline and not self._taken_back(take, offsets, time.monotonic()):
            time.sleep(self.poll_s)
        time.sleep(0.3)  # replies still on their way count
        observed_until = time.monotonic()
        replies: list[Reply] = []
        for client in self.clients:
            records = client.snapshot(t0)
            ack = first_ack(records, t0, deadline, leaving)
            taken = ack is not None and ack.host == returning
            take.dhcp_s[client.host] = ack.at - t0 if ack is not None and taken else TIMED_OUT
            take.ack_hosts[client.host] = ack.host if ack is not None else None
            sent = records.dhcp_sent
            replies += [
                Reply(r.at, r.xid, r.host or "?") for r in records.dhcp if sent.get(r.xid, -1.0) >= t0
            ]
            self._moved(take, client, records, t0)
        if self.counter is not None:
            offers = self.counter.log().offers
            replies += [Reply(self.mono(o.at), o.xid, o.host) for o in offers if self.mono(o.at) >= t0]
        take.two_servers_s = two_servers_seconds(replies, returning, leaving, observed_until, QUIET_S)
        doubled = doubled_transactions(replies)
        take.doubled = len(doubled)
        at = sorted(r.at - t0 for r in replies if r.xid in doubled)
        take.doubled_span_s = [round(at[0], 3), round(at[-1], 3)] if at else None
        take.steps = {
            "restart_returned_s": take.restart_returned_s,
            "returning_took_authority_s": self._after(returning, offsets, "authority taken", t0),
            "returning_dnsmasq_serving_s": self._after(returning, offsets, "dnsmasq serving", t0),
            "leaving_yielded_s": self._after(leaving, offsets, "authority yielded", t0),
        }
        self._renewals(take, t0)
        self.progress(
            f"take-back after {round_.kind} {round_.index + 1}: {returning} serving again "
            f"{_fmt(take.dhcp_all)} after its restart, two servers {_fmt(take.two_servers_s)} "
            f"({take.doubled} transactions answered by both); moved {len(take.readdressed)}"
        )
        self.takebacks.append(take)

    def _taken_back(self, take: TakeBackRound, offsets: dict[str, int], now: float) -> bool:
        """Every client had an ACK from the returning host, the leaving one logged its yield and has
        not answered for QUIET_S."""
        t0, returning, leaving = take.signal_at, take.new, take.old
        last_leaving = 0.0
        for client in self.clients:
            records = client.snapshot(t0)
            ack = first_ack(records, t0, now, leaving)
            if ack is None or ack.host != returning:
                return False
            last_leaving = max([last_leaving, *(r.at for r in records.dhcp if r.host == leaving)])
        yielded = leaving in self.logs and self.logs[leaving].first(offsets[leaving], "authority yielded")
        return bool(yielded) and now - last_leaving >= QUIET_S

    def _after(self, host: str, offsets: dict[str, int], event: str, t0: float) -> float | None:
        if host not in self.logs:
            return None
        wall = self.logs[host].first(offsets[host], event)
        return round(self.mono(wall) - t0, 4) if wall is not None else None

    # the end ---------------------------------------------------------------------------------------

    def remove_instances(self) -> list[str]:
        """Delete the instances on their own hosts' LXD; the ones left."""
        left: list[str] = []
        for host in HOSTS:
            node = self.lab.node(host)
            for name in [n for n in reversed(self.created) if INSTANCES.get(n) == host]:
                with contextlib.suppress(LabError):
                    node.run(["lxc", "delete", "--force", name], input_text="", check=False, timeout=90)
            try:
                listed = node.run(["lxc", "list", "--format", "csv", "-c", "n"], input_text="", check=False)
            except LabError:
                left.append(f"? ({host}: lxc list failed)")
                continue
            left += [n for n in listed.stdout.split() if n.startswith(f"{LAB_NAME}-")]
        return left

    def whole_run_moves(self) -> FailoverRound:
        """Every client namespace's ACKs and NAKs from the end of the set-up on, in one check."""
        check = FailoverRound("whole_run", WHOLE_RUN, "", True)
        for client in self.clients:
            self._moved(check, client, client.snapshot(self.started_at), self.started_at)
        return check


# --- the part's run and its section of the report ------------------------------------------------------


def lab_settings(lab: Lab) -> StandaloneSettings:
    configs = [n.agent_config for n in lab.topology.nodes if n.agent_config is not None]
    return StandaloneSettings.from_configs(Path(c) for c in configs)


def run_standalone(rounds: int, state_root: Path, progress: Progress) -> Json:
    """The standalone part: the lab up, `rounds` rounds, everything removed; its report section."""
    started = time.time()
    lab = named_lab(LAB_FILE, LAB_NAME, state_root)
    goals = standalone_goals(lab_settings(lab))
    progress(
        f"standalone part: bringing up {LAB_NAME} from {LAB_FILE.relative_to(REPO)}; failover goal "
        f"{goals.failover_goal_s:g}s, take-back goal {goals.takeback_goal_s:g}s"
    )
    lab.down()  # an aborted earlier run of this part: namespaces fl-bas-* only
    left: Json = {}
    error: str | None = None
    lab_info: Json = {}
    try:
        lab.up()
        bench = StandaloneBench(lab, progress, goals)
        try:
            lab_info = bench.setup()
            bench.started_at = time.monotonic()
            for n in range(rounds):
                bench.failover("sigkill", n)
                bench.failover("sigterm", n)
            bench.end_measurement()
        except Terminated:
            raise
        except Exception as failure:  # the section says what failed; every round not done misses its goal
            error = f"{type(failure).__name__}: {failure}"
            progress(f"standalone part failed: {error}")
        finally:
            progress("removing the standalone part's client namespaces and instances")
            left.update(bench.teardown())
    finally:
        progress(f"taking {LAB_NAME} down")
        lab.down()
    left["namespaces"] = netns.list_with_prefix(namespace_prefix(LAB_NAME))
    section = standalone_section(bench, goals, rounds, error)
    section["lab"] = {"file": str(LAB_FILE.relative_to(REPO)), "name": LAB_NAME, **lab_info}
    section["left_behind"] = left
    section["duration_s"] = round(time.time() - started, 1)
    return section


def standalone_section(
    bench: StandaloneBench, goals: StandaloneGoals, rounds: int, error: str | None
) -> Json:
    kills = [r for r in bench.failovers if r.kind == "sigkill"]
    terms = [r for r in bench.failovers if r.kind == "sigterm"]
    takes = bench.takebacks
    failover_goal, takeback_goal = goals.failover_goal_s, goals.takeback_goal_s

    def failover(found: list[FailoverRound], dns_goal: float | None) -> Json:
        return {
            "dhcp_ack": goal_figure(padded([r.dhcp_all for r in found], rounds), failover_goal),
            "dns_answer": goal_figure(padded([r.dns_all for r in found], rounds), dns_goal),
            "first_client": {
                "dhcp_ack": goal_figure([r.dhcp_first for r in found], None),
                "dns_answer": goal_figure([r.dns_first for r in found], None),
            },
            "per_round": [round_json(r) for r in found],
        }

    kill, term = failover(kills, failover_goal), failover(terms, None)
    take_back: Json = {
        "serving_again": goal_figure(padded([r.dhcp_all for r in takes], 2 * rounds), takeback_goal),
        "two_servers_s": goal_figure(
            padded([r.two_servers_s for r in takes], 2 * rounds), goals.two_servers_goal_s
        ),
        "per_round": [_takeback_json(r) for r in takes],
        "what": "the stopped host's fabricd started again (it is ranked first) -> the first DHCP ACK from "
        "it at every client (the slowest client is the round's figure); two_servers_s: from its first "
        "reply to the last reply of the host that served meanwhile, over every client REQUEST and the "
        "offer counter's OFFERs (also every OFFER to fabricd's probes seen on s3's bridge). Two take-backs "
        "a round: after the SIGKILL and after the SIGTERM",
    }
    whole = bench.whole_run_moves() if bench.clients else None
    readdressed = readdressed_section([*bench.failovers, *takes], "bas-a/b/c")
    readdressed["client_namespaces_whole_run"] = (
        {"readdressed": whole.readdressed, "naks": whole.naks} if whole is not None else None
    )
    readdressed["meets_goal"] = bool(
        readdressed["meets_goal"] and whole is not None and not whole.readdressed and error is None
    )
    goals_met = {
        "failover_sigkill.dhcp_ack": kill["dhcp_ack"]["meets_goal"],
        "failover_sigkill.dns_answer": kill["dns_answer"]["meets_goal"],
        "handover_sigterm.dhcp_ack": term["dhcp_ack"]["meets_goal"],
        "take_back.serving_again": take_back["serving_again"]["meets_goal"],
        "take_back.two_servers_s": take_back["two_servers_s"]["meets_goal"],
        "readdressed": readdressed["meets_goal"],
        "completed": error is None,
    }
    return {
        "what": "labs/authority-standalone.clab.yml renamed bas: dhcp.election standalone, priority s1, s2, "
        "s3, liveness by fabricd's DHCP probe. Each round: SIGKILL the authority's fabricd (s1) -> s2 "
        "serves; s1 started again -> takes the authority back; the same with SIGTERM. Times in seconds on "
        "the benchmark's monotonic clock; best / median / worst over the rounds (a timed-out or missing "
        "round is null: its goal is missed)",
        "rounds": rounds,
        "goals_computed": goals.json(),
        "headline": {
            "failover_sigkill_dhcp_ack_s": _bmw(kill["dhcp_ack"]),
            "failover_sigkill_dns_answer_s": _bmw(kill["dns_answer"]),
            "handover_sigterm_dhcp_ack_s": _bmw(term["dhcp_ack"]),
            "take_back_serving_again_s": _bmw(take_back["serving_again"]),
            "take_back_two_servers_s": _bmw(take_back["two_servers_s"]),
            "clients_readdressed": readdressed["count"],
        },
        "goals": goals_met,
        "all_goals_met": all(goals_met.values()),
        "failover_sigkill": kill,
        "handover_sigterm": term,
        "take_back": take_back,
        "readdressed": readdressed,
        "params": {
            "failover_round_timeout_s": bench.round_timeout,
            "take_back_timeout_s": bench.takeback_timeout,
            "quiet_s": QUIET_S,
            "offer_counter_every_s": COUNTER_INTERVAL,
        },
        "offer_counter": _counter(bench),
        "error": error,
        "problems": bench.problems + [f"client {c.host}: {e}" for c in bench.clients for e in c.errors],
    }


def _counter(bench: StandaloneBench) -> Json:
    """The offer counter's own DISCOVERs over the part: who answered them (two hosts: a take-back)."""
    log = getattr(bench, "counter_log", None)
    if log is None:
        return {"ran": False}
    own = log.answered_probes()
    return {
        "ran": True,
        "host": COUNTER_HOST,
        "discovers": len(own),
        "answered_by_one_host": sum(1 for h in own.values() if len(h) == 1),
        "answered_by_two_or_more": sum(1 for h in own.values() if len(h) > 1),
        "unanswered": sum(1 for h in own.values() if not h),
        "offers_per_host": dict(log.per_host()),
    }


def _bmw(figure: Json) -> Json:
    return {k: figure.get(k) for k in ("best", "median", "worst")}


def _takeback_json(r: TakeBackRound) -> Json:
    return {
        "round": r.index,
        "after": r.kind.removeprefix("take_back_after_"),
        "returning": r.new,
        "leaving": r.old,
        "serving_again_s": seconds_by_host(r.dhcp_s),
        "first_ack_hosts": r.ack_hosts,
        "two_servers_s": finite(r.two_servers_s),
        "transactions_answered_by_both": r.doubled,
        "doubled_span_s": r.doubled_span_s,
        "steps": r.steps,
        "naks": r.naks,
        "readdressed": r.readdressed,
        "renewals": r.renewals,
        "notes": r.notes,
    }


def _fmt(value: float) -> str:
    return "timed out" if not math.isfinite(value) else f"{value:.2f}s"
