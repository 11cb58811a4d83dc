"""fabricd overlay benchmark: VXLAN overlay against raw kernel VXLAN and the routed underlay.

    sudo .venv/bin/python -m bench.overlay [--seconds 5] [--rounds 3] [--keep-logs]

Prints one JSON document on stdout; progress goes to stderr. One lab (renamed "bov", namespaces
fl-bov-*) under a fresh state directory in /tmp, two busybox instances bench-1 (on h1) and bench-2
(on h2) with the profile "overlay", and the raw-VXLAN floor (bench/overlay_floor.py) that the
benchmark builds itself in h1's and h2's namespaces; everything measured in the same run. The servers
are stopped by PID, the floor's devices and the instances deleted and the lab taken down in a finally.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from bench import overlay_floor
from bench.labs import REPO, lab_bench_main, named_lab, progress
from bench.overlay_sampler import CLK_TCK, TrafficSampler, busy_jiffies, parse_ping
from bench.stats import Json, check_at_least, distribution
from fabric_lab import netns, static_address
from fabric_lab.node import LabError, NodeRuntime
from fabric_lab.runner import Lab, namespace_prefix
from fabricd import __version__

OVERLAY_LAB = REPO / "labs" / "overlay.clab.yml"
LAB_NAME = "bov"  # never "overlay" or "tov": those are other engineers' labs
TOOLS = ("nsenter", "lxd", "lxc", "iperf3", "ping", "ldd")
UNDERLAY_CLIENT, UNDERLAY_SERVER = "10.99.1.11", "10.99.2.12"  # h1's and h2's eth1
UNDERLAY_LINK = "eth1"  # h1's link to r1: every path leaves h1 through it
PORT = 5201
FLOOR_PORT = 5202  # the raw-VXLAN server, in h2's namespace beside the underlay one
PATHS = ("underlay", "raw_vxlan", "overlay")
HOST_USR = "/opt/hostusr"  # the machine's /usr inside the instances, read-only
PINGS, PING_INTERVAL = 50, "0.02"
RATIO_SINGLE_MIN = 0.90
RATIO_VS_RAW_VXLAN_MIN = 0.97
CPU_PER_GB_RATIO_MAX = 1.3
BACKGROUND_S = 3.0
WARMUP_S = 1


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    host: str
    address: str


CLIENT = Instance("bench-1", "h1", "192.168.200.201")
SERVER = Instance("bench-2", "h2", "192.168.200.202")

FIGURES = """\
figures (all from the same run; medians over the rounds; Gbit/s = 1e9 bit/s, GB = 1e9 bytes):
  headline.ratio_vs_raw_vxlan_single
                            overlay / raw kernel VXLAN median TCP throughput, one stream (goal >=
                            0.97): what fabricd's overlay costs beyond the kernel's VXLAN
  headline.ratio_single     overlay / underlay, one stream (goal >= 0.90)
  headline.ratio_4, ratio_vs_raw_vxlan_4   the same with 4 parallel streams (iperf3 -P 4; no goal)
  throughput.*.{underlay,raw_vxlan,overlay}_gbit_s
                            iperf3 end.sum_received.bits_per_second: underlay = client in h1's
                            namespace -> server in h2's on 10.99.2.12 (routed by r1); raw_vxlan =
                            h1 192.168.201.1 -> h2 192.168.201.2 over the floor the benchmark
                            builds without fabricd (veth -> bridge bfl0 -> VXLAN bvx0, VNI 4242,
                            UDP 4790, the overlay's MTU, the same underlay path; see
                            bench/overlay_floor.py); overlay = bench-1 on h1 (192.168.200.201) ->
                            bench-2 on h2 (192.168.200.202) over fabric0/vx-fabric0 (VNI 100).
                            Each round runs every path, the first path rotating between rounds;
                            ratio_per_round pairs them.
  throughput.*.retransmits  iperf3 end.sum_sent.retransmits per run
  cpu_per_gb.*_cpu_s_per_gb whole-machine CPU-seconds per GB received, single stream: busy jiffies
                            of /proc/stat (user+nice+system+irq+softirq+steal, all CPUs, /SC_CLK_TCK)
                            over the part of the run in which h1's eth1 carried the data (sampled
                            every 20 ms; leaves out the ~0.2 CPU-s an `lxc exec` costs), divided by
                            iperf3 end.sum_received.bytes / 1e9. ratio = overlay / underlay
                            (goal <= 1.3); ratio_vs_raw_vxlan = overlay / raw_vxlan (no goal).
                            whole_command: /proc/stat read just before and after the client
                            command instead. net_of_background: minus the machine's
                            idle busy rate (lab up, nothing sent) times the window.
  latency                   ping -c 50 -i 0.02 -q per round, the machine's iputils ping on every
                            path: underlay = in h1's namespace to 10.99.2.12; raw_vxlan = in h1's
                            namespace from 192.168.201.1 to 192.168.201.2; overlay = run in
                            bench-1 to bench-2 (instance to instance). avg_ms is the median of
                            the rounds' averages, min_ms/max_ms the extremes over all rounds;
                            ratio_avg = overlay avg / underlay avg, ratio_avg_vs_raw_vxlan =
                            overlay avg / raw_vxlan avg.
  lab.overlay_mtu_in_instance  /sys/class/net/eth0/mtu in bench-1
  lab.flood_entries         len(overlay.flood) of `fabricctl status --json` in h1
  machine                   CPUs, kernel, versions, load and other labs' namespaces (the machine
                            is shared: other engineers' labs add noise to every figure)
"""


# --- the machine's binaries inside a busybox instance -------------------------------------------------


def host_binary(path: str) -> list[str]:
    """argv prefix running the machine's `path` in an instance: its loader and libraries from HOST_USR."""
    listed = subprocess.run(["ldd", path], capture_output=True, text=True, check=True, timeout=20).stdout
    loader, dirs = None, set()
    for line in listed.splitlines():
        if "=>" in line:
            target = line.split("=>", 1)[1].split()[0]
            if target.startswith("/"):
                dirs.add(os.path.realpath(os.path.dirname(target)))  # the directory: sonames are links in it
        elif line.strip().startswith("/"):
            loader = os.path.realpath(line.split()[0])  # /lib64/... is an absolute link: use the file
    if loader is None:
        raise RuntimeError(f"ldd {path}: no dynamic loader in {listed!r}")
    inside = [loader, *sorted(dirs), os.path.realpath(path)]
    outside = [p for p in inside if not p.startswith("/usr/")]
    if outside:
        raise RuntimeError(f"{path} needs files outside /usr, which the instances do not get: {outside}")
    mapped = [HOST_USR + p.removeprefix("/usr") for p in inside]
    return [mapped[0], "--library-path", ":".join(mapped[1:-1]), mapped[-1]]


# --- the lab ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, lab: Lab, seconds: int, rounds: int) -> None:
        self.lab, self.seconds, self.rounds = lab, seconds, rounds
        self.h1, self.h2 = lab.node("h1"), lab.node("h2")
        self.iperf3 = host_binary("/usr/bin/iperf3")
        self.iputils_ping = host_binary("/usr/bin/ping")
        self.created: list[Instance] = []
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        underlay = (UNDERLAY_CLIENT, UNDERLAY_SERVER)
        self.floor = overlay_floor.ends(self.h1.netns_name, underlay[0], self.h2.netns_name, underlay[1])
        self.floor_built: list[overlay_floor.FloorEnd] = []
        self.runs: list[Json] = []
        self.pings: list[Json] = []
        self.problems: list[str] = []

    # commands -----------------------------------------------------------------------------------

    def lxc(self, node: NodeRuntime, *args: str, timeout: float = 60) -> str:
        # stdin empty: `lxc init` reads instance YAML from any stdin that is not a terminal
        return node.run(["lxc", *args], input_text="", timeout=timeout).stdout

    def exec_argv(self, inst: Instance, argv: Sequence[str]) -> list[str]:
        return ["lxc", "exec", "-T", "-n", inst.name, "--", *argv]

    def in_instance(
        self, inst: Instance, argv: Sequence[str], timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        node = self.lab.node(inst.host)
        return node.run(self.exec_argv(inst, argv), input_text="", timeout=timeout, check=check)

    def status(self, node: NodeRuntime) -> Json:
        result: Json = json.loads(node.fabricctl("status", "--json", timeout=15).stdout)
        return result

    # set-up -------------------------------------------------------------------------------------

    def wait_overlay(self, timeout: float = 90) -> Json:
        """fabricd on h1 and h2 with the overlay up and both other members in h1's flood list."""
        deadline = time.monotonic() + timeout
        seen: Json = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(LabError, ValueError, KeyError):
                seen = self.status(self.h1)["overlay"]
                other = self.status(self.h2)["overlay"]
                if seen["state"] == other["state"] == "up" and len(seen["flood"]) >= 2:
                    return seen
            time.sleep(0.5)
        raise TimeoutError(f"overlay not up with 2 flood entries within {timeout:g}s: {seen}")

    def create(self, inst: Instance) -> None:
        node = self.lab.node(inst.host)
        self.created.append(inst)
        self.lxc(node, "init", "busybox", inst.name, "--target", inst.host, "-p", "default", "-p", "overlay")
        disk = ["hostusr", "disk", "source=/usr", f"path={HOST_USR}", "readonly=true"]
        self.lxc(node, "config", "device", "add", inst.name, *disk)
        self.lxc(node, "start", inst.name)
        self.stop_dhcp_client(inst)
        self.set_address(inst)

    def runner_in(self, inst: Instance) -> static_address.InInstance:
        return lambda argv: self.in_instance(inst, argv, check=False)

    def set_address(self, inst: Instance) -> None:
        static_address.set_static(self.runner_in(inst), f"{inst.address}/24")

    def stop_dhcp_client(self, inst: Instance, timeout: float = 10) -> None:
        """The image's udhcpc: its deconfig would flush the static address, and its DISCOVERs would be
        flooded to every member during the runs."""
        if not static_address.stop_dhcp_client(self.runner_in(inst), timeout):
            self.problems.append(f"{inst.name}: no udhcpc seen within {timeout:g}s")

    def build_floor(self, mtu: int, timeout: float = 10) -> None:
        """The raw-VXLAN floor in h1 and h2, then wait until h1 reaches h2 over it."""
        near, far = self.floor
        for end, peer in ((near, far), (far, near)):
            self.floor_built.append(end)
            overlay_floor.build(end, peer, mtu)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ping = ["ping", "-c", "1", "-W", "1", "-I", near.address, far.address]
            if self.h1.run(ping, check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"raw VXLAN floor: {far.address} not reachable from h1 within {timeout:g}s")

    def remove_floor(self) -> list[str]:
        left: list[str] = []
        for end in self.floor_built:
            left += overlay_floor.remove(end)
        self.floor_built.clear()
        return left

    def wait_reachable(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ping = ["ping", "-c", "1", "-W", "1", SERVER.address]
            if self.in_instance(CLIENT, ping, check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"{SERVER.address} not reachable from {CLIENT.name} within {timeout:g}s")

    # servers ------------------------------------------------------------------------------------

    def start_server(
        self, key: str, node: NodeRuntime, argv: Sequence[str], tcp_table: Callable[[], str], port: int = PORT
    ) -> None:
        log: IO[bytes]
        with open(node.log_file(f"bench-iperf3-{key}"), "ab") as log:
            proc = subprocess.Popen(
                node.argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=node.base_env(),
                start_new_session=True,
            )
        self.servers[key] = proc
        self._record_pid(node.name, proc.pid, add=True)  # Lab.down stops it too if we die first
        deadline = time.monotonic() + 20
        while not listening(tcp_table(), port):
            if proc.poll() is not None:
                raise RuntimeError(f"iperf3 server {key} exited {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"iperf3 server {key} not listening within 20s; see {log.name}")
            time.sleep(0.1)

    def _record_pid(self, node: str, pid: int, add: bool) -> None:
        state = self.lab.state()
        pids = state.nodes[node].pids
        if add:
            pids.append(pid)
        elif pid in pids:
            pids.remove(pid)  # a stopped pid must not stay: Lab.down would signal whoever reuses it
        state.save()

    def start_servers(self) -> None:
        holder = self.h2.holder_pid
        self.start_server(
            "underlay",
            self.h2,
            ["iperf3", "-s", "-B", UNDERLAY_SERVER, "-p", str(PORT), "--forceflush"],
            lambda: Path(f"/proc/{holder}/net/tcp").read_text(),
        )
        self.start_server(
            "raw_vxlan",
            self.h2,
            ["iperf3", "-s", "-B", self.floor[1].address, "-p", str(FLOOR_PORT), "--forceflush"],
            lambda: Path(f"/proc/{holder}/net/tcp").read_text(),
            FLOOR_PORT,
        )
        self.start_server(
            "overlay",
            self.h2,
            self.exec_argv(
                SERVER, [*self.iperf3, "-s", "-B", SERVER.address, "-p", str(PORT), "--forceflush"]
            ),
            lambda: self.in_instance(SERVER, ["cat", "/proc/net/tcp"], check=False).stdout,
        )

    def stop_servers(self) -> list[str]:
        """SIGTERM by PID (`lxc exec` passes it on to iperf3 in the instance); what is left running."""
        left = []
        for proc in self.servers.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self._record_pid("h2", proc.pid, add=False)
        if any(i.name == SERVER.name for i in self.created):
            with contextlib.suppress(LabError):
                ps = self.in_instance(SERVER, ["ps", "-o", "pid,args"], check=False).stdout
                for line in ps.splitlines():
                    if "iperf3" in line:
                        left.append(f"{SERVER.name}: {line.strip()}")
                        self.in_instance(SERVER, ["kill", "-9", line.split()[0]], check=False)
        for pid in netns.pids_in(self.h2.netns_name):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "iperf3":
                    left.append(f"h2: pid {pid}")
        self.servers.clear()
        return left

    def delete_instances(self) -> list[str]:
        for inst in reversed(self.created):
            node = self.lab.node(inst.host)
            node.run(["lxc", "delete", "--force", inst.name], input_text="", check=False, timeout=90)
        self.created.clear()
        listed = self.h1.run(["lxc", "list", "--format", "csv", "-c", "n"], input_text="", check=False)
        return [n for n in listed.stdout.split() if n.startswith("bench-")]

    # measurements -------------------------------------------------------------------------------

    def iperf(
        self, sampler: TrafficSampler, path: str, streams: int, seconds: int, round_: int | None
    ) -> Json:
        args = ["-t", str(seconds), "-P", str(streams), "--json"]
        if path == "underlay":
            node, argv = self.h1, ["iperf3", "-c", UNDERLAY_SERVER, "-p", str(PORT), *args]
        elif path == "raw_vxlan":
            near, far = self.floor
            node, argv = self.h1, ["iperf3", "-c", far.address, "-B", near.address, "-p", str(FLOOR_PORT)]
            argv += args
        else:
            args = ["-p", str(PORT), *args]
            node, argv = self.h1, self.exec_argv(CLIENT, [*self.iperf3, "-c", SERVER.address, *args])
        for attempt in (1, 2):
            busy_before, started = busy_jiffies(), time.monotonic()
            done = node.run(argv, input_text="", timeout=seconds + 60, check=False)
            ended, busy_after = time.monotonic(), busy_jiffies()
            try:
                report = json.loads(done.stdout)
            except ValueError:
                report = {"error": (done.stderr or done.stdout).strip()[-300:]}
            if done.returncode == 0 and "error" not in report:
                break
            self.problems.append(f"iperf3 {path} -P {streams} attempt {attempt}: {report.get('error')}")
            time.sleep(2)
        else:
            raise RuntimeError(f"iperf3 {path} -P {streams} failed twice: {report.get('error')}")
        received, sent = report["end"]["sum_received"], report["end"]["sum_sent"]
        gb = received["bytes"] / 1e9
        window = sampler.window(started, ended)
        whole = (busy_after - busy_before) / CLK_TCK
        run: Json = {
            "round": round_,
            "path": path,
            "streams": streams,
            "gbit_s": round(received["bits_per_second"] / 1e9, 3),
            "bytes": received["bytes"],
            "seconds": round(received["seconds"], 3),
            "retransmits": sent.get("retransmits"),
            "cpu_window_s": None if window is None else round(window.seconds, 3),
            "cpu_s": None if window is None else round(window.cpu_s, 2),
            "cpu_s_per_gb": None if window is None else round(window.cpu_s / gb, 4),
            "cpu_s_whole_command": round(whole, 2),
            "command_s": round(ended - started, 3),
            "cpu_s_per_gb_whole_command": round(whole / gb, 4),
            "iperf3_cpu_percent": {
                k: round(v, 1)
                for k, v in report["end"].get("cpu_utilization_percent", {}).items()
                if k in ("host_total", "remote_total")
            },
        }
        return run

    def ping(self, path: str, round_: int | None) -> Json:
        args = ["-c", str(PINGS), "-i", PING_INTERVAL, "-q"]
        if path == "underlay":
            done = self.h1.run(["ping", *args, UNDERLAY_SERVER], timeout=60, check=False)
        elif path == "raw_vxlan":
            near, far = self.floor
            done = self.h1.run(["ping", *args, "-I", near.address, far.address], timeout=60, check=False)
        else:  # the same iputils ping, run inside the instance
            done = self.in_instance(CLIENT, [*self.iputils_ping, *args, SERVER.address], check=False)
        result = parse_ping(done.stdout)
        if result.received != result.sent:
            self.problems.append(f"ping {path} round {round_}: {result.received}/{result.sent} answered")
        return {"round": round_, "path": path, **dataclasses.asdict(result)}

    def background(self) -> float:
        """CPUs' worth of busy time while the lab is up and nothing is measured (other labs included)."""
        before, started = busy_jiffies(), time.monotonic()
        time.sleep(BACKGROUND_S)
        return (busy_jiffies() - before) / CLK_TCK / (time.monotonic() - started)

    def measure(self, sampler: TrafficSampler) -> Json:
        progress(f"warm-up: {WARMUP_S}s each path, one ping each (not counted)")
        for path in PATHS:
            self.iperf(sampler, path, 1, WARMUP_S, None)
            self.ping(path, None)
        background = [self.background()]
        for n in range(self.rounds):
            first = n % len(PATHS)
            order = PATHS[first:] + PATHS[:first]
            for streams in (1, 4):
                for path in order:
                    run = self.iperf(sampler, path, streams, self.seconds, n)
                    self.runs.append(run)
                    progress(
                        f"round {n + 1}/{self.rounds} {path:8} -P {streams}: {run['gbit_s']:.2f} Gbit/s, "
                        f"{run['cpu_s_per_gb']} CPU-s/GB, {run['retransmits']} retransmits"
                    )
            for path in order:
                self.pings.append(self.ping(path, n))
            latest = {p["path"]: p["avg_ms"] for p in self.pings[-len(order) :]}
            progress(f"round {n + 1}/{self.rounds} ping avg ms: {latest}")
        background.append(self.background())
        return {"background_busy_cpus": [round(b, 3) for b in background]}

    def run(self) -> Json:
        progress("waiting for fabricd's overlay on h1 and h2")
        self.wait_overlay()
        for inst in (CLIENT, SERVER):
            progress(f"creating {inst.name} on {inst.host} ({inst.address}, /usr at {HOST_USR})")
            self.create(inst)
        self.wait_reachable()
        overlay = self.status(self.h1)["overlay"]
        mtu = int(self.in_instance(CLIENT, ["cat", "/sys/class/net/eth0/mtu"]).stdout)
        underlay_mtu = json.loads(self.h1.run(["ip", "-j", "link", "show", UNDERLAY_LINK]).stdout)[0]["mtu"]
        lab: Json = {
            "file": str(OVERLAY_LAB.relative_to(REPO)),
            "name": self.lab.topology.name,
            "underlay_mtu": underlay_mtu,
            "overlay_mtu_in_instance": mtu,
            "fabricd_overlay_mtu": overlay["mtu"],
            "fabricd_mtu_source": overlay["mtu_source"],
            "flood_entries": len(overlay["flood"]),
            "flood": overlay["flood"],
            "known_macs_h1": overlay["known_macs"],
            "instances": {i.name: {"host": i.host, "address": i.address} for i in (CLIENT, SERVER)},
            "iperf3_in_instances": " ".join(self.iperf3),
        }
        progress(f"overlay MTU {mtu} in {CLIENT.name}, {len(overlay['flood'])} flood entries on h1")
        self.build_floor(int(overlay["mtu"]))
        lab["raw_vxlan_floor"] = {
            "built_by": "bench/overlay_floor.py (pyroute2, in h1's and h2's namespaces; no fabricd)",
            "devices": f"{overlay_floor.VETH} <veth> {overlay_floor.VETH_PORT} -- {overlay_floor.BRIDGE} -- "
            f"{overlay_floor.VXLAN}",
            "vni": overlay_floor.VNI,
            "udp_port": overlay_floor.PORT,
            "mtu": int(overlay["mtu"]),
            "addresses": {"h1": self.floor[0].address, "h2": self.floor[1].address},
        }
        self.start_servers()
        holder = self.h1.holder_pid
        if holder is None:
            raise RuntimeError("h1 has no holder process")
        with TrafficSampler(holder, UNDERLAY_LINK) as sampler:
            noise = self.measure(sampler)
        return {"lab": lab, "noise": noise}


def listening(tcp_table: str, port: int) -> bool:
    """A socket in LISTEN (0A) on the port, from a /proc/net/tcp table."""
    wanted = f":{port:04X}"
    for line in tcp_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
            return True
    return False


# --- the report ---------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def _ratio(top: float | None, bottom: float | None, digits: int = 3) -> float | None:
    return None if top is None or not bottom else round(top / bottom, digits)


def _pick(runs: list[Json], path: str, streams: int) -> list[Json]:
    return [r for r in runs if r["path"] == path and r["streams"] == streams]


def _by_path(runs: list[Json], streams: int, key: str) -> dict[str, float | None]:
    return {path: _median([r[key] for r in _pick(runs, path, streams)]) for path in PATHS}


def throughput(runs: list[Json], streams: int) -> Json:
    gbit = _by_path(runs, streams, "gbit_s")
    picked = {path: _pick(runs, path, streams) for path in PATHS}

    def per_round(top: str, bottom: str) -> list[float | None]:
        return [_ratio(b["gbit_s"], a["gbit_s"]) for a, b in zip(picked[bottom], picked[top], strict=True)]

    return {
        "streams": streams,
        **{f"{path}_gbit_s": None if v is None else round(v, 3) for path, v in gbit.items()},
        "ratio": _ratio(gbit["overlay"], gbit["underlay"]),
        "ratio_per_round": per_round("overlay", "underlay"),
        "ratio_vs_raw_vxlan": _ratio(gbit["overlay"], gbit["raw_vxlan"]),
        "ratio_vs_raw_vxlan_per_round": per_round("overlay", "raw_vxlan"),
        "raw_vxlan_vs_underlay": _ratio(gbit["raw_vxlan"], gbit["underlay"]),
        **{path: distribution([r["gbit_s"] for r in rs], "Gbit/s", 3) for path, rs in picked.items()},
        "retransmits": {path: [r["retransmits"] for r in picked[path]] for path in PATHS},
    }


def cpu_per_gb(runs: list[Json], background: float) -> Json:
    def net(r: Json) -> float | None:
        if r["cpu_s"] is None:
            return None
        cpu, window, gb = float(r["cpu_s"]), float(r["cpu_window_s"]), int(r["bytes"]) / 1e9
        return (cpu - background * window) / gb

    picked = {path: _pick(runs, path, 1) for path in PATHS}
    window = _by_path(runs, 1, "cpu_s_per_gb")
    whole = _by_path(runs, 1, "cpu_s_per_gb_whole_command")
    net_of = {path: _median([net(r) for r in picked[path]]) for path in PATHS}
    ratio = _ratio(window["overlay"], window["underlay"])

    def rounded(values: dict[str, float | None]) -> Json:
        return {f"{path}_cpu_s_per_gb": None if v is None else round(v, 4) for path, v in values.items()}

    return {
        "streams": 1,
        **rounded(window),
        "ratio": ratio,
        "goal": {"ratio_max": CPU_PER_GB_RATIO_MAX},
        "meets_goal": ratio is not None and ratio <= CPU_PER_GB_RATIO_MAX,
        "ratio_vs_raw_vxlan": _ratio(window["overlay"], window["raw_vxlan"]),
        "samples": {path: [r["cpu_s_per_gb"] for r in picked[path]] for path in PATHS},
        "window_s": {path: [r["cpu_window_s"] for r in picked[path]] for path in PATHS},
        "whole_command": {
            **rounded(whole),
            "ratio": _ratio(whole["overlay"], whole["underlay"]),
            "ratio_vs_raw_vxlan": _ratio(whole["overlay"], whole["raw_vxlan"]),
        },
        "net_of_background": {
            "background_busy_cpus": round(background, 3),
            **rounded(net_of),
            "ratio": _ratio(net_of["overlay"], net_of["underlay"]),
            "ratio_vs_raw_vxlan": _ratio(net_of["overlay"], net_of["raw_vxlan"]),
        },
        "cpus": os.cpu_count(),
        "note": "whole-machine CPU: on a saturated machine CPU-s/GB tracks 1 / throughput",
    }


def latency(pings: list[Json], floor: overlay_floor.FloorEnd) -> Json:
    def summary(path: str, where: str) -> Json:
        rows = [p for p in pings if p["path"] == path]
        avg = _median([p["avg_ms"] for p in rows])
        return {
            "tool": f"iputils ping {where}",
            "avg_ms": None if avg is None else round(avg, 3),
            "min_ms": min((p["min_ms"] for p in rows), default=None),
            "max_ms": max((p["max_ms"] for p in rows), default=None),
            "per_round_avg_ms": [p["avg_ms"] for p in rows],
            "lost": sum(p["sent"] - p["received"] for p in rows),
        }

    under = summary("underlay", f"in h1's namespace -> {UNDERLAY_SERVER}")
    raw = summary("raw_vxlan", f"in h1's namespace -> {floor.address} over the raw-VXLAN floor")
    over = summary("overlay", f"run in {CLIENT.name} -> {SERVER.address}, instance to instance")
    return {
        "pings_per_round": PINGS,
        "interval_s": float(PING_INTERVAL),
        "same_tool": "the machine's iputils ping on every path",
        "underlay": under,
        "raw_vxlan": raw,
        "overlay": over,
        "ratio_avg": _ratio(over["avg_ms"], under["avg_ms"]),
        "ratio_avg_vs_raw_vxlan": _ratio(over["avg_ms"], raw["avg_ms"]),
    }


def machine() -> Json:
    return {
        "cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fabricd": __version__,
        "iperf3": _version(["iperf3", "--version"]),
        "lxd": _version(["lxd", "--version"]),
        "other_lab_namespaces_at_start": _other_namespaces(),
    }


def _version(command: Sequence[str]) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(list(command), capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else None
    return None


def _other_namespaces() -> list[str]:
    """Other labs on the machine, by name (their traffic and daemons share the CPUs)."""
    ours = namespace_prefix(LAB_NAME)
    with contextlib.suppress(OSError):
        names = {
            m.group(1) for p in Path("/run/netns").iterdir() if (m := re.match(r"fl-(.+)-[^-]+$", p.name))
        }
        return sorted(n for n in names if not f"fl-{n}-".startswith(ours))
    return []


def report(started: float, args: argparse.Namespace, measured: Json, bench: Bench) -> Json:
    single, four = throughput(bench.runs, 1), throughput(bench.runs, 4)
    single["goal"] = {"ratio_min": RATIO_SINGLE_MIN}
    single["meets_goal"] = check_at_least(single["ratio"], RATIO_SINGLE_MIN)
    single["vs_raw_vxlan"] = {
        "what": "overlay / raw kernel VXLAN (the floor built without fabricd), one stream",
        "ratio": single["ratio_vs_raw_vxlan"],
        "goal": {"ratio_min": RATIO_VS_RAW_VXLAN_MIN},
        "meets_goal": check_at_least(single["ratio_vs_raw_vxlan"], RATIO_VS_RAW_VXLAN_MIN),
    }
    background = statistics.mean(measured["noise"]["background_busy_cpus"])
    cpu = cpu_per_gb(bench.runs, background)
    lat = latency(bench.pings, bench.floor[1])
    lab = measured["lab"]
    return {
        "benchmark": "fabricd overlay (bench/overlay.py)",
        "headline": {
            "ratio_vs_raw_vxlan_single": single["ratio_vs_raw_vxlan"],
            "ratio_single": single["ratio"],
            "ratio_vs_raw_vxlan_4": four["ratio_vs_raw_vxlan"],
            "ratio_4": four["ratio"],
            "raw_vxlan_vs_underlay_single": single["raw_vxlan_vs_underlay"],
            **{f"{path}_single_gbit_s": single[f"{path}_gbit_s"] for path in PATHS},
            **{f"{path}_4_gbit_s": four[f"{path}_gbit_s"] for path in PATHS},
            **{f"{path}_cpu_s_per_gb": cpu[f"{path}_cpu_s_per_gb"] for path in PATHS},
            "cpu_per_gb_ratio": cpu["ratio"],
            **{f"{path}_ping_avg_ms": lat[path]["avg_ms"] for path in PATHS},
            "ping_ratio_avg": lat["ratio_avg"],
            "ping_ratio_avg_vs_raw_vxlan": lat["ratio_avg_vs_raw_vxlan"],
            "overlay_mtu_in_instance": lab["overlay_mtu_in_instance"],
            "flood_entries": lab["flood_entries"],
        },
        "goals": {
            "throughput.single_stream": single["meets_goal"],
            "throughput.single_stream.vs_raw_vxlan": single["vs_raw_vxlan"]["meets_goal"],
            "cpu_per_gb": cpu["meets_goal"],
        },
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "params": {"seconds": args.seconds, "rounds": args.rounds, "warmup_s": WARMUP_S, "port": PORT},
        "lab": lab,
        "throughput": {"single_stream": single, "four_streams": four},
        "cpu_per_gb": cpu,
        "latency": lat,
        "runs": bench.runs,
        "problems": bench.problems,
    }


# --- main ---------------------------------------------------------------------------------------------


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return (
            "bench.overlay needs root: it builds network namespaces and runs LXD and fabricd in them. Run "
            "it from the repository root, e.g. `sudo .venv/bin/python -m bench.overlay`."
        )
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"bench.overlay needs {', '.join(missing)} (iperf3 and ping from apt, the rest: scripts/setup.sh)"
        )
    try:
        host_binary("/usr/bin/iperf3")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"bench.overlay cannot run the machine's iperf3 inside a busybox instance: {exc}"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overlay",
        description=__doc__.split("\n\n", 1)[0],
        epilog=FIGURES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run (iperf3 -t)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; each runs both paths with 1 and 4 streams, and pings"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the lab's logs under the state dir")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rounds < 1:
        parser.error("--seconds and --rounds must be positive")
    return args


def run(args: argparse.Namespace, state_root: Path) -> Json:
    started = time.time()
    lab = named_lab(OVERLAY_LAB, LAB_NAME, state_root)
    info = machine()
    progress(f"bringing up {lab.topology.name} from {OVERLAY_LAB.relative_to(REPO)} (LXD cluster, fabricd)")
    lab.down()  # an aborted earlier run of this benchmark: namespaces fl-bov-* only
    left: Json = {}
    try:
        lab.up()
        bench = Bench(lab, args.seconds, args.rounds)
        try:
            measured = bench.run()
        finally:
            left["servers"] = bench.stop_servers()
            progress("removing the raw-VXLAN floor")
            left["raw_vxlan_devices"] = bench.remove_floor()
            progress("deleting the instances")
            left["instances"] = bench.delete_instances()
    finally:
        progress(f"taking {lab.topology.name} down")
        lab.down()
    left["namespaces"] = netns.list_with_prefix(namespace_prefix(LAB_NAME))
    left["processes_in_state_dir"] = _mentioning(str(lab.state_dir))
    result = report(started, args, measured, bench)
    result["all_goals_met"] = bool(result["goals"]) and all(result["goals"].values())
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["other_lab_namespaces_at_end"] = _other_namespaces()
    info["background_busy_cpus"] = measured["noise"]["background_busy_cpus"]
    result["machine"] = info
    result["left_behind"] = left
    result["duration_s"] = round(time.time() - started, 1)
    return result


def _mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    return lab_bench_main("bench-overlay-", parse_args(argv), unavailable(), run)


if __name__ == "__main__":
    sys.exit(main())
