#!/usr/bin/env bash
# run.sh — vzrun next to runc and gVisor's runsc on this machine, from one
# run: end-to-end `run` of busybox `true`, create+start, exec, teardown and
# the boot breakdown; then memory.sh (host memory per idle container, the
# most idle containers that start) and io.sh (stdout through the relay,
# fio on the rootfs). Prints Markdown tables (median, p95, ratios).
# Needs hyperfine. Everything it starts it stops and removes.
#
# Environment: VZRUN, RUNC, RUNSC (see lib.sh), RUNS (default 10),
# BENCH_ONLY=latency to skip memory.sh and io.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${RUNS:-10}
workdir vzrun-bench

bundle "$work/bundle" true
bundle "$work/sleeper" sleep 3600
acc=$(accel "$work/vz-root" "$work/bundle")

# cmd RUNTIME ARGS...: the runtime's command line with its own root (vz
# restores its VMs from templates, its default).
cmd() {
	local r=$1
	shift
	case $r in
	vz) echo "$vzrun --root $work/vz-root $*" ;;
	*) echo "$(bin "$r") --root $work/$r-root $*" ;;
	esac
}

# row NAME: one table row from the runc, runsc and vz JSON of bench $n.
row() {
	local rm rp sm sp vm vp
	read -r rm rp < <(hstats "$work/runc$n.json")
	read -r sm sp < <(hstats "$work/runsc$n.json")
	read -r vm vp < <(hstats "$work/vz$n.json")
	printf '| %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s | %s |\n' "$1" \
		"$rm" "$rp" "$sm" "$sp" "$vm" "$vp" "$(ratio "$vm" "$rm")" "$(ratio "$vm" "$sm")"
}

# bench NAME CMD [PREPARE]: CMD and PREPARE are templates in which @RT@
# stands for the runtime's command line and @DETACH@ for its detach flag.
n=0
bench() {
	local r c p
	n=$((n + 1))
	for r in runc runsc vz; do
		c=${2//@RT@/$(cmd "$r")}
		p=${3:-}
		p=${p//@RT@/$(cmd "$r")}
		p=${p//@DETACH@/$(detach "$r")}
		bgwait hyperfine -N -w 1 -r "$runs" --export-json "$work/$r$n.json" ${p:+--prepare "$p"} "$c" >/dev/null 2>&1 ||
			{ echo "run.sh: $r: $c failed" >&2; exit 1; }
	done
	row "$1"
}

cd "$work"
echo "## vzrun vs runc and runsc, $(date -u +%Y-%m-%d), $(nproc) cores, accelerator: ${acc:-unknown}, $runs runs each"
echo
echo "$("$runc" --version | head -1), runsc $runsc_version (systrap), vzrun $("$vzrun" --version | head -1 | awk '{print $NF}')"
echo
echo "| benchmark | runc median | runc p95 | runsc median | runsc p95 | vzrun median | vzrun p95 | vzrun/runc | vzrun/runsc |"
echo "|---|---|---|---|---|---|---|---|---|"
bench "run busybox true (cold boot)" "env VZRUN_TEMPLATE=0 @RT@ run --bundle $work/bundle b1"
# vzrun's default: the VM restored from a template (the warm-up run saves
# it if there is none). Every row below uses templates too.
bench "run busybox true (VM template)" "@RT@ run --bundle $work/bundle b1"
bench "create + start + delete -f (sleep)" \
	"sh -c '@RT@ create --bundle $work/sleeper b2 </dev/null >/dev/null 2>&1 && @RT@ start b2 && @RT@ delete --force b2'"
for r in runc runsc vz; do
	bgwait $(cmd "$r") run "$(detach "$r")" --bundle "$work/sleeper" e1 </dev/null >/dev/null 2>&1
done
bench "exec true in a running container" "@RT@ exec e1 true"
for r in runc runsc vz; do $(cmd "$r") delete --force e1 >/dev/null 2>&1; done
bench "delete -f of a running container (teardown)" "@RT@ delete --force t1" \
	"sh -c '@RT@ run @DETACH@ --bundle $work/sleeper t1 </dev/null >/dev/null 2>&1'"
echo
echo "Boot breakdown of one cold vzrun run (--debug):"
echo
bgwait $vzcold --debug --root "$work/vz-root" run --bundle "$work/bundle" b3 2>"$work/b3.log" >/dev/null
grep -v guest=runc "$work/b3.log" | grep -o 'msg="[a-z ]*".*' | sed 's/^/    /'
echo
echo "Breakdown of one vzrun run from a VM template (--debug):"
echo
bgwait $vzrun --debug --root "$work/vz-root" run --bundle "$work/bundle" b4 2>"$work/b4.log" >/dev/null
grep -v guest=runc "$work/b4.log" | grep -o 'msg="[a-z ]*".*' | sed 's/^/    /'

[ "${BENCH_ONLY:-}" = latency ] && exit 0
echo
bgwait "$here/test/bench/memory.sh"
echo
bgwait "$here/test/bench/io.sh"
