# Shell helpers of the Debian guest (sourced by guest-init, the benign
# suite and the blktests runner).
#
# Markers: each session directory ($OUT) gets markers.tsv, lines of
#   start<TAB>NAME<TAB>NS   and   end<TAB>NAME<TAB>NS<TAB>EXIT_STATUS
# with NS in CLOCK_MONOTONIC nanoseconds, the clock detector's events are
# stamped with, so the host can tell which step or test was running when a
# finding fired.

say() {
	echo "@@ $*"
}

# CLOCK_MONOTONIC in ns: ktime_get(), as /proc/timer_list prints it.
now_ns() {
	awk '/^now at/ { print $3; exit }' /proc/timer_list
}

mark() {
	local kind=$1 name=$2
	shift 2
	printf '%s\t%s\t%s' "$kind" "$name" "$(now_ns)" >> "$OUT/markers.tsv"
	[ $# -gt 0 ] && printf '\t%s' "$@" >> "$OUT/markers.tsv"
	echo >> "$OUT/markers.tsv"
}

# step NAME CMD...: runs CMD as a marked step of the current session,
# output to steps.log; fails with CMD's status.
step() {
	local name=$1 rc
	shift
	echo "+ [$name] $*" >> "$OUT/steps.log"
	mark start "$name"
	"$@" >> "$OUT/steps.log" 2>&1
	rc=$?
	mark end "$name" "$rc"
	if [ "$rc" != 0 ]; then
		echo "step $name failed (exit $rc): $*" >> "$OUT/problems"
	fi
	return "$rc"
}

# watch_dev /dev/X: the host checks that detector saw bios of this disk.
watch_dev() {
	local majmin
	majmin=$(lsblk -dno MAJ:MIN "$1" | tr -d ' ') || return 1
	[ -n "$majmin" ] || return 1
	printf '%s\t%s\n' "$majmin" "$1" >> "$OUT/devices.tsv"
}

# The scratch disks the host attached (SCRATCH_* in the config) are there
# and are the size it made them.
check_scratch_disks() {
	local var dev want got
	for var in SCRATCH_VIRTIO SCRATCH_SCSI SCRATCH_NVME; do
		dev=${!var}
		if [ ! -b "$dev" ]; then
			say "FATAL scratch disk $var=$dev is missing"
			ls /sys/block >&2
			return 1
		fi
		want=$((SCRATCH_MB * 1024 * 1024))
		got=$(blockdev --getsize64 "$dev")
		if [ "$got" != "$want" ]; then
			say "FATAL $dev has $got bytes, the host made $want"
			return 1
		fi
	done
}

# start_detector DIR: a `detector trace` session recording to DIR/trace.rec
# with the bench's thresholds; returns once every hook is attached.
start_detector() {
	local dir=$1 ticks=0 t0
	rm -f /run/detector-ready
	t0=$(now_ns)
	# shellcheck disable=SC2086 # DETECTOR_FLAGS is a word list
	detector trace --record "$dir/trace.rec" --ready-file /run/detector-ready --quiet \
		$DETECTOR_FLAGS > "$dir/findings-live.txt" 2> "$dir/trace.err" &
	DET_PID=$!
	while [ ! -e /run/detector-ready ]; do
		if ! kill -0 "$DET_PID" 2> /dev/null; then
			wait "$DET_PID"
			echo $? > "$dir/trace.rc"
			echo "detector exited before it was ready" >> "$dir/problems"
			return 1
		fi
		ticks=$((ticks + 1))
		if [ "$ticks" -gt $((ATTACH_TIMEOUT * 10)) ]; then
			kill -9 "$DET_PID"
			echo "detector was not ready after ${ATTACH_TIMEOUT}s" >> "$dir/problems"
			return 1
		fi
		sleep 0.1
	done
	echo $((($(now_ns) - t0) / 1000000)) > "$dir/attach-ms"
	say "detector attached in $(($(cat "$dir/attach-ms") / 1000))s"
}

# SIGINT ends a session cleanly (summary, record finalized, exit 0).
stop_detector() {
	local dir=$1 ticks=0
	# let the last events reach the ring buffer reader
	sleep 0.5
	kill -INT "$DET_PID"
	while kill -0 "$DET_PID" 2> /dev/null; do
		ticks=$((ticks + 1))
		if [ "$ticks" -gt 1200 ]; then
			echo "detector did not exit within 120s of SIGINT" >> "$dir/problems"
			kill -9 "$DET_PID"
			break
		fi
		sleep 0.1
	done
	wait "$DET_PID"
	echo $? > "$dir/trace.rc"
}
