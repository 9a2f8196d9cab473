# blktests in the Debian guest with detector attached: one `detector trace`
# session per group, each test run on its own (`./check GROUP/NNN`) between
# markers, so that the host can put every finding in the test that was
# running when it fired.
#
# Config: BLKTESTS_TESTS (group/NNN words, in run order; the host has left
# out the tests it skips), PER_TEST_TIMEOUT (seconds; a test that hangs in
# user space is killed, one that wedges the kernel ends the guest),
# BLKTESTS_QUICK (if set: blktests' quick run, timed tests cut to that many
# seconds).
# Per group, /host/out/blktests/GROUP/ gets the session's files
# (trace.rec, trace.err, trace.rc, markers.tsv) and logs/NNN.log, the
# output of ./check; blktests' own results go to /host/out/blktests/results.

BLKTESTS_DIR=/root/blktests

blktests_config() {
	cat > "$BLKTESTS_DIR/config" << EOF
TEST_DEVS=($SCRATCH_VIRTIO $SCRATCH_SCSI $SCRATCH_NVME)
NVMET_TRTYPES=tcp
EOF
	if [ -n "${BLKTESTS_QUICK:-}" ]; then
		printf 'QUICK_RUN=1\nTIMEOUT=%s\n' "$BLKTESTS_QUICK" >> "$BLKTESTS_DIR/config"
	fi
}

run_group() {
	local group=$1 test rc
	OUT=/host/out/blktests/$group
	export OUT
	mkdir -p "$OUT/logs"
	: > "$OUT/markers.tsv"
	say "blktests group $group"
	start_detector "$OUT" || return 1
	for test in $BLKTESTS_TESTS; do
		[ "${test%%/*}" = "$group" ] || continue
		say "blktests $test"
		echo "detector-bench: blktests $test start" > /dev/kmsg
		mark start "$test"
		(cd "$BLKTESTS_DIR" &&
			timeout -k 10 "$PER_TEST_TIMEOUT" ./check -o /host/out/blktests/results "$test") \
			> "$OUT/logs/${test#*/}.log" 2>&1
		rc=$?
		mark end "$test" "$rc"
		sync
	done
	stop_detector "$OUT"
}

run_blktests() {
	local group groups failed=0
	say "copying blktests"
	rm -rf "$BLKTESTS_DIR"
	cp -a /host/blktests "$BLKTESTS_DIR" || return 1
	blktests_config
	groups=$(for t in $BLKTESTS_TESTS; do echo "${t%%/*}"; done | awk '!seen[$0]++')
	for group in $groups; do
		run_group "$group" || failed=1
	done
	return "$failed"
}
