# lib.sh — what the bench scripts share: the three runtimes, statistics,
# the host processes of a runtime's containers and their PSS, and the
# clean-up of everything a script started. Source it; workdir sets the traps.
#
# Environment: VZRUN (default _output/bin/vzrun), RUNC (default runc),
# RUNSC (default the runsc `make bench` builds into the cache).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${VZRUN_CACHE:-$HOME/.cache/vzrun}
# Pinned as RUNSC_VERSION in the Makefile.
runsc_version=v0.0.0-20260701204157-69c2d17aea96
vzrun=${VZRUN:-$here/_output/bin/vzrun}
runc=$(command -v "${RUNC:-runc}") || runc=${RUNC:-runc}
runsc=${RUNSC:-$cache/runsc-$runsc_version/runsc}
for f in "$vzrun" "$runc" "$runsc"; do
	[ -x "$f" ] || { echo "$(basename "$0"): $f missing (make build initrd; make bench builds runsc)" >&2; exit 1; }
done
# vzcold is vzrun with VM templates off: every row that says "cold boot"
# boots a kernel. A warm (template) row runs "$vzrun" as it is.
vzcold="env VZRUN_TEMPLATE=0 $vzrun"

# bgwait CMD...: runs CMD in the background and waits for it. Ctrl-C then
# reaches the caller's INT trap at once: bash runs no trap for a
# foreground child that handled SIGINT itself and exited (vzrun, hyperfine),
# and a background child ignores it. The caller's clean-up kills $bg_pid.
bg_pid=
bgwait() {
	"$@" &
	bg_pid=$!
	wait "$bg_pid"
}

# bin RUNTIME: the binary of runc, runsc or vz.
bin() {
	case $1 in
	runc) echo "$runc" ;;
	runsc) echo "$runsc" ;;
	vz) echo "$vzrun" ;;
	esac
}

# detach RUNTIME: the flag that makes `run` return once the container runs.
detach() { [ "$1" = runsc ] && echo --detach || echo -d; }

# hstats FILE: median and p95 of hyperfine's JSON times, in ms.
hstats() {
	python3 - "$1" <<'PY'
import json, sys
t = sorted(json.load(open(sys.argv[1]))["results"][0]["times"])
med = t[len(t)//2] if len(t) % 2 else (t[len(t)//2-1] + t[len(t)//2]) / 2
p95 = t[min(len(t)-1, int(round(0.95*(len(t)-1))))]
print(f"{med*1000:.0f} {p95*1000:.0f}")
PY
}

# median N...: the median of the numbers given.
median() {
	python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.1f}")' "$@"
}

# ratio A B: A/B as "N.Nx", "0.NNx" below 1 ("n/a" if B is 0).
ratio() {
	python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("n/a" if not b else f"{a/b:.1f}x" if a >= b else f"{a/b:.2f}x")' "$1" "$2"
}

# descendants PID...: the pids given and all their descendants.
descendants() {
	ps -e -o pid=,ppid= | python3 -c '
import sys
kids = {}
for line in sys.stdin:
    p, pp = map(int, line.split())
    kids.setdefault(pp, []).append(p)
todo, seen = [int(a) for a in sys.argv[1:]], set()
while todo:
    p = todo.pop()
    if p not in seen:
        seen.add(p)
        todo += kids.get(p, [])
print(" ".join(map(str, sorted(seen))))' "$@"
}

# shellcheck source=test/bench/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

# host_pids RUNTIME ROOT: every host process of the containers under ROOT:
# each container's pid (runc: the container's init; runsc: the sandbox;
# vzrun: the monitor that owns the VM), whatever names ROOT on its command
# line (runsc's gofer, vzrun's monitor), and all their descendants (QEMU,
# virtiofsd, runsc's stub processes).
host_pids() {
	local pids
	pids=$("$(bin "$1")" --root "$2" list --format json 2>/dev/null | python3 -c '
import json, sys
try:
    print(" ".join(str(c["pid"]) for c in json.load(sys.stdin) or [] if c.get("pid")))
except ValueError:
    pass')
	descendants $pids $(mentioning "$2")
}

# pss_kib PID...: the sum of their PSS (/proc/PID/smaps_rollup), in KiB.
pss_kib() {
	local p sum=0 kb
	for p in "$@"; do
		kb=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
		sum=$((sum + ${kb:-0}))
	done
	echo "$sum"
}

# reap RUNTIME ROOT: force-delete every container under ROOT, kill what is
# left of their host processes, unmount what is left under ROOT.
reap() {
	local b=$(bin "$1") id pid
	[ -d "$2" ] || return 0
	for id in $("$b" --root "$2" list --quiet 2>/dev/null); do
		timeout 60 "$b" --root "$2" delete --force "$id" >/dev/null 2>&1 || true
	done
	for pid in $(mentioning "$2"); do kill -9 "$pid" 2>/dev/null || true; done
	awk -v r="$2/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	return 0
}

# workdir NAME: makes the script's work dir $work and sets the traps that,
# on exit or Ctrl-C, stop the background job and reap every runtime's
# containers under it, then remove it.
workdir() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	trap cleanup_work EXIT
	trap 'exit 130' INT TERM
}

cleanup_work() {
	set +e
	[ -z "$bg_pid" ] || { kill "$bg_pid" 2>/dev/null; wait "$bg_pid" 2>/dev/null; }
	for r in runc runsc vz; do reap "$r" "$work/$r-root"; done
	rm -rf "$work"
}

# bundle DIR ARGS...: a busybox bundle running ARGS, no terminal.
bundle() {
	local dir=$1
	shift
	VZRUN=$vzrun "$here/test/mkbundle.sh" "$dir" >/dev/null
	python3 - "$dir/config.json" "$@" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = sys.argv[2:]
json.dump(c, open(p, "w"), indent="\t")
PY
}

# annotate BUNDLE KEY=VALUE...: set annotations in BUNDLE's config.json.
annotate() {
	local dir=$1
	shift
	python3 - "$dir/config.json" "$@" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    c.setdefault("annotations", {})[k] = v
json.dump(c, open(p, "w"), indent="\t")
PY
}

# accel ROOT BUNDLE: the accelerator vzrun's VMs use here, from one cold
# debug run of BUNDLE (which must exit by itself) under ROOT.
accel() {
	$vzcold --debug --root "$1" run --bundle "$2" accel-probe 2>&1 >/dev/null |
		sed -n 's/.*msg="vm ready".* accel=\([a-z]*\).*/\1/p' | head -1
}
