#!/usr/bin/env bash
# install-buildkit.sh VERSION DEST — build buildkitd and buildctl from the Go
# proxy into DEST, the way NOTES-qemu.md found to work here: in a writable
# copy of the module, with -mod=mod.
set -euo pipefail
version=${1:?usage: install-buildkit.sh VERSION DEST}
dest=${2:?usage: install-buildkit.sh VERSION DEST}
. "$(dirname "$0")/gomodule.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/buildkit.XXXXXX")
trap 'rm -rf "$work"' EXIT
module_copy "github.com/moby/buildkit@$version" "$work"
mkdir -p "$dest.tmp"
(cd "$work" && CGO_ENABLED=0 go build -mod=mod -tags no_btrfs -o "$dest.tmp/" ./cmd/buildkitd ./cmd/buildctl)
rm -rf "$dest" && mv "$dest.tmp" "$dest"
"$dest/buildctl" --version
