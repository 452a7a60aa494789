#!/usr/bin/env bash
# Run runc's own bats integration suite (tests/integration of the runc Go module) against runc
# and vzrun in the same run and compare, file by file.
#
# Usage (as root):  test/bats/run.sh
#
# Environment:
#   VZRUN         vzrun binary           (default <repo>/_output/bin/vzrun)
#   RUNC          runc binary            (default $VZRUN_CACHE/runc-<version>-x86_64/runc, the
#                                         pinned runc the guest runs too: make initrd builds it)
#   RUNTIMES      which to run           (default "runc vzrun"; e.g. "vzrun")
#   FILES         .bats files, no suffix (default: the CLI-contract subset below)
#   FILTER        regex on test names    (default: all; passed to bats --filter)
#   TEST_TIMEOUT  seconds per test       (default 180; BATS_TEST_TIMEOUT)
#   FILE_TIMEOUT  seconds per file       (default 1500; a backstop around bats)
#   OUT           output dir             (default <repo>/_output); writes bats.md and the raw TAP
#                                         and stderr of each file under bats/<runtime>/
#   VZRUN_CACHE   cache dir              (default $HOME/.cache/vzrun); helper binaries and the
#                                         busybox image go to $VZRUN_CACHE/runc-bats-<version>
#
# Offline: the suite's get-images.sh downloads a busybox and a Debian image. Here it is replaced
# in the work copy by one that prints BUSYBOX_IMAGE, a tarball made from Debian's busybox-static
# (as test/mkbundle.sh makes a rootfs), and DEBIAN_IMAGE, which does not exist: setup_debian
# skips its test instead (appended to helpers.bash, with a `wait` that leaves out bats' timeout
# watchdog). The helper binaries (tests/cmd/*) are built with go install from the same module
# version; one that does not build is left out, and the tests calling it fail.
# bats runs under script(1), as in runc's CI: some tests need a controlling terminal.
#
# The comparison is a report, not a gate: exit 0 unless the suite cannot be set up.
set -euo pipefail

RUNC_MODULE=github.com/opencontainers/runc
RUNC_VERSION=${RUNC_VERSION:-v1.5.2}
HELPERS=(recvtty sd-helper seccompagent fs-idmap pidfd-kill remap-rootfs key_label)
DEFAULT_FILES="create start start_detached start_hello run delete kill exec ps list state pause
	update events hooks spec help version no_pivot root debug tty cwd env umask personality mask dev
	capabilities seccomp pidfd-socket cgroups"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=test/suite-lib.sh
source "$REPO/test/suite-lib.sh"
CACHE=${VZRUN_CACHE:-$HOME/.cache/vzrun}
VZRUN=${VZRUN:-$REPO/_output/bin/vzrun}
RUNC=${RUNC:-$CACHE/runc-$RUNC_VERSION-x86_64/runc}
RUNTIMES=${RUNTIMES:-runc vzrun}
FILES=${FILES:-$DEFAULT_FILES}
FILTER=${FILTER:-}
TEST_TIMEOUT=${TEST_TIMEOUT:-180}
FILE_TIMEOUT=${FILE_TIMEOUT:-1500}
OUT=${OUT:-$REPO/_output}
SUITE=$CACHE/runc-bats-$RUNC_VERSION
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

log() { printf 'bats: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in go bats jq gawk tar timeout pgrep script mkfifo; do
	command -v "$tool" >/dev/null || die "missing tool: $tool (make deps installs bats and gawk)"
done

declare -A BIN=([runc]=$RUNC [vzrun]=$VZRUN)
ORDER=()
for rt in runc vzrun; do
	[[ " $RUNTIMES " == *" $rt "* ]] || continue
	[[ -x ${BIN[$rt]} ]] || die "$rt binary not found: ${BIN[$rt]}"
	ORDER+=("$rt")
done
((${#ORDER[@]} > 0)) || die "RUNTIMES='$RUNTIMES' names neither runc nor vzrun"

# ---------------------------------------------------------------------------------------------
# 1. The suite: tests from the module cache, helper binaries and a busybox image (cached).

MODDIR=$(cd /tmp && go mod download -json "$RUNC_MODULE@$RUNC_VERSION" | jq -r .Dir)
[[ -n $MODDIR && -d $MODDIR/tests/integration ]] || die "go mod download $RUNC_MODULE@$RUNC_VERSION gave no tests/integration"
mkdir -p "$SUITE/bin"

for h in "${HELPERS[@]}"; do
	[[ -x $SUITE/bin/$h || -f $SUITE/bin/$h.failed ]] && continue
	log "building helper $h ($RUNC_MODULE/tests/cmd/$h@$RUNC_VERSION)"
	# key_label is copied into the container's rootfs: static. seccompagent needs libseccomp.
	cgo=1
	[[ $h == key_label ]] && cgo=0
	if ! (cd /tmp && GOBIN=$SUITE/bin CGO_ENABLED=$cgo go install -tags seccomp \
		"$RUNC_MODULE/tests/cmd/$h@$RUNC_VERSION") >"$SUITE/bin/$h.log" 2>&1; then
		log "helper $h does not build (see $SUITE/bin/$h.log); tests that need it will fail"
		touch "$SUITE/bin/$h.failed"
	fi
done

# The busybox image: Debian's busybox-static with its applets as symlinks, and the users and
# groups of the docker-library image the suite normally downloads.
IMAGE=$SUITE/busybox.tar
if [[ ! -s $IMAGE || /bin/busybox -nt $IMAGE || $0 -nt $IMAGE ]]; then
	[[ -x /bin/busybox ]] || die "/bin/busybox missing (apt-get install busybox-static)"
	log "building $IMAGE from /bin/busybox"
	stage=$(mktemp -d)
	chmod 0755 "$stage"
	mkdir -p "$stage"/{bin,dev,etc,home,proc,root,sys,tmp,usr/sbin,var/spool/mail,var/www}
	chmod 1777 "$stage/tmp"
	chmod 0700 "$stage/root"
	install -m 0755 /bin/busybox "$stage/bin/busybox"
	for applet in $(/bin/busybox --list); do
		[[ -e $stage/bin/$applet ]] || ln -s busybox "$stage/bin/$applet"
	done
	cat >"$stage/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		daemon:x:1:1:daemon:/usr/sbin:/bin/false
		bin:x:2:2:bin:/bin:/bin/false
		sys:x:3:3:sys:/dev:/bin/false
		sync:x:4:100:sync:/bin:/bin/sync
		mail:x:8:8:mail:/var/spool/mail:/bin/false
		www-data:x:33:33:www-data:/var/www:/bin/false
		operator:x:37:37:Operator:/var:/bin/false
		nobody:x:65534:65534:nobody:/home:/bin/false
	EOF
	cat >"$stage/etc/group" <<-'EOF'
		root:x:0:
		daemon:x:1:
		bin:x:2:
		sys:x:3:
		adm:x:4:
		tty:x:5:
		disk:x:6:
		wheel:x:10:root
		mail:x:12:
		www-data:x:33:
		operator:x:37:
		users:x:100:
		nogroup:x:65534:
	EOF
	tar --numeric-owner --owner=0 --group=0 -cf "$IMAGE.tmp" -C "$stage" .
	mv "$IMAGE.tmp" "$IMAGE"
	rm -rf "$stage"
fi

# The work copy: tests/ (the suite finds its helpers at tests/cmd/_bin) and go.mod (spec.bats).
WORK=$(mktemp -d /tmp/vzrun-bats.XXXXXX)
chmod 0755 "$WORK"
cp -r "$MODDIR/tests" "$MODDIR/go.mod" "$WORK/"
chmod -R u+w "$WORK"
mkdir -p "$WORK/tests/cmd/_bin"
for h in "${HELPERS[@]}"; do
	if [[ -x $SUITE/bin/$h ]]; then cp "$SUITE/bin/$h" "$WORK/tests/cmd/_bin/"; fi
done
IT=$WORK/tests/integration
cat >"$IT/get-images.sh" <<EOF
#!/bin/bash
# Written by vzrun's test/bats/run.sh: no downloads.
echo "BUSYBOX_IMAGE=$IMAGE"
echo "DEBIAN_IMAGE=$WORK/no-debian-image.tar.xz"
EOF
cat >>"$IT/helpers.bash" <<'EOF'

# Added by vzrun's test/bats/run.sh: there is no Debian image offline.
function setup_debian() {
	skip "no Debian image (offline run)"
}

# Added by vzrun's test/bats/run.sh: with BATS_TEST_TIMEOUT, bats runs its watchdog as a
# background job of the test's shell, and a bare "wait" (events.bats) would wait for it too.
function wait() {
	if [[ $# -eq 0 && -n ${BATS_killer_pid:-} ]]; then
		local pids
		pids=$(jobs -p | grep -vx "$BATS_killer_pid" || true)
		# shellcheck disable=SC2086
		if [[ -n $pids ]]; then builtin wait $pids || true; fi
		return 0
	fi
	builtin wait "$@"
}
EOF
# Module zips keep no mode bits.
find "$WORK/tests" -name '*.sh' -exec chmod +x {} +

# ---------------------------------------------------------------------------------------------
# 2. Run each file against each runtime; clean up after each.

read -r -a SEL <<<"$(echo $FILES)"
LOGS=$OUT/bats
mkdir -p "$OUT"
rm -rf "$LOGS"
for rt in "${ORDER[@]}"; do mkdir -p "$LOGS/$rt"; done

cleanup_dir() { # $1 = runtime binary, $2 = the run's TMPDIR
	local bin=$1 dir=$2 root id pids
	# Containers left under any state root the tests made there ($ROOT/state, $ROOT/alt/state).
	while read -r root; do
		while read -r id; do
			[[ -n $id ]] || continue
			log "cleanup: $(basename "$bin") --root $root delete -f $id"
			"$bin" --root "$root" kill "$id" KILL >/dev/null 2>&1 || true
			timeout 60 "$bin" --root "$root" delete -f "$id" >/dev/null 2>&1 || true
		done < <("$bin" --root "$root" list -q 2>/dev/null || true)
	done < <(find "$dir" -type d -name state 2>/dev/null)
	# Processes still naming the directory (recvtty, a VM whose delete failed): ours, by pid.
	pids=$(pgrep -f -- "$dir/" || true)
	if [[ -n $pids ]]; then
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 1
	fi
	unmount_under "$dir"
	rm -rf "$dir" 2>/dev/null || { unmount_under "$dir"; rm -rf "$dir" || true; }
	# Host cgroups the tests made themselves (set_cgroups_path, the rt test) and did not
	# remove when the runtime put the container elsewhere: the suite's own names, empty ones.
	find /sys/fs/cgroup -mindepth 2 -maxdepth 5 -type d -path '*/runc-cgroups-integration-test*' \
		2>/dev/null | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- |
		while read -r cg; do rmdir "$cg" 2>/dev/null || true; done
}

# On a cgroup v1 host, create_parent makes /sys/fs/cgroup/<controller> for every controller in
# /proc/cgroups, mounted or not: remove the empty, unmounted ones that were not there before.
CGROUP_TOP=$(ls /sys/fs/cgroup 2>/dev/null || true)

cleanup_all() { # on exit, also after an interrupt: what a file left, then the work copy
	local d rt
	for d in "$WORK"/tmp-*; do
		[[ -d $d ]] || continue
		rt=${d#"$WORK"/tmp-}
		cleanup_dir "${BIN[${rt%%-*}]}" "$d"
	done
	for d in /sys/fs/cgroup/*; do
		[[ -d $d && ! -L $d ]] || continue
		grep -qxF "${d##*/}" <<<"$CGROUP_TOP" && continue
		mountpoint -q "$d" || rmdir "$d" 2>/dev/null || true
	done
	unmount_under "$WORK"
	rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup_all EXIT

# Count bats' TAP. Prints "pass fail skip note"; results missing from the plan are failures.
tap_count() { # $1 = tap file, $2 = exit code
	awk -v rc="$2" '
		/^ok / { if ($0 ~ / # skip( |$)/) s++; else p++; next }
		/^not ok / { if ($0 ~ / # skip( |$)/) s++; else f++; if ($0 ~ / # timeout after /) t++; next }
		/^1\.\.[0-9]+$/ { plan = substr($0, 4) + 0; next }
		END {
			note = ""
			n = p + f + s
			if (plan > n) { f += plan - n; note = note "missing " plan - n " of plan;" }
			if (t) note = note t " timed out;"
			if (rc == 124 || rc == 137) note = note "file timeout;"
			if (n == 0 && rc != 0 && f == 0) { f = 1; note = note "exit " rc ";" }
			sub(/;$/, "", note)
			printf "%d %d %d %s\n", p, f, s, note
		}' "$1"
}

# Test names with their result, one a line: "ok|fail|skip<TAB>name".
tap_results() {
	sed -nE 's/^(not ok|ok) [0-9]+ (.*)$/\1\t\2/p' "$1" | awk -F'\t' '{
		name = $2; res = ($1 == "ok") ? "ok" : "fail"
		if (name ~ / # skip( |$)/) res = "skip"
		sub(/ # (skip|timeout after).*$/, "", name)
		print res "\t" name
	}'
}

ROWS=() RAN=() MISSING=()
table_start 16 14 file

mkfifo "$WORK/stdin"
exec 9<>"$WORK/stdin"
batsflags=(--tap --no-tempdir-cleanup)
if [[ -n $FILTER ]]; then batsflags+=(--filter "$FILTER"); fi

for f in "${SEL[@]}"; do
	if [[ ! -f $IT/$f.bats ]]; then
		MISSING+=("$f")
		continue
	fi
	RAN+=("$f")
	line=$(table_name "$f")
	row="| $f |"
	for rt in "${ORDER[@]}"; do
		bin=${BIN[$rt]}
		tdir=$WORK/tmp-$rt-$f
		mkdir -p "$tdir"
		tap=$LOGS/$rt/$f.tap
		start=$(date +%s)
		rc=0
		# Under script(1), as runc's CI runs it: a foreground run with process.terminal and no
		# --console-socket uses the caller's terminal. Its stdin never ends: at EOF script types
		# an end-of-file character into the terminal, which a container would echo.
		cmd=$(printf '%q ' bats "${batsflags[@]}" "$f.bats")
		cmd+=$(printf '>%q 2>%q' "$tap" "$LOGS/$rt/$f.stderr")
		(cd "$IT" && TMPDIR=$tdir RUNC=$bin BATS_TEST_TIMEOUT=$TEST_TIMEOUT \
			timeout -k 30 "$FILE_TIMEOUT" script -qefc "$cmd" /dev/null) \
			>"$LOGS/$rt/$f.tty" 2>&1 <&9 || rc=$?
		secs=$(($(date +%s) - start))
		cleanup_dir "$bin" "$tdir"
		read -r p fl s note < <(tap_count "$tap" "$rc")
		tally "$rt" "$p" "$fl" "$s" "$secs"
		line+=$(table_cell "$p" "$fl" "$s" "$note" "$secs")
		row+=" $p | $fl | $s |"
		if [[ -n $note ]]; then line+=" ($note)"; fi
	done
	echo "$line"
	ROWS+=("$row")
done

table_end
if ((${#MISSING[@]} > 0)); then log "no such file in $RUNC_VERSION's suite: ${MISSING[*]}"; fi

# Tests whose results differ between the two runtimes.
DIFF=()
if ((${#ORDER[@]} == 2)); then
	for f in "${RAN[@]}"; do
		while IFS=$'\t' read -r a b name; do
			DIFF+=("| $f | $name | $a | $b |")
		done < <(LC_ALL=C join -t $'\t' -j 2 -o 1.1,2.1,0 \
			<(tap_results "$LOGS/runc/$f.tap" | LC_ALL=C sort -t $'\t' -k2) \
			<(tap_results "$LOGS/vzrun/$f.tap" | LC_ALL=C sort -t $'\t' -k2) | awk -F'\t' '$1 != $2')
	done
fi

# ---------------------------------------------------------------------------------------------
# 3. Markdown report.
{
	echo "# runc's bats integration suite: runc vs vzrun"
	echo
	echo "runc $RUNC_VERSION \`tests/integration\`, $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(uname -r)," \
		"bats $(bats --version | awk '{print $2}'), per-test timeout ${TEST_TIMEOUT}s."
	for rt in "${ORDER[@]}"; do
		echo "$rt: \`${BIN[$rt]}\` ($("${BIN[$rt]}" --version 2>/dev/null | head -1 || true))."
	done
	if [[ -n $FILTER ]]; then echo "Filter: \`$FILTER\`."; fi
	if ((${#MISSING[@]} > 0)); then echo "Not in the suite: ${MISSING[*]}."; fi
	echo "Raw TAP in \`$LOGS/<runtime>/<file>.tap\`."
	echo
	h="| file |" sep="|---|"
	for rt in "${ORDER[@]}"; do
		h+=" $rt pass | $rt fail | $rt skip |"
		sep+="---:|---:|---:|"
	done
	echo "$h"
	echo "$sep"
	printf '%s\n' "${ROWS[@]}"
	markdown_total TP TF TS
	if ((${#DIFF[@]} > 0)); then
		echo
		echo "## Tests with different results"
		echo
		echo "| file | test | runc | vzrun |"
		echo "|---|---|---|---|"
		printf '%s\n' "${DIFF[@]}"
	fi
} >"$OUT/bats.md"
log "wrote $OUT/bats.md"

summary="bats:"
for rt in "${ORDER[@]}"; do
	summary+=" $rt ${TP[$rt]} passed, ${TF[$rt]} failed, ${TS[$rt]} skipped;"
done
echo "${summary%;}"
exit 0
