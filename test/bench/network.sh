#!/usr/bin/env bash
# network.sh — TCP throughput between the host and a container, vzrun next
# to runc, from one run. Each runtime's container gets a network namespace
# made the way CRI or BuildKit make one (a veth pair, one end in the
# namespace with an address), and serves tcpbench; the host sends to it
# (up) and receives from it (down). Prints a Markdown table in MB/s.
#
# Environment: VZRUN (default _output/bin/vzrun), RUNC (default runc),
# SECONDS_EACH (default 5).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
vzrun=${VZRUN:-$here/_output/bin/vzrun}
runc=${RUNC:-runc}
secs=${SECONDS_EACH:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/vzrun-netbench.XXXXXX")
tag=$$
cleanup() {
	"$runc" --root "$work/runc-root" delete -f nb-runc >/dev/null 2>&1 || true
	"$vzrun" --root "$work/vz-root" delete -f nb-vz >/dev/null 2>&1 || true
	for r in runc vz; do
		ip netns del "nb$r$tag" 2>/dev/null || true
		ip link del "nbh$r$tag" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -C "$here" -o "$work/tcpbench" ./test/bench/tcpbench
"$here/test/mkbundle.sh" "$work/bundle" >/dev/null
cp "$work/tcpbench" "$work/bundle/rootfs/bin/tcpbench"

# netns RUNTIME SUBNET: a namespace with eth0 at .2, the host's end at .1.
netns() {
	ip netns add "nb$1$tag"
	ip link add "nbh$1$tag" type veth peer name eth0 netns "nb$1$tag"
	ip addr add "10.214.$2.1/24" dev "nbh$1$tag"
	ip link set "nbh$1$tag" up
	ip -n "nb$1$tag" addr add "10.214.$2.2/24" dev eth0
	ip -n "nb$1$tag" link set eth0 up
	ip -n "nb$1$tag" link set lo up
}

# bundle RUNTIME: the server's bundle in that runtime's namespace.
bundle() {
	cp -r "$work/bundle" "$work/b-$1"
	python3 - "$work/b-$1/config.json" "/var/run/netns/nb$1$tag" <<'PY'
import json, sys
p, ns = sys.argv[1], sys.argv[2]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["tcpbench", "-s", ":5201"]
for n in c["linux"]["namespaces"]:
    if n["type"] == "network":
        n["path"] = ns
json.dump(c, open(p, "w"))
PY
}

netns runc 1; bundle runc
netns vz 2; bundle vz
"$runc" --root "$work/runc-root" run -d --bundle "$work/b-runc" nb-runc </dev/null >"$work/runc.out" 2>&1
"$vzrun" --root "$work/vz-root" run -d --bundle "$work/b-vz" nb-vz </dev/null >"$work/vz.out" 2>&1

measure() { "$work/tcpbench" -c "$1:5201" -dir "$2" -t "${secs}s"; }
echo "## TCP throughput host <-> container, $(date -u +%Y-%m-%d), $(nproc) cores, ${secs} s each (MB/s)"
echo
echo "| direction | runc | vzrun | vzrun/runc |"
echo "|---|---|---|---|"
for dir in up down; do
	r=$(measure 10.214.1.2 "$dir")
	v=$(measure 10.214.2.2 "$dir")
	printf '| host %s container | %s | %s | %.2fx |\n' "$([ "$dir" = up ] && echo '->' || echo '<-')" "$r" "$v" "$(echo "$v / $r" | bc -l)"
done
