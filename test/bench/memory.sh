#!/usr/bin/env bash
# memory.sh — what an idle container costs the host, runc next to runsc and
# vzrun (VMs restored from a template, the default), from one run: the PSS (/proc/PID/smaps_rollup) of all
# the container's host processes (runc: the container's process; runsc:
# sandbox, gofer and stubs; vzrun: the monitor, QEMU and virtiofsd), for one
# container alone and per container with COUNT idle at once; then how many
# idle vzrun containers start on this machine, one after another, up to MAX.
# Prints Markdown tables. Everything it starts it stops and removes, also
# on error or Ctrl-C.
#
# Environment: VZRUN, RUNC, RUNSC (see lib.sh), COUNT (default 20), MAX
# (default 50), SETTLE (seconds idle before measuring, default 10),
# MIN_AVAIL_MIB (stop starting containers when MemAvailable falls below
# it, default 4096), START_TIMEOUT (seconds, default 120).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
count=${COUNT:-20}
max=${MAX:-50}
settle=${SETTLE:-10}
min_avail=${MIN_AVAIL_MIB:-4096}
start_timeout=${START_TIMEOUT:-120}
workdir vzrun-bench-mem

bundle "$work/sleeper" sleep 36000

# start RUNTIME ID: one idle container, detached; fails after START_TIMEOUT.
start() {
	local c
	case $1 in
	vz) c=$vzrun ;;
	*) c=$(bin "$1") ;;
	esac
	bgwait timeout "$start_timeout" $c --root "$work/$1-root" run "$(detach "$1")" --bundle "$work/sleeper" "$2" \
		</dev/null >/dev/null 2>"$work/start.err"
}

# mib KIB: KiB as MiB with one decimal.
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

avail_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }

# breakdown RUNTIME: each host process of the runtime's containers with its
# PSS: argv[0]'s base name ("vzrun monitor" for vzrun's), like ones summed.
breakdown() {
	python3 - $(host_pids "$1" "$work/$1-root") <<'PY'
import os, sys
seen = {}
for pid in sys.argv[1:]:
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        pss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Pss:"))
    except (OSError, StopIteration):
        continue
    # runsc's stub processes have no command line.
    name = os.path.basename(argv[0].decode()) or "[" + open(f"/proc/{pid}/comm").read().strip() + "]"
    if name == "vzrun":
        name = "vzrun monitor"
    n, k = seen.get(name, (0, 0))
    seen[name] = (n + 1, k + pss)
print(", ".join(f"{name}{f' x{n}' if n > 1 else ''} {k / 1024:.1f} MiB" for name, (n, k) in sorted(seen.items(), key=lambda x: -x[1][1])))
PY
}

per_container() { # RUNTIME N: PSS of all the runtime's host processes / N, KiB
	echo $(($(pss_kib $(host_pids "$1" "$work/$1-root")) / $2))
}

declare -A alone many procs
vz_started=0 vz_stop="" vz_first="" vz_nth="" vz_last="" vz_at_max=""
avail0=$(avail_mib)
for r in runc runsc vz; do
	for i in $(seq 1 "$count"); do
		t0=$(date +%s.%N)
		if ! start "$r" "m$i"; then
			echo "memory.sh: $r: container $i did not start: $(tail -3 "$work/start.err")" >&2
			exit 1
		fi
		t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
		if [ "$i" = 1 ]; then
			sleep "$settle"
			alone[$r]=$(per_container "$r" 1)
			procs[$r]=$(breakdown "$r")
		fi
		if [ "$r" = vz ]; then
			[ "$i" != 1 ] || vz_first=$t
			[ "$i" != "$count" ] || vz_nth=$t
		fi
	done
	sleep "$settle"
	many[$r]=$(per_container "$r" "$count")
	[ "$r" = vz ] || reap "$r" "$work/$r-root"
done

# Keep starting idle vzrun containers, up to MAX.
vz_started=$count
while [ "$vz_started" -lt "$max" ]; do
	if [ "$(avail_mib)" -lt "$min_avail" ]; then
		vz_stop="MemAvailable below $min_avail MiB"
		break
	fi
	t0=$(date +%s.%N)
	rc=0
	start vz "m$((vz_started + 1))" || rc=$?
	if [ "$rc" = 124 ]; then
		vz_stop="container $((vz_started + 1)) did not start within START_TIMEOUT=${start_timeout} s"
		break
	elif [ "$rc" != 0 ]; then
		vz_stop="container $((vz_started + 1)) failed: $(tail -1 "$work/start.err")"
		break
	fi
	vz_last=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	vz_started=$((vz_started + 1))
done
[ -n "$vz_stop" ] || vz_stop="the cap MAX=$max, reached"
sleep "$settle"
vz_at_max=$(per_container vz "$vz_started")
avail1=$(avail_mib)
load=$(cut -d' ' -f1 /proc/loadavg)
reap vz "$work/vz-root"

echo "## Host memory per idle container (PSS of all its host processes), $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo) GiB, vzrun from a VM template"
echo
echo "| idle busybox sleep | runc | runsc | vzrun | vzrun/runc | vzrun/runsc |"
echo "|---|---|---|---|---|---|"
printf '| one container alone | %s MiB | %s MiB | %s MiB | %s | %s |\n' \
	"$(mib "${alone[runc]}")" "$(mib "${alone[runsc]}")" "$(mib "${alone[vz]}")" \
	"$(ratio "${alone[vz]}" "${alone[runc]}")" "$(ratio "${alone[vz]}" "${alone[runsc]}")"
printf '| per container, %s at once | %s MiB | %s MiB | %s MiB | %s | %s |\n' "$count" \
	"$(mib "${many[runc]}")" "$(mib "${many[runsc]}")" "$(mib "${many[vz]}")" \
	"$(ratio "${many[vz]}" "${many[runc]}")" "$(ratio "${many[vz]}" "${many[runsc]}")"
echo
echo "Host processes of one container alone (PSS):"
echo
for r in runc runsc vz; do echo "- $r: ${procs[$r]}"; done
echo
echo "Idle vzrun containers (1024 MiB guests, no memory annotation) started one after another: $vz_started" \
	"(stopped by $vz_stop); $(mib "$vz_at_max") MiB PSS per container with $vz_started;" \
	"host MemAvailable $avail0 -> $avail1 MiB before teardown ($(((avail0 - avail1) / vz_started)) MiB per container, other jobs included); starting one took ${vz_first} s alone," \
	"${vz_nth} s as number $count, ${vz_last:-n/a} s as number $vz_started; load average ${load}."
