#!/usr/bin/env bash
# mkbundle.sh DIR — make an OCI bundle with a busybox-static rootfs and the
# config.json of `vzrun spec`.
set -euo pipefail
dir=${1:?usage: mkbundle.sh DIR}
busybox=${BUSYBOX:-/bin/busybox}
vzrun=${VZRUN:-$(dirname "$0")/../_output/bin/vzrun}
rm -rf "$dir"
mkdir -p "$dir/rootfs"/{bin,etc,proc,sys,dev,tmp,root}
install -m 0755 "$busybox" "$dir/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
	[ -e "$dir/rootfs/bin/$applet" ] || ln -s busybox "$dir/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/rootfs/etc/group"
"$vzrun" spec --bundle "$dir"
