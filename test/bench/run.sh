#!/usr/bin/env bash
# run.sh — vzrun next to runc on this machine, from one run: end-to-end
# `run` of busybox `true`, create+start, exec, and the boot breakdown.
# Prints Markdown tables (median, p95, ratio to runc). Needs hyperfine.
#
# Environment: VZRUN (default _output/bin/vzrun), RUNC (default runc),
# RUNS (default 10).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
vzrun=${VZRUN:-$here/_output/bin/vzrun}
runc=${RUNC:-runc}
runs=${RUNS:-10}
work=$(mktemp -d "${TMPDIR:-/tmp}/vzrun-bench.XXXXXX")
trap 'for r in runc vz; do for id in $(ls "$work/$r-root" 2>/dev/null); do
	"$([ $r = runc ] && echo "$runc" || echo "$vzrun")" --root "$work/$r-root" delete -f "$id" >/dev/null 2>&1 || true; done; done
	rm -rf "$work"' EXIT

"$here/test/mkbundle.sh" "$work/bundle" >/dev/null
cfg=$work/bundle/config.json
sed -i 's/"terminal": true/"terminal": false/; s/^\(\t*\)"sh"$/\1"true"/' "$cfg"
cp -r "$work/bundle" "$work/sleeper"
sed -i 's/^\(\t*\)"true"$/\1"sleep", "3600"/' "$work/sleeper/config.json"

accel=$("$vzrun" --debug --root "$work/vz-root" run --bundle "$work/bundle" accel-probe 2>&1 >/dev/null | grep "vm ready" | sed -n "s/.* accel=\([a-z]*\).*/\1/p" | head -1)

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

row() { # name runc-json vz-json
	read -r rm rp < <(stats "$2")
	read -r vm vp < <(stats "$3")
	printf '| %s | %s ms | %s ms | %s ms | %s ms | %.1fx |\n' "$1" "$rm" "$rp" "$vm" "$vp" "$(echo "$vm / $rm" | bc -l)"
}

n=0
bench() { # name cmd-runc cmd-vz [prepare-runc prepare-vz]
	n=$((n+1))
	hyperfine -N -w 1 -r "$runs" --export-json "$work/r$n.json" ${4:+--prepare "$4"} "$2" >/dev/null 2>&1
	hyperfine -N -w 1 -r "$runs" --export-json "$work/v$n.json" ${5:+--prepare "$5"} "$3" >/dev/null 2>&1
	row "$1" "$work/r$n.json" "$work/v$n.json"
}

cd "$work"
echo "## vzrun vs runc, $(date -u +%Y-%m-%d), $(nproc) cores, accelerator: ${accel:-unknown}, $runs runs each"
echo
echo "| benchmark | runc median | runc p95 | vzrun median | vzrun p95 | vzrun/runc |"
echo "|---|---|---|---|---|---|"
bench "run busybox true (cold boot)" \
	"$runc --root $work/runc-root run --bundle $work/bundle b1" \
	"$vzrun --root $work/vz-root run --bundle $work/bundle b1"
bench "create + start + delete -f (sleep)" \
	"sh -c '$runc --root $work/runc-root create --bundle $work/sleeper b2 </dev/null >/dev/null 2>&1 && $runc --root $work/runc-root start b2 && $runc --root $work/runc-root delete -f b2'" \
	"sh -c '$vzrun --root $work/vz-root create --bundle $work/sleeper b2 </dev/null >/dev/null 2>&1 && $vzrun --root $work/vz-root start b2 && $vzrun --root $work/vz-root delete -f b2'"
"$runc" --root "$work/runc-root" run -d --bundle "$work/sleeper" e1 </dev/null >/dev/null 2>&1
"$vzrun" --root "$work/vz-root" run -d --bundle "$work/sleeper" e1 </dev/null >/dev/null 2>&1
bench "exec true in a running container" \
	"$runc --root $work/runc-root exec e1 true" \
	"$vzrun --root $work/vz-root exec e1 true"
echo
echo "Boot breakdown of one vzrun run (--debug):"
echo
"$vzrun" --debug --root "$work/vz-root" run --bundle "$work/bundle" b3 2>&1 >/dev/null |
	grep -o 'msg="[a-z ]*".*' | sed 's/^/    /'
