#!/usr/bin/env bash
# install-nerdctl.sh VERSION DEST — build nerdctl from the Go proxy into DEST.
# `go install` refuses nerdctl's go.mod (it replaces mod/tigron, a test-only
# module, with a directory the module zip does not contain), so build from a
# copy of the module with an empty stand-in for that directory.
set -euo pipefail
version=${1:?usage: install-nerdctl.sh VERSION DEST}
dest=${2:?usage: install-nerdctl.sh VERSION DEST}
. "$(dirname "$0")/gomodule.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/nerdctl.XXXXXX")
trap 'rm -rf "$work"' EXIT
module_copy "github.com/containerd/nerdctl/v2@$version" "$work"
mkdir -p "$work/mod/tigron"
printf 'module github.com/containerd/nerdctl/mod/tigron\n\ngo 1.24\n' >"$work/mod/tigron/go.mod"
# cmd/nerdctl links one test helper whose only need is the type tig.T.
mkdir -p "$work/mod/tigron/tig"
printf 'package tig\n\nimport "testing"\n\n// T stands in for tigron'"'"'s test handle.\ntype T = testing.TB\n' >"$work/mod/tigron/tig/tig.go"
mkdir -p "$dest"
(cd "$work" && CGO_ENABLED=0 go build -o "$dest/nerdctl" ./cmd/nerdctl)
"$dest/nerdctl" --version
