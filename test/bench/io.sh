#!/usr/bin/env bash
# io.sh — I/O inside a container, runc next to runsc and vzrun (cold boot),
# from one run:
#  - stdout through the runtime's relay: `dd if=/dev/zero bs=1M count=256`
#    as the container's process, its stdout a pipe to a reader on the host
#    that times first byte to end of file (boot and start-up excluded);
#  - file I/O on the container's rootfs with Debian's fio (its binary and
#    the shared libraries ldd lists, copied into the bundle): sequential
#    write and read (1 MiB blocks, 64 MiB), random 4 KiB write and read
#    (16 MiB), psync, buffered, fio's defaults otherwise (the file's page
#    cache is dropped in the container's kernel before each job; writes
#    end with an fsync), the same job file on the same bundle for runc,
#    runsc and each vzrun rootfs mode: 9p (a VM restored from a template,
#    the default), virtio-fs (a cold boot) and io.vzrun.rootfs=ext4.
# Prints Markdown tables (median and p95 over IO_RUNS runs; a rate's p95
# is the rate of the p95 run, the slow end). Needs fio on the host
# (apt: fio). Everything it starts it stops and removes.
#
# Environment: VZRUN, RUNC, RUNSC (see lib.sh), IO_RUNS (default 5),
# STDOUT_MIB (default 256), FIO (default fio).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${IO_RUNS:-5}
stdout_mib=${STDOUT_MIB:-256}
fio=$(command -v "${FIO:-fio}") || { echo "io.sh: no fio on the host (make deps)" >&2; exit 1; }
workdir vzrun-bench-io

# runcmd RUNTIME: the runtime's command line (vz boots cold, vzt is
# restored from a template).
runcmd() {
	case $1 in
	vz) echo "$vzcold --root $work/vz-root" ;;
	vzt) echo "$vzrun --root $work/vz-root" ;;
	*) echo "$(bin "$1") --root $work/$1-root" ;;
	esac
}

# pstats VALUE...: median and p95 of durations (s) or, with -rate, of rates
# (p95 at the slow end).
pstats() {
	python3 - "$@" <<'PY'
import sys
args = sys.argv[1:]
rate = args[0] == "-rate"
v = sorted(map(float, args[1:] if rate else args), reverse=rate)
med = v[len(v)//2] if len(v) % 2 else (v[len(v)//2-1] + v[len(v)//2]) / 2
p95 = v[min(len(v)-1, int(round(0.95*(len(v)-1))))]
f = lambda x: f"{x:.0f}" if x >= 100 else f"{x:.1f}"
print(f(med), f(p95))
PY
}

# --- stdout through the relay ---------------------------------------------
bundle "$work/dd" sh -c "dd if=/dev/zero bs=1M count=$stdout_mib 2>/dev/null"
cat >"$work/reader.py" <<'PY'
# Reads stdin to EOF; prints MB/s from the first byte to the last.
import os, sys, time
buf, n, t0 = bytearray(1 << 20), 0, None
while True:
    k = sys.stdin.buffer.raw.readinto(buf)
    if not k:
        break
    if t0 is None:
        t0 = time.monotonic()
    n += k
t1 = time.monotonic()
want = int(sys.argv[1])
if n != want:
    sys.exit(f"read {n} bytes, want {want}")
print(f"{n / (t1 - t0) / 1e6:.1f}")
PY
declare -A so
for r in runc runsc vz; do
	rates=()
	for i in $(seq 1 "$runs"); do
		bgwait bash -o pipefail -c "$(runcmd "$r") run --bundle $work/dd so$i </dev/null 2>$work/err |
			python3 $work/reader.py $((stdout_mib << 20)) >$work/rate" ||
			{ echo "io.sh: $r: stdout run $i failed: $(tail -3 "$work/err")" >&2; exit 1; }
		rates+=("$(cat "$work/rate")")
	done
	so[$r]=$(pstats -rate "${rates[@]}")
done

# --- fio on the rootfs ----------------------------------------------------
# The fio bundle: fio and its libraries at the paths ldd names, a writable
# rootfs, fio's JSON on stdout (runsc garbles a regular file: pipe it).
bundle "$work/fio" fio --output-format=json /fio.job
root=$work/fio/rootfs
install -D "$fio" "$root/usr/bin/fio"
ldd "$fio" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
	install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
mkdir -p "$root/data"
cat >"$root/fio.job" <<'EOF'
[global]
directory=/data
ioengine=psync
unlink=1
runtime=60

[seq-write]
rw=write
bs=1m
size=64m
end_fsync=1

[seq-read]
stonewall
rw=read
bs=1m
size=64m

[rand-write]
stonewall
rw=randwrite
bs=4k
size=16m
end_fsync=1

[rand-read]
stonewall
rw=randread
bs=4k
size=16m
EOF
python3 - "$work/fio/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["root"]["readonly"] = False
c["process"]["env"] = ["PATH=/usr/bin:/bin"]
json.dump(c, open(p, "w"), indent="\t")
PY
cp -a "$work/fio" "$work/fio-ext4"
annotate "$work/fio-ext4" io.vzrun.rootfs=ext4

# fiorun RUNTIME BUNDLE ID: one fio run; writes "seqw seqr randw randr" as
# MB/s, MB/s, IOPS, IOPS to $work/fio.res.
fiorun() {
	bgwait bash -o pipefail -c "$(runcmd "$1") run --bundle $2 $3 </dev/null 2>$work/err | cat >$work/fio.json" ||
		{ echo "io.sh: $1: fio in $2 failed: $(tail -3 "$work/err")" >&2; return 1; }
	python3 - "$work/fio.json" <<'PY'
import json, sys
s = open(sys.argv[1]).read()
jobs = {j["jobname"]: j for j in json.loads(s[s.index("{"):])["jobs"]}
print(jobs["seq-write"]["write"]["bw_bytes"] / 1e6, jobs["seq-read"]["read"]["bw_bytes"] / 1e6,
      jobs["rand-write"]["write"]["iops"], jobs["rand-read"]["read"]["iops"])
PY
} >"$work/fio.res"

declare -A fio_res
for c in runc:fio runsc:fio vzt:fio vz:fio vz:fio-ext4; do
	r=${c%%:*} b=${c#*:}
	sw=() sr=() rw=() rr=()
	for i in $(seq 1 "$runs"); do
		fiorun "$r" "$work/$b" "fio$i"
		read -r a b2 c2 d <"$work/fio.res"
		sw+=("$a") sr+=("$b2") rw+=("$c2") rr+=("$d")
	done
	fio_res[$c]="$(pstats -rate "${sw[@]}")|$(pstats -rate "${sr[@]}")|$(pstats -rate "${rw[@]}")|$(pstats -rate "${rr[@]}")"
done

# --- tables ---------------------------------------------------------------
echo "## I/O inside the container, $(date -u +%Y-%m-%d), $(nproc) cores, $runs runs each"
echo
echo "stdout of \`dd if=/dev/zero bs=1M count=$stdout_mib\` through the runtime to a pipe on the host (MB/s, first byte to EOF; vzrun boots cold):"
echo
echo "| runc median | runc p95 | runsc median | runsc p95 | vzrun median | vzrun p95 | vzrun/runc | vzrun/runsc |"
echo "|---|---|---|---|---|---|---|---|"
read -r rm rp <<<"${so[runc]}"
read -r sm sp <<<"${so[runsc]}"
read -r vm vp <<<"${so[vz]}"
printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$rm" "$rp" "$sm" "$sp" "$vm" "$vp" "$(ratio "$vm" "$rm")" "$(ratio "$vm" "$sm")"
echo
echo "fio $("$fio" --version | sed 's/^fio-//') (Debian) on the rootfs, median (p95):"
echo
echo "| job | runc | runsc | vzrun 9p (template) | vzrun virtio-fs | vzrun ext4 | 9p/runc | virtio-fs/runc | ext4/runc |"
echo "|---|---|---|---|---|---|---|---|---|"
k=0
for job in "seq write 1 MiB (MB/s)" "seq read 1 MiB (MB/s)" "rand write 4 KiB (IOPS)" "rand read 4 KiB (IOPS)"; do
	k=$((k + 1))
	cells=() meds=()
	for c in runc:fio runsc:fio vzt:fio vz:fio vz:fio-ext4; do
		read -r m p <<<"$(cut -d'|' -f"$k" <<<"${fio_res[$c]}")"
		cells+=("$m ($p)") meds+=("$m")
	done
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$job" "${cells[@]}" \
		"$(ratio "${meds[2]}" "${meds[0]}")" "$(ratio "${meds[3]}" "${meds[0]}")" "$(ratio "${meds[4]}" "${meds[0]}")"
done
