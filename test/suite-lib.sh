# Shared by test/bats/run.sh and test/conformance/run.sh, which run a test
# suite against runc and vzrun side by side: unmounting what a run left
# behind, the per-runtime totals, and the terminal table of pass/fail/skip
# counts. Sourced (bash 4).
#
# The caller sets ORDER, the runtimes in column order.

declare -A TP=() TF=() TS=() TT=()
for rt in runc vzrun; do TP[$rt]=0 TF[$rt]=0 TS[$rt]=0 TT[$rt]=0; done

# unmount_under DIR: lazily unmount everything mounted at or below DIR,
# deepest first.
unmount_under() {
	local dir=$1 mp i
	for i in 1 2 3; do
		mapfile -t mps < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' \
			/proc/self/mountinfo | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
		((${#mps[@]} > 0)) || return 0
		for mp in "${mps[@]}"; do
			umount -l "$(printf '%b' "${mp//\\/\\0}")" 2>/dev/null || true
		done
	done
}

# tally RUNTIME PASS FAIL SKIP SECONDS: adds one result to RUNTIME's totals.
tally() {
	TP[$1]=$((TP[$1] + $2)) TF[$1]=$((TF[$1] + $3)) TS[$1]=$((TS[$1] + $4)) TT[$1]=$((TT[$1] + $5))
}

# table_start NAME-WIDTH CELL-WIDTH TITLE: prints the table's header and rule.
table_start() {
	local rt
	TABLE_NW=$1 TABLE_CW=$2
	TABLE_HDR=$(table_name "$3")
	for rt in "${ORDER[@]}"; do TABLE_HDR+=$(printf " | %-${TABLE_CW}s %5s" "$rt p/f/s" sec); done
	echo "$TABLE_HDR"
	echo "${TABLE_HDR//?/-}"
}

# table_name NAME: a row's first column.
table_name() { printf "%-${TABLE_NW}s" "$1"; }

# table_cell PASS FAIL SKIP NOTE SECONDS: one runtime's column of a row; a
# star marks a row with a note.
table_cell() { printf " | %-${TABLE_CW}s %5s" "$1/$2/$3${4:+ *}" "$5"; }

# table_end: the rule and the totals.
table_end() {
	local rt line
	echo "${TABLE_HDR//?/-}"
	line=$(table_name total)
	for rt in "${ORDER[@]}"; do line+=$(table_cell "${TP[$rt]}" "${TF[$rt]}" "${TS[$rt]}" "" "${TT[$rt]}"); done
	echo "$line"
}

# markdown_total CELLS...: the report's totals row, each runtime's CELLS
# (names of the arrays above, or "" for an empty cell) in ORDER.
markdown_total() {
	local rt c ref row="| **total** |"
	for rt in "${ORDER[@]}"; do
		for c in "$@"; do
			ref="$c[$rt]"
			row+=" ${c:+${!ref}} |"
		done
	done
	echo "$row"
}
