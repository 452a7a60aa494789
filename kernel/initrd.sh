#!/usr/bin/env bash
# initrd.sh AGENT RUNC OUT — pack the guest initramfs: the agent as /init
# and a static runc, uncompressed (under TCG, decompression costs more than
# reading the larger image).
set -euo pipefail
agent=${1:?usage: initrd.sh AGENT RUNC OUT}
runc=${2:?usage: initrd.sh AGENT RUNC OUT}
out=${3:?usage: initrd.sh AGENT RUNC OUT}

stage=$(mktemp -d "${TMPDIR:-/tmp}/vzrun-initrd.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{dev,proc,sys,run,tmp,etc,sbin}
# The kernel opens /dev/console for init's stdio before anything is
# mounted, and Go's runtime insists on valid fds 0-2.
mknod -m 0600 "$stage/dev/console" c 5 1
mknod -m 0666 "$stage/dev/null" c 1 3
install -m 0755 "$agent" "$stage/init"
install -m 0755 "$runc" "$stage/sbin/runc"
# runc resolves users by name in the container's rootfs, not here; these
# only keep tools that look at /etc happy.
printf 'root:x:0:0:root:/:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) >"$out.tmp"
mv "$out.tmp" "$out"
