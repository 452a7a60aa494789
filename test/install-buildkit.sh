#!/usr/bin/env bash
# install-buildkit.sh VERSION DEST — build buildkitd and buildctl from the Go
# proxy into DEST, the way NOTES-qemu.md found to work here: in a writable
# copy of the module, with -mod=mod.
set -euo pipefail
version=${1:?usage: install-buildkit.sh VERSION DEST}
dest=${2:?usage: install-buildkit.sh VERSION DEST}
src=$(go mod download -json "github.com/moby/buildkit@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "install-buildkit: could not download buildkit $version" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/buildkit.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
mkdir -p "$dest.tmp"
(cd "$work" && CGO_ENABLED=0 go build -mod=mod -tags no_btrfs -o "$dest.tmp/" ./cmd/buildkitd ./cmd/buildctl)
rm -rf "$dest" && mv "$dest.tmp" "$dest"
"$dest/buildctl" --version
