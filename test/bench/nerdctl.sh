#!/usr/bin/env bash
# nerdctl.sh — `nerdctl run --rm --network none IMG true` with the vz shim
# (io.containerd.vz.v2) next to containerd's runc shim, against one private
# containerd in one run. Prints a Markdown table (median, p95, ratio).
# Needs hyperfine; everything it starts it stops, everything it makes it
# removes.
#
# Environment: CONTAINERD_BIN (the pinned containerd and ctr, default the
# `make test-deps` cache; containerd-shim-runc-v2 is built there from the
# Go proxy if missing), NERDCTL (default the cached nerdctl v2.2.2),
# VZRUN_BIN (the directory of containerd-shim-vz-v2, default _output/bin),
# RUNC (the runc shim's runtime binary, default runc), RUNS (default 10).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${VZRUN_CACHE:-$HOME/.cache/vzrun}
containerd_version=v2.4.2
bin=${CONTAINERD_BIN:-$cache/containerd-$containerd_version}
nerdctl=${NERDCTL:-$cache/nerdctl-v2.2.2/nerdctl}
vzbin=${VZRUN_BIN:-$here/_output/bin}
runc=$(command -v "${RUNC:-runc}")
runs=${RUNS:-10}

for f in "$bin/containerd" "$nerdctl" "$vzbin/containerd-shim-vz-v2"; do
	[ -x "$f" ] || { echo "nerdctl.sh: $f missing (make build test-deps)" >&2; exit 1; }
done
if [ ! -x "$bin/containerd-shim-runc-v2" ]; then
	echo "nerdctl.sh: building containerd-shim-runc-v2 $containerd_version" >&2
	(cd "$bin" && GOBIN=$bin go install -tags "no_btrfs urfave_cli_no_docs" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vzrun-bench-nerdctl.XXXXXX")
ns=bench-$$
# The vz shim keeps each container's state here (shim.StateRoot).
vzstate=/run/vzrun/containerd/$ns
ctrd_pid=
n() { "$nerdctl" --address "$work/containerd.sock" --namespace "$ns" --data-root "$work/nerdctl" "$@"; }

# The shims this containerd started outlive it: found by mentioning.
# shellcheck source=test/bench/procs.sh
. "$(dirname "$0")/procs.sh"

cleanup() {
	set +e
	if [ -n "$ctrd_pid" ]; then
		ids=$(n ps -aq 2>/dev/null)
		[ -z "$ids" ] || n rm -f $ids >/dev/null 2>&1
		kill "$ctrd_pid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$ctrd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$ctrd_pid" 2>/dev/null
		wait "$ctrd_pid" 2>/dev/null
	fi
	for pid in $(mentioning "$work/"); do kill -9 "$pid" 2>/dev/null; done
	# Unmount what is left under the work dir, deepest first, before rm.
	awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m"; done
	rm -rf "$work" "$vzstate"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$work/config.toml" <<EOF
version = 3
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[debug]
  address = "$work/debug.sock"
EOF
# Both shims are found on containerd's PATH.
PATH="$vzbin:$bin:$PATH" "$bin/containerd" --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 300); do [ -S "$work/containerd.sock" ] && break; sleep 0.1; done
[ -S "$work/containerd.sock" ] || { echo "nerdctl.sh: containerd did not start:" >&2; tail "$work/containerd.log" >&2; exit 1; }

# A one-layer OCI image of busybox-static, imported without a registry.
img=localhost/vzrun-bench/busybox:latest
mkdir -p "$work/img/rootfs"/{bin,etc,tmp,root,proc,sys,dev} "$work/img/oci/blobs/sha256"
cp /bin/busybox "$work/img/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$work/img/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$work/img/rootfs/etc/passwd"
printf 'root:x:0:\n' >"$work/img/rootfs/etc/group"
tar -C "$work/img/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf "$work/img/layer.tar" .
diff_id=$(sha256sum "$work/img/layer.tar" | cut -d' ' -f1)
gzip -n "$work/img/layer.tar"
blob() { # FILE: moves it into the layout, prints "digest size"
	local d s
	d=$(sha256sum "$1" | cut -d' ' -f1) s=$(stat -c %s "$1")
	mv "$1" "$work/img/oci/blobs/sha256/$d"
	echo "$d $s"
}
read -r layer_d layer_s < <(blob "$work/img/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
	"$diff_id" >"$work/img/config.json"
read -r config_d config_s < <(blob "$work/img/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
	"$config_d" "$config_s" "$layer_d" "$layer_s" >"$work/img/manifest.json"
read -r manifest_d manifest_s < <(blob "$work/img/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"latest"}}]}' \
	"$manifest_d" "$manifest_s" "$img" >"$work/img/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/img/oci/oci-layout"
tar -C "$work/img/oci" -cf "$work/img/image.tar" .
"$bin/ctr" --address "$work/containerd.sock" -n "$ns" image import "$work/img/image.tar" >/dev/null 2>&1

# The runc shim with this runc binary (nerdctl passes an absolute path as
# the runc shim's BinaryName); the vz shim by its runtime type.
runc_cmd="$nerdctl --address $work/containerd.sock --namespace $ns --data-root $work/nerdctl run --rm --network none --runtime $runc $img true"
vz_cmd="$nerdctl --address $work/containerd.sock --namespace $ns --data-root $work/nerdctl run --rm --network none --runtime io.containerd.vz.v2 $img true"
for c in "$runc_cmd" "$vz_cmd"; do
	$c >/dev/null 2>"$work/check.err" || { echo "nerdctl.sh: $c failed:" >&2; grep -v DEPRECATION "$work/check.err" >&2; exit 1; }
done
id=$(n run -d --network none --runtime io.containerd.vz.v2 "$img" sleep 600 2>/dev/null)
accel=$(sed -n 's/.*"accel": *"\([a-z]*\)".*/\1/p' "$vzstate/$id/state.json")
n rm -f "$id" >/dev/null 2>&1

# stats FILE: median and p95 of hyperfine's JSON times, in ms.
stats() {
	python3 - "$1" <<'PY'
import json, sys
t = sorted(json.load(open(sys.argv[1]))["results"][0]["times"])
med = t[len(t)//2] if len(t) % 2 else (t[len(t)//2-1] + t[len(t)//2]) / 2
p95 = t[min(len(t)-1, int(round(0.95*(len(t)-1))))]
print(f"{med*1000:.0f} {p95*1000:.0f}")
PY
}

hyperfine -N -w 1 -r "$runs" --export-json "$work/runc.json" "$runc_cmd" >/dev/null 2>&1
hyperfine -N -w 1 -r "$runs" --export-json "$work/vz.json" "$vz_cmd" >/dev/null 2>&1
read -r rm rp < <(stats "$work/runc.json")
read -r vm vp < <(stats "$work/vz.json")

echo "## nerdctl run, vz shim vs runc shim, $(date -u +%Y-%m-%d), $(nproc) cores, accelerator: ${accel:-unknown}, $runs runs each"
echo
# nerdctl built from a module copy does not know its version; its path does.
echo "containerd $("$bin/containerd" --version | awk '{print $3}'), nerdctl $("$nerdctl" --version | awk '{print $3}') ($nerdctl), $("$runc" --version | head -1)"
echo
echo "| benchmark | runc shim median | runc shim p95 | vz shim median | vz shim p95 | vz/runc |"
echo "|---|---|---|---|---|---|"
printf '| nerdctl run --rm --network none busybox true | %s ms | %s ms | %s ms | %s ms | %.1fx |\n' \
	"$rm" "$rp" "$vm" "$vp" "$(echo "$vm / $rm" | bc -l)"
