# procs.sh — sourced by lib.sh and nerdctl.sh: the host processes a
# benchmark run left, found by what their command lines name.

# mentioning S: processes whose command line contains S (this shell left
# out).
mentioning() {
	local p
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = $$ ] && continue
		{ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$1" && echo "${p#/proc/}"
	done
	return 0
}
