# The benign suite: real workloads on real kernel subsystems, each under its
# own `detector trace` session. Healthy kernel behaviour: the host requires
# zero findings of every recording.
#
# A workload file (benign/NAME.sh) defines run(), traced, made of `step`s
# (lib.sh) and `watch_dev` calls naming the disks whose bios detector must
# see; it may define setup(), run before the session starts (loading the
# modules a server would have loaded already), and cleanup(), run after the
# session whatever happened.
# Per workload, /host/out/benign/NAME/ gets: trace.rec, trace.err,
# trace.rc, findings-live.txt, markers.tsv, devices.tsv, steps.log,
# dmesg.txt, verdict ("ok" or what failed), problems.

# shellcheck source=workloads.sh
. /host/bench/workloads.sh

run_workload() {
	local name=$1 rc
	OUT=/host/out/benign/$name
	export OUT
	mkdir -p "$OUT"
	: > "$OUT/markers.tsv"
	: > "$OUT/devices.tsv"
	unset -f setup run cleanup
	# shellcheck source=/dev/null
	. "/host/bench/benign/$name.sh"
	say "workload $name start"
	echo "detector-bench: workload $name start" > /dev/kmsg
	if declare -F setup > /dev/null && ! (setup) >> "$OUT/steps.log" 2>&1; then
		echo "setup failed" > "$OUT/verdict"
		say "workload $name FAIL (setup)"
		return 1
	fi
	# this workload's thresholds (FLAGS_<name> in the config)
	local flags_var="FLAGS_$name"
	DETECTOR_FLAGS=${!flags_var}
	if ! start_detector "$OUT"; then
		echo "detector did not start: $(cat "$OUT/problems")" > "$OUT/verdict"
		say "workload $name FAIL (detector did not start)"
		return 1
	fi
	mark start "$name"
	(run)
	rc=$?
	mark end "$name" "$rc"
	stop_detector "$OUT"
	if declare -F cleanup > /dev/null; then
		(cleanup) >> "$OUT/steps.log" 2>&1
	fi
	dmesg | sed -n "/detector-bench: workload $name start/,\$p" > "$OUT/dmesg.txt"
	if [ "$rc" = 0 ]; then
		echo ok > "$OUT/verdict"
		say "workload $name ok"
	else
		echo "the workload failed (exit $rc): $(tail -n 3 "$OUT/problems" 2> /dev/null)" > "$OUT/verdict"
		say "workload $name FAIL"
	fi
	return "$rc"
}

run_benign_suite() {
	local name failed=0
	for name in $WORKLOADS; do
		run_workload "$name" || failed=1
	done
	return "$failed"
}
