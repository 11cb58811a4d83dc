#!/usr/bin/env bash
# Bring up the basic lab, give each host an instance with routes, and show what r1 learned and
# what each fabricd reports. The lab stays up for exploring; `make demo-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${1:-labs/basic.clab.yml}
BIN=.venv/bin
LABCTL="$BIN/fabric-lab"
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it makes network namespaces)" >&2; exit 1; }

"$LABCTL" down "$LAB" >/dev/null
"$LABCTL" up "$LAB"

# One instance per host asks for routes: the host announces them with its own next hop.
"$LABCTL" exec h1 -- lxc init busybox web1 -q
"$LABCTL" exec h1 -- lxc config device override web1 eth0 \
  ipv4.routes.external=10.201.1.0/24 ipv6.routes.external=fd00:201:1::/64
"$LABCTL" exec h1 -- lxc start web1
"$LABCTL" exec h2 -- lxc init busybox web2 -q
"$LABCTL" exec h2 -- lxc config device override web2 eth0 ipv4.routes.external=10.201.2.0/24
"$LABCTL" exec h2 -- lxc start web2
# A tenant asking for a prefix outside the allowed ranges: refused, shown with its reason.
"$LABCTL" exec h2 -- lxc init busybox rogue -q
"$LABCTL" exec h2 -- lxc config device override rogue eth0 ipv4.routes.external=0.0.0.0/0
"$LABCTL" exec h2 -- lxc start rogue

echo "waiting for r1 to learn the routes..."
learned=no
for _ in $(seq 1 150); do
  if "$LABCTL" exec r1 -- ip route show 10.201.1.0/24 | grep -q via &&
     "$LABCTL" exec r1 -- ip route show 10.201.2.0/24 | grep -q via &&
     "$LABCTL" exec r1 -- ip -6 route show fd00:201:1::/64 | grep -q via; then learned=yes; break; fi
  sleep 0.2
done
if [ "$learned" != yes ]; then
  echo "demo: r1 did not learn the instance routes within 30 s; see $LABCTL exec h1 -- fabricctl events" >&2
  exit 1
fi

echo; echo "=== r1: show bgp summary"
"$LABCTL" exec r1 -- vtysh -c 'show bgp summary'
echo; echo "=== r1: kernel routes learned by BGP"
"$LABCTL" exec r1 -- ip route show proto bgp
"$LABCTL" exec r1 -- ip -6 route show proto bgp
for h in h1 h2; do
  echo; echo "=== $h: fabricctl status"
  rc=0
  "$LABCTL" exec "$h" -- fabricctl status || rc=$?
  # Exit 3 is "degraded": on h2 that is the rogue instance's refused default route, as intended.
  case "$rc" in
    0) ;;
    3) echo "(fabricctl exit 3: degraded; a Nagios-style check would warn about the problems above)" ;;
    *) echo "demo: fabricctl status on $h failed (exit $rc)" >&2; exit 1 ;;
  esac
done
echo
echo "The lab stays up. Try: $LABCTL exec h1 -- lxc stop web1   (and watch r1 withdraw 10.201.1.0/24)"
echo "Tear it down with: make demo-down   (or $LABCTL down $LAB)"
