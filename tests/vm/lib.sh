# Shell helpers of the VM bench's guest (sourced by /init and the scenarios).
#
# A scenario file (/bench/scenarios/NAME.sh) sets NEEDS_MD=0|1 and defines
# trigger(), which runs while detector traces and fails (non-zero) when the
# race did not happen as scripted; it may define setup(), run before
# detector starts, and cleanup(), run after it stopped, and set TRACE_FLAGS
# (more `detector trace` options, e.g. a smaller ring buffer). $OUT is the
# scenario's directory in the 9p share; what the scenario's own steps found
# out (devices, addresses) goes to $OUT/module.txt, beside the test
# module's verdicts, as "label value" words the host's checks look up.

RB=/sys/kernel/debug/racebench
export MDADM_NO_UDEV=1

say() {
	echo "@@ $*"
}

uptime_s() {
	cut -d' ' -f1 /proc/uptime
}

# Loads the modules named in $1 (file names under /lib/modules, in order).
load_modules() {
	while read -r ko; do
		[ -n "$ko" ] || continue
		insmod "/lib/modules/$ko" || { say "insmod $ko failed"; return 1; }
	done < "$1"
}

# Loads the modules of /lib/modules/$1.list once (the scenarios that need
# scsi_debug or device-mapper load them; the others never see them).
load_list() {
	[ -e "/tmp/loaded-$1" ] && return 0
	load_modules "/lib/modules/$1.list" || return 1
	: > "/tmp/loaded-$1"
}

# The address of kernel function $1 in /proc/kallsyms, as 0x...
kernel_symbol() {
	awk -v f="$1" '$3 == f { print "0x" $1; exit }' /proc/kallsyms
}

# Runs a racebench scenario step; fails unless the module reports "ok".
rb_run() {
	echo "$*" > "$RB/run"
	rc=$?
	cat "$RB/result" >> "$OUT/module.txt"
	[ "$rc" = 0 ] && grep -q '^ok' "$RB/result"
}

rb_disk() {
	echo "$*" > "$RB/disk"
}

# `detector check --json` (the host prints its hook table). Once only: each
# check loads and attaches every program, ~15 s under emulation.
detector_check() {
	[ "$DETECTOR" = 1 ] || return 0
	say "detector check ($1)"
	detector check --json > "/host/check-$1.json" 2> "/host/check-$1.err"
	echo $? > "/host/check-$1.rc"
}

# Starts `detector trace` for scenario output dir $1; returns once every
# probe is attached.
start_detector() {
	rm -f /tmp/ready
	t0=$(uptime_s)
	# shellcheck disable=SC2086 # the flags are word lists
	detector trace --record "$1/trace.rec" --json --ready-file /tmp/ready \
		$DETECTOR_FLAGS $TRACE_FLAGS > "$1/live.jsonl" 2> "$1/trace.err" &
	DET_PID=$!
	ticks=0
	while [ ! -e /tmp/ready ]; do
		if ! kill -0 "$DET_PID" 2> /dev/null; then
			wait "$DET_PID"
			echo $? > "$1/trace.rc"
			echo "detector exited before it was ready" > "$1/verdict"
			return 1
		fi
		ticks=$((ticks + 1))
		if [ "$ticks" -gt $((ATTACH_TIMEOUT * 10)) ]; then
			kill -9 "$DET_PID"
			echo "detector was not ready after ${ATTACH_TIMEOUT}s" > "$1/verdict"
			return 1
		fi
		sleep 0.1
	done
	echo "$t0 $(uptime_s)" | awk '{ printf "%.2f\n", $2 - $1 }' > "$1/attach-seconds"
	say "detector attached in $(cat "$1/attach-seconds")s"
}

# SIGINT ends a session cleanly (summary, record finalized, exit 0).
stop_detector() {
	kill -INT "$DET_PID"
	ticks=0
	while kill -0 "$DET_PID" 2> /dev/null; do
		ticks=$((ticks + 1))
		if [ "$ticks" -gt 600 ]; then
			kill -9 "$DET_PID"
			break
		fi
		sleep 0.1
	done
	wait "$DET_PID"
	echo $? > "$1/trace.rc"
}

# Loads md_mod while detector traces and waits until detector says it
# attached the md hooks (it polls for modules every second).
load_md_mid_session() {
	if ! load_modules /lib/modules/md.list; then
		echo "cannot load md" > "$1/verdict"
		return 1
	fi
	: > "$1/md-loaded-mid-session"
	[ "$DETECTOR" = 1 ] || return 0
	ticks=0
	until grep -q "md hooks attached" "$1/trace.err"; do
		ticks=$((ticks + 1))
		if [ "$ticks" -gt 300 ]; then
			echo "detector did not attach the md hooks after md_mod loaded" > "$1/verdict"
			return 1
		fi
		sleep 0.1
	done
}

# After a scenario, whatever its outcome: its cleanup() (detector has
# stopped), and its functions and flags forgotten before the next one.
end_scenario() {
	end_rc=0
	if type cleanup > /dev/null 2>&1 && ! (cleanup) >> "$OUT/steps.log" 2>&1; then
		echo "cleanup failed" >> "$OUT/steps.log"
		end_rc=1
	fi
	unset -f setup trigger cleanup
	TRACE_FLAGS=
	return "$end_rc"
}

run_scenario() {
	name=$1
	OUT=/host/scenarios/$name
	export OUT
	mkdir -p "$OUT"
	: > "$OUT/module.txt"
	say "scenario $name start"
	t0=$(uptime_s)
	if type setup > /dev/null 2>&1; then
		if ! (setup) >> "$OUT/steps.log" 2>&1; then
			echo "setup failed" > "$OUT/verdict"
			say "scenario $name FAIL (setup)"
			end_scenario
			return 1
		fi
	fi
	if [ "$DETECTOR" = 1 ] && ! start_detector "$OUT"; then
		say "scenario $name FAIL ($(cat "$OUT/verdict"))"
		end_scenario
		return 1
	fi
	if [ "$LATE_MD" = 1 ] && ! load_md_mid_session "$OUT"; then
		[ "$DETECTOR" = 1 ] && stop_detector "$OUT"
		say "scenario $name FAIL ($(cat "$OUT/verdict"))"
		end_scenario
		return 1
	fi
	echo "racebench-bench: $name start" > /dev/kmsg
	(trigger) >> "$OUT/steps.log" 2>&1
	rc=$?
	# let the last events reach the ring buffer reader
	sleep 0.5
	[ "$DETECTOR" = 1 ] && stop_detector "$OUT"
	dmesg | sed -n "/racebench-bench: $name start/,\$p" > "$OUT/dmesg.txt"
	verdict=ok
	[ "$rc" = 0 ] || verdict="trigger failed"
	if ! end_scenario && [ "$rc" = 0 ]; then
		verdict="cleanup failed"
		rc=1
	fi
	secs=$(echo "$t0 $(uptime_s)" | awk '{ printf "%.1f", $2 - $1 }')
	echo "$verdict" > "$OUT/verdict"
	if [ "$rc" = 0 ]; then
		say "scenario $name ok (${secs}s)"
	else
		say "scenario $name FAIL ($verdict, ${secs}s)"
	fi
	return "$rc"
}
