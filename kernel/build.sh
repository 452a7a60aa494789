#!/usr/bin/env bash
# build.sh ARCH OUT — build the vzrun guest kernel for ARCH (x86_64 or arm64)
# from Debian's linux-source-6.1 and copy it to OUT.
#
# The result is cached outside the repository, keyed by the config fragments,
# this script and the kernel source package version, so CI and later runs
# reuse it: VZRUN_CACHE (default ~/.cache/vzrun)/kernel/ARCH-KEY/.
set -euo pipefail

arch=${1:?usage: build.sh ARCH OUT}
out=${2:?usage: build.sh ARCH OUT}
here=$(cd "$(dirname "$0")" && pwd)
src_tar=/usr/src/linux-source-6.1.tar.xz

case "$arch" in
x86_64) karch=x86_64 target=vmlinux image=vmlinux cross= ;;
arm64) karch=arm64 target=Image image=arch/arm64/boot/Image cross=aarch64-linux-gnu- ;;
*) echo "build.sh: unknown arch $arch (want x86_64 or arm64)" >&2; exit 2 ;;
esac
[ -r "$src_tar" ] || { echo "build.sh: $src_tar missing: apt-get install linux-source-6.1" >&2; exit 1; }

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { echo "$srcver"; cat "$here/build.sh" "$here/config-6.1-common" "$here/config-6.1-$arch"; } | sha256sum | cut -c1-16)
cache=${VZRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vzrun}/kernel/$arch-$key
mkdir -p "$(dirname "$out")"

if [ -s "$cache/$target" ]; then
	echo "kernel: cached $cache/$target"
	cp "$cache/$target" "$out"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vzrun-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "kernel: building linux $srcver for $arch in $work (cache key $key)"
tar -C "$work" -xf "$src_tar"
cd "$work/linux-source-6.1"
make -s ARCH=$karch CROSS_COMPILE=$cross tinyconfig
scripts/kconfig/merge_config.sh -m .config "$here/config-6.1-common" "$here/config-6.1-$arch" >/dev/null
make -s ARCH=$karch CROSS_COMPILE=$cross olddefconfig

# merge_config only warns when Kconfig drops a value; a missing driver would
# only show at boot, so insist that every requested option survived.
missing=$(grep -h '^CONFIG_' "$here/config-6.1-common" "$here/config-6.1-$arch" | grep -v '=n$' |
	while read -r line; do grep -qxF "$line" .config || echo "$line"; done)
if [ -n "$missing" ]; then
	echo "kernel: options not applied (missing dependency?):" >&2
	echo "$missing" >&2
	exit 1
fi

make -s ARCH=$karch CROSS_COMPILE=$cross -j"$(nproc)" $target
mkdir -p "$cache"
cp .config "$cache/config"
cp "$image" "$cache/$target.tmp" && mv "$cache/$target.tmp" "$cache/$target"
cp "$cache/$target" "$out"
echo "kernel: built $cache/$target"
