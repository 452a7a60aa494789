#!/usr/bin/env bash
# Run the OCI runtime-tools validation suite against runc and vzrun and compare.
#
# Usage (as root):  test/conformance/run.sh
#
# Environment:
#   VZRUN         vzrun binary            (default /work/main/_output/bin/vzrun,
#                                          i.e. <repo>/_output/bin/vzrun)
#   RUNC          runc binary             (default /usr/sbin/runc)
#   RUNTIMES      which to run            (default "runc vzrun"; e.g. "vzrun")
#   ONLY          regex on test names     (default: all), e.g. ONLY='^(hostname|state|kill)$'
#   TEST_TIMEOUT  seconds per test binary (default 300)
#   OUT           output dir              (default <repo>/_output); writes conformance.md and
#                                          the raw TAP/stderr of each test under conformance/
#   VZRUN_CACHE   cache dir               (default $HOME/.cache/vzrun); the suite is built in
#                                          $VZRUN_CACHE/runtime-tools-<version>
#   ROOTFS        "module" (default: rootfs-amd64.tar.gz shipped in the module, if valid) or
#                 "busybox" (always build one from Debian's busybox-static /bin/busybox)
#
# The suite's tests are TAP producers; their YAML diagnostics confuse `prove`, so the TAP is
# counted here: "ok N" = pass, "not ok N" = fail, "# SKIP" (or "not ok # TODO") = skip.
# A test binary that exits non-zero or times out without reporting any "not ok", and results
# missing from a "1..N" plan, count as failures too. A test with no results that exits 0 counts
# as one failure if it printed a YAML "error" diagnostic (the hook tests report that way), else
# as one pass (e.g. process_rlimits_fail prints nothing when the runtime rejects the config).
#
# The comparison is a report, not a gate: exit 0 unless the suite cannot be built or run.
set -euo pipefail

RT_MODULE=github.com/opencontainers/runtime-tools
RT_VERSION=v0.9.1-0.20251114084447-edf4cb3d2116

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=test/suite-lib.sh
source "$REPO/test/suite-lib.sh"
VZRUN=${VZRUN:-$REPO/_output/bin/vzrun}
RUNC=${RUNC:-/usr/sbin/runc}
RUNTIMES=${RUNTIMES:-runc vzrun}
ONLY=${ONLY:-}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
OUT=${OUT:-$REPO/_output}
CACHE=${VZRUN_CACHE:-$HOME/.cache/vzrun}
SUITE=$CACHE/runtime-tools-$RT_VERSION
ROOTFS=${ROOTFS:-module}
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

log() { printf 'conformance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in go make tar timeout awk jq; do
	command -v "$tool" >/dev/null || die "missing tool: $tool"
done

# ---------------------------------------------------------------------------------------------
# 1. Build the suite (once; reused while $SUITE/.vzrun-built exists).

build_busybox_rootfs() { # $1 = output tar.gz
	local bb=/bin/busybox stage applet
	[[ -x $bb ]] || die "$bb missing (apt-get install busybox-static)"
	stage=$(mktemp -d)
	chmod 0755 "$stage" # the rootfs root: non-root container users must traverse it
	mkdir -p "$stage"/{bin,dev,proc,sys,etc,tmp,root}
	chmod 1777 "$stage/tmp"
	cp "$bb" "$stage/bin/busybox"
	for applet in $("$bb" --list); do
		[[ $applet == busybox ]] || ln -sf busybox "$stage/bin/$applet"
	done
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/:/bin/false' \
		>"$stage/etc/passwd"
	printf '%s\n' 'root:x:0:' 'tty:x:5:' 'nogroup:x:65534:' >"$stage/etc/group"
	tar --numeric-owner --owner=0 --group=0 -czf "$1.tmp" -C "$stage" .
	mv "$1.tmp" "$1"
	rm -rf "$stage"
}

build_suite() {
	local dir
	log "building runtime-tools $RT_VERSION in $SUITE"
	dir=$(go mod download -json "$RT_MODULE@$RT_VERSION" | jq -r .Dir)
	[[ -n $dir && -d $dir ]] || die "go mod download $RT_MODULE@$RT_VERSION gave no Dir"
	rm -rf "$SUITE"
	mkdir -p "$CACHE"
	cp -r "$dir" "$SUITE"
	chmod -R u+w "$SUITE"
	# The module zip carries only vendor/modules.txt: build from the module cache instead.
	rm -rf "$SUITE/vendor"
	(
		cd "$SUITE"
		export GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
		make runtimetest validation-executables >build.log 2>&1 || {
			tail -30 build.log >&2
			exit 1
		}
	) || die "building the validation suite failed (see $SUITE/build.log)"
	touch "$SUITE/.vzrun-built"
}

[[ -f $SUITE/.vzrun-built && -x $SUITE/runtimetest ]] || build_suite

rootfs=$SUITE/rootfs-amd64.tar.gz
if [[ $ROOTFS == busybox ]]; then
	if [[ ! -f $SUITE/.rootfs-busybox ]]; then
		log "building $rootfs from /bin/busybox"
		build_busybox_rootfs "$rootfs"
		touch "$SUITE/.rootfs-busybox"
	fi
elif [[ -f $SUITE/.rootfs-busybox ]] || ! tar -tzf "$rootfs" ./bin/busybox >/dev/null 2>&1; then
	# Missing (or replaced earlier by ROOTFS=busybox): restore the module's, else build one.
	rm -f "$SUITE/.rootfs-busybox"
	orig=$(go mod download -json "$RT_MODULE@$RT_VERSION" | jq -r .Dir)/rootfs-amd64.tar.gz
	if tar -tzf "$orig" ./bin/busybox >/dev/null 2>&1; then
		install -m 0644 "$orig" "$rootfs"
	else
		log "module has no usable rootfs-amd64.tar.gz; building one from /bin/busybox"
		build_busybox_rootfs "$rootfs"
	fi
fi

mapfile -t TESTS < <(cd "$SUITE" && find validation -mindepth 2 -maxdepth 2 -name '*.t' -type f | sort)
((${#TESTS[@]} > 0)) || die "no validation/*/*.t in $SUITE"
if [[ -n $ONLY ]]; then
	sel=()
	for t in "${TESTS[@]}"; do
		name=$(basename "$t" .t)
		if [[ $name =~ $ONLY ]]; then sel+=("$t"); fi
	done
	((${#sel[@]} > 0)) || die "ONLY='$ONLY' matches no test"
	TESTS=("${sel[@]}")
fi

declare -A BIN=([runc]=$RUNC [vzrun]=$VZRUN)
declare -A ENABLED=()
for rt in $RUNTIMES; do
	[[ -n ${BIN[$rt]:-} ]] || die "unknown runtime in RUNTIMES: $rt (runc or vzrun)"
	[[ -x ${BIN[$rt]} ]] || die "$rt binary not found: ${BIN[$rt]}"
	ENABLED[$rt]=1
done
ORDER=()
for rt in runc vzrun; do if [[ -n ${ENABLED[$rt]:-} ]]; then ORDER+=("$rt"); fi; done

# ---------------------------------------------------------------------------------------------
# 2. Run each test against each runtime.

WORK=$(mktemp -d /tmp/vzrun-conformance.XXXXXX)
chmod 0755 "$WORK" # user-namespaced containers (linux_uid_mappings) must traverse it
LOGS=$OUT/conformance
mkdir -p "$OUT"
rm -rf "$LOGS"
mkdir -p "$LOGS"

cleanup_run() { # $1 = runtime binary, $2 = the test's TMPDIR
	local bin=$1 dir=$2 id pids
	# Containers the test left behind (bundles live under its TMPDIR).
	while read -r id; do
		[[ -n $id ]] || continue
		"$bin" kill "$id" KILL >/dev/null 2>&1 || true
		timeout 60 "$bin" delete --force "$id" >/dev/null 2>&1 || true
	done < <("$bin" list --format json 2>/dev/null |
		jq -r --arg d "$dir/" '(. // [])[] | select((.bundle // "") | startswith($d)) | .id' 2>/dev/null || true)
	# Processes still referring to this TMPDIR (e.g. a VM whose delete failed): ours, by pid.
	pids=$(pgrep -f -- "$dir/" || true)
	if [[ -n $pids ]]; then
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 1
	fi
	unmount_under "$dir"
	rm -rf "$dir" 2>/dev/null || { unmount_under "$dir"; rm -rf "$dir" || true; }
}

trap 'unmount_under "$WORK"; rm -rf "$WORK" 2>/dev/null || true' EXIT

# Count a TAP stream. Prints "pass fail skip note".
tap_count() { # $1 = tap file, $2 = exit code
	awk -v rc="$2" '
		/^ok[ \t]/ || $0 == "ok" {
			if (tolower($0) ~ /#[ \t]*skip/) s++; else p++; next
		}
		/^not ok([ \t]|$)/ {
			if (tolower($0) ~ /#[ \t]*(skip|todo)/) s++; else f++; next
		}
		/^1\.\.[0-9]+/ { sub(/^1\.\./, ""); plan = $0 + 0; hasplan = 1; next }
		/^    "error": / && diag == "" { diag = $0; sub(/^    "error": "/, "", diag); sub(/\\n.*/, "", diag) }
		END {
			note = ""
			n = p + f + s
			if (hasplan && plan > n) { f += plan - n; note = note "missing " plan - n " of plan;" }
			if (rc == 124 || rc == 137) note = note "timeout;"
			else if (rc != 0) note = note "exit " rc ";"
			if (rc != 0 && f == 0) f = 1
			else if (n == 0 && rc == 0) {
				# Tests that report only through a YAML diagnostic (the hook tests), or that
				# print nothing and exit 0 when the runtime refused the config as expected.
				if (diag != "") { f = 1; note = note "no results, error: " substr(diag, 1, 70) ";" }
				else { p = 1; note = note "no results, exit 0;" }
			}
			sub(/;$/, "", note)
			printf "%d %d %d %s\n", p, f, s, note
		}' "$1"
}

ROWS=()
table_start 40 16 test

cd "$SUITE"
for t in "${TESTS[@]}"; do
	name=$(basename "$t" .t)
	line=$(table_name "$name")
	row="| $name |"
	notes=""
	for rt in "${ORDER[@]}"; do
		bin=${BIN[$rt]}
		tdir=$WORK/$rt-$name
		mkdir -p "$tdir" "$LOGS/$rt"
		tap=$LOGS/$rt/$name.tap
		start=$(date +%s)
		rc=0
		TMPDIR=$tdir RUNTIME=$bin timeout -k 10 "$TEST_TIMEOUT" "./$t" \
			>"$tap" 2>"$LOGS/$rt/$name.stderr" </dev/null || rc=$?
		secs=$(($(date +%s) - start))
		cleanup_run "$bin" "$tdir"
		read -r p f s note < <(tap_count "$tap" "$rc")
		tally "$rt" "$p" "$f" "$s" "$secs"
		line+=$(table_cell "$p" "$f" "$s" "$note" "$secs")
		row+=" $p | $f | $s | $secs | ${note//|/\\|} |"
		if [[ -n $note ]]; then notes+=" $rt: ${note:0:60};"; fi
	done
	echo "$line${notes:+  #${notes%;}}"
	ROWS+=("$row")
done
cd /

table_end

# ---------------------------------------------------------------------------------------------
# 3. Markdown report.
{
	echo "# OCI runtime-tools conformance: runc vs vzrun"
	echo
	echo "runtime-tools $RT_VERSION, $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(uname -r)."
	echo "runc: \`${BIN[runc]}\` ($("$RUNC" --version 2>/dev/null | head -1 || true));" \
		"vzrun: \`${BIN[vzrun]}\` ($("$VZRUN" --version 2>/dev/null | head -1 || true))."
	if [[ -n $ONLY ]]; then echo "Subset: ONLY=\`$ONLY\`."; fi
	echo "Counts are TAP results (pass/fail/skip); raw TAP in \`$LOGS/<runtime>/<test>.tap\`."
	echo
	h="| test |" sep="|---|"
	for rt in "${ORDER[@]}"; do
		h+=" $rt pass | $rt fail | $rt skip | $rt sec | $rt note |"
		sep+="---:|---:|---:|---:|---|"
	done
	echo "$h"
	echo "$sep"
	printf '%s\n' "${ROWS[@]}"
	markdown_total TP TF TS TT ""
} >"$OUT/conformance.md"
log "wrote $OUT/conformance.md"

echo "conformance: runc ${TP[runc]} passed, ${TF[runc]} failed, ${TS[runc]} skipped;" \
	"vzrun ${TP[vzrun]} passed, ${TF[vzrun]} failed, ${TS[vzrun]} skipped"
exit 0
