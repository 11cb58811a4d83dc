#!/usr/bin/env bash
# Install everything fabricd's demo and tests need on a fresh Debian 12 machine:
# the lab's apt packages (without starting any of their services on the machine)
# and a virtualenv in .venv with fabricd, its dev tools and the lab runner (fabric_lab/).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  lxd lxd-client nftables            # LXD daemons inside lab nodes
  frr bird2                          # upstream routers
  openvswitch-switch ovn-central ovn-host  # OVS + OVN inside lab nodes (fabric.ovn), userspace datapath
  dnsmasq-base                       # DHCP/DNS authority (binary only, no system service)
  keepalived                         # bench.authority's same-run failover baseline (VRRP + dnsmasq)
  iproute2 iputils-ping iperf3 tcpdump util-linux openssl
  python3-venv
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
  # Packages such as frr, bird2 and lxd would start system services on the machine itself.
  # A policy-rc.d that refuses every start keeps all daemons inside lab namespaces.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  trap '[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null
  # OVS and OVN only ever run inside lab nodes (whose /run is private): should a package have
  # started a daemon on the machine despite policy-rc.d, stop it by its pid file.
  for pidfile in /run/openvswitch/*.pid /run/ovn/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(head -n1 "$pidfile")
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    if kill "$pid" 2>/dev/null; then echo "setup: stopped $(basename "$pidfile" .pid) (pid $pid) on the machine"; fi
  done
  echo "setup: installed ${missing[*]}"
fi

# The lab's LXD image is built from Debian's static busybox: fetch the package (not install it) once.
mkdir -p .lab/.cache
if ! ls .lab/.cache/busybox-static_*.deb >/dev/null 2>&1; then
  if ! (cd .lab/.cache && apt-get download -qq busybox-static 2>/dev/null); then
    [ "$(id -u)" = 0 ] && apt-get update -qq
    (cd .lab/.cache && apt-get download -qq busybox-static) || { echo "setup: cannot fetch busybox-static" >&2; exit 1; }
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Installed means both distributions (the agent, and the lab runner from fabric_lab/) and their
# commands; importing would not tell, as the current directory holds both packages.
installed() {
  [ -x .venv/bin/fabricd ] && [ -x .venv/bin/fabric-lab ] && .venv/bin/python -c '
import importlib.metadata as metadata
metadata.version("fabricd"), metadata.version("fabric-lab")
import pytest, hypothesis, ruff, mypy' 2>/dev/null
}
if ! installed || [ pyproject.toml -nt .venv/.installed ] || [ fabric_lab/pyproject.toml -nt .venv/.installed ]; then
  # pip's own chatter goes to a log; it is shown only when the install fails.
  # One pip call for both, so the lab runner's dependency on fabricd is met by this checkout.
  if ! { .venv/bin/pip install -q --upgrade pip \
         && .venv/bin/pip install -q -e '.[dev]' -e ./fabric_lab; } >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "setup: pip install failed" >&2
    exit 1
  fi
  touch .venv/.installed
fi
echo "setup: ok ($(.venv/bin/python --version), fabricd $(.venv/bin/python -c 'import fabricd; print(fabricd.__version__)'))"
