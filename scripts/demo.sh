#!/usr/bin/env bash
# Bring up a demo lab in network namespaces and show what each fabricd reports.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${1:-labs/basic.clab.yml}
BIN=.venv/bin
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it makes network namespaces)" >&2; exit 1; }

"$BIN/fabric-lab" down "$LAB" >/dev/null
"$BIN/fabric-lab" up "$LAB"
nodes=$("$BIN/python" -c 'import sys; from fabricd.lab.topology import load_topology
t = load_topology(sys.argv[1]); print(" ".join(n.name for n in t.nodes if n.agent_config))' "$LAB")
routers=$("$BIN/python" -c 'import sys; from fabricd.lab.topology import load_topology
t = load_topology(sys.argv[1]); print(" ".join(n.name for n in t.nodes if n.router == "frr"))' "$LAB")

for r in $routers; do
  echo; echo "=== $r: show bgp summary"
  "$BIN/fabric-lab" exec "$r" -- vtysh -c 'show bgp summary'
done
for h in $nodes; do
  echo; echo "=== $h: fabricctl status"
  "$BIN/fabric-lab" exec "$h" -- fabricctl status
done
echo
echo "The lab stays up. Try: $BIN/fabric-lab exec h1 -- lxc list"
echo "Tear it down with: make demo-down   (or $BIN/fabric-lab down $LAB)"
