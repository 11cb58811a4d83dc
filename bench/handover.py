"""The cluster lease hand-over in LXD at growing table sizes, up to the cap (MAX_LEASES).

    sudo .venv/bin/python -m bench.handover [--rounds 5] [--sizes 16,256,1024,4096] [--keep-logs]

Prints one JSON document on stdout; progress goes to stderr. labs/overlay.clab.yml renamed "bho"
(namespaces fl-bho-*): a three-member LXD cluster with fabricd running on every member, so the
election renews every 0.5 s meanwhile, as in production. The benchmark writes synthetic tables of
each size with fabricd's own `HandoverStore` to an ACL of its own (never the one fabricd uses),
from each member in turn (a write on a member that is not the database leader is forwarded to
it), and after each write reads the table back from every member, as the next holder would:

- publish_s: one write of the table. fabricd gives up on a publish after PUBLISH_TIMEOUT.
- fetch_s: one read. A take waits FETCH_TIMEOUT for it; a slower read starts the term empty.
- decode_s: checking the table entry by entry and writing dnsmasq's lease lines.
- take_s: fetch_s + decode_s, what a take spends before its dnsmasq starts.
- bytes: the size of the published text; intact: every read decoded to exactly the leases written;
  errors: what LXD said when a write or read failed; requests_retried: reads and writes that LXD
  first refused while another ACL was deleted (fabricd retries them at once, `get_acl`).

Requests time out as fabricd's do (STORE_TIMEOUT: 1 s to connect, 1 s to read).

Each size reports best / median / worst, and its ratio to the smallest size of the same run. A
failed write or read is an infinite sample: it makes the worst null and misses its goal.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from bench.labs import REPO, lab_bench_main, named_lab, progress
from bench.stats import TIMED_OUT, Json, best_median_worst, check
from fabric_lab import netns
from fabric_lab.lxd_node import lxd_socket
from fabric_lab.runner import namespace_prefix
from fabricd.authority.dnsmasq import Lease
from fabricd.authority.feature import STORE_TIMEOUT
from fabricd.authority.handover import MAX_LEASES, HandoverStore, decode, encode
from fabricd.authority.handover_runner import FETCH_TIMEOUT, PUBLISH_TIMEOUT
from fabricd.config.model import LXDConfig
from fabricd.lxd.api import LXDApi, LXDRequestFailed, LXDUnavailable
from fabricd.lxd.events import ELECTION_ACL

OVERLAY_LAB = REPO / "labs" / "overlay.clab.yml"
LAB_NAME = "bho"  # this benchmark's own lab name
BENCH_ACL = f"{ELECTION_ACL}bench-leases"  # the election's prefix: fabricd's observers ignore it
SUBNET = IPv4Network("10.250.0.0/18")  # room for the cap, and more
EPOCH = 41  # the table of term 41, read as term 42 would
TOOLS = ("nsenter", "lxd", "lxc", "dnsmasq", "setpriv")


def synthetic_leases(count: int, now: float) -> list[Lease]:
    """`count` leases as a busy overlay's would look: distinct MACs, hostnames and client ids."""
    leases = []
    for index in range(count):
        mac = f"02:b0:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}:01"
        leases.append(
            Lease(
                expires=int(now) + 3600 + index % 600,
                address=SUBNET[16 + index],
                mac=mac,
                hostname=f"client-{index}",
                client_id=f"01:{mac}",
            )
        )
    return leases


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def measure_size(stores: dict[str, HandoverStore], count: int, rounds: int) -> Json:
    """`rounds` x every member writing a table of `count` leases, each read back by every member."""
    publish: list[float] = []
    fetch: list[float] = []
    decoded: list[float] = []
    take: list[float] = []
    intact = True
    text = ""
    errors: list[str] = []
    members = sorted(stores)
    retried_before = sum(store.retries for store in stores.values())
    for round_index in range(rounds):
        for writer in members[round_index % len(members) :] + members[: round_index % len(members)]:
            now = time.time()
            text = encode(synthetic_leases(count, now), EPOCH, now)
            seconds, ok = timed(functools.partial(stores[writer].publish, text))
            publish.append(seconds if ok else TIMED_OUT)
            if not ok:
                errors.append(f"publish from {writer}: {stores[writer].last_error}")
            for reader in members:
                got_s, got = timed(stores[reader].fetch)
                fetch.append(got_s if got is not None else TIMED_OUT)
                if got is None:
                    errors.append(f"fetch on {reader}: {stores[reader].last_error}")
                decode_s, handed = timed(functools.partial(decode, got, EPOCH + 1, SUBNET, time.time()))
                decoded.append(decode_s)
                take.append(got_s + decode_s if got is not None else TIMED_OUT)
                intact = intact and got == text and handed.count == count and not handed.refused
    return {
        "leases": count,
        "bytes": len(text.encode()),
        "intact": intact,
        "publish_s": best_median_worst(publish),
        "fetch_s": best_median_worst(fetch),
        "decode_s": best_median_worst(decoded),
        "take_s": best_median_worst(take),
        "errors": errors,
        "requests_retried": sum(store.retries for store in stores.values()) - retried_before,
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline <= 0:
        return None
    return round(value / baseline, 2)


def report(sizes: list[Json], rounds: int) -> Json:
    smallest = sizes[0]
    for size in sizes:
        size["vs_smallest"] = {
            figure: ratio(size[figure]["worst"], smallest[figure]["worst"])
            for figure in ("publish_s", "fetch_s", "take_s")
        }
    cap = next((s for s in sizes if s["leases"] == MAX_LEASES), None)
    goals: dict[str, bool] = {}
    if cap is not None:
        goals = {
            "fetch_worst_at_cap_within_fetch_timeout": check(cap["fetch_s"]["worst"], FETCH_TIMEOUT),
            "publish_worst_at_cap_within_publish_timeout": check(cap["publish_s"]["worst"], PUBLISH_TIMEOUT),
            "every_table_read_back_intact": all(s["intact"] for s in sizes),
        }
    fitting = [s["leases"] for s in sizes if check(s["fetch_s"]["worst"], FETCH_TIMEOUT)]
    return {
        "benchmark": "handover",
        "rounds": rounds,
        "cap": MAX_LEASES,
        "fetch_timeout_s": FETCH_TIMEOUT,
        "publish_timeout_s": PUBLISH_TIMEOUT,
        "largest_size_read_within_fetch_timeout": max(fitting) if fitting else None,
        "sizes": sizes,
        "goals": goals,
        "all_goals_met": bool(goals) and all(goals.values()),
    }


def run(args: argparse.Namespace, state_root: Path) -> Json:
    lab = named_lab(OVERLAY_LAB, LAB_NAME, state_root)
    progress(f"bringing up {lab.topology.name} from {OVERLAY_LAB.relative_to(REPO)} (LXD cluster, fabricd)")
    lab.down()  # an aborted earlier run of this benchmark: namespaces fl-bho-* only
    left: Json = {}
    try:
        lab.up()
        members = [n.name for n in lab.topology.nodes if n.labels.get("fabric.lxd") == "true"]
        apis = {m: LXDApi(LXDConfig(socket=lxd_socket(lab.node(m))), timeout=STORE_TIMEOUT) for m in members}
        stores = {m: HandoverStore(api, name=BENCH_ACL) for m, api in apis.items()}
        sizes = []
        try:
            for count in args.sizes:
                progress(
                    f"{count} leases: {args.rounds} rounds x {len(members)} writers x {len(members)} readers"
                )
                sizes.append(measure_size(stores, count, args.rounds))
        finally:
            api = next(iter(apis.values()))
            try:
                api.delete(f"/network-acls/{BENCH_ACL}", project="default")
            except (LXDUnavailable, LXDRequestFailed) as exc:
                left["acl"] = f"{BENCH_ACL}: {exc}"
    finally:
        progress(f"taking {lab.topology.name} down")
        lab.down()
    left["namespaces"] = netns.list_with_prefix(namespace_prefix(LAB_NAME))
    result = report(sizes, args.rounds)
    result["members"] = members
    result["left_behind"] = left
    return result


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return (
            "bench.handover needs root (network namespaces, LXD): `sudo .venv/bin/python -m bench.handover`"
        )
    missing = [t for t in TOOLS if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin") is None]
    return f"bench.handover needs {', '.join(missing)} (scripts/setup.sh installs them)" if missing else None


def sizes_list(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected lease counts separated by commas") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_LEASES:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be 1 to {MAX_LEASES} (the cap)")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.handover",
        description=(__doc__ or "").split("\n\n", 1)[0],
        epilog=(__doc__ or "").split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds per size (each: every member writes once)"
    )
    parser.add_argument(
        "--sizes",
        type=sizes_list,
        default=[16, 256, 1024, MAX_LEASES],
        help=f"lease counts, comma-separated (default 16,256,1024,{MAX_LEASES}); the smallest: baseline",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the lab's logs under the state dir")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return lab_bench_main("bench-handover-", parse_args(argv), unavailable(), run)


if __name__ == "__main__":
    sys.exit(main())
