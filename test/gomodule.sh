# gomodule.sh — sourced by the install scripts that build a peer in a copy
# of its Go module (when `go install` cannot build it).

# module_copy MODULE@VERSION DIR: a writable copy of the module, downloaded
# from the Go proxy, in DIR.
module_copy() {
	local src
	src=$(go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "$0: could not download $1" >&2; return 1; }
	cp -r "$src/." "$2/"
	chmod -R u+w "$2"
}
