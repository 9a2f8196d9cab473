# irq_in_user (issue 8, case 9): the owner of an on-stack completion is this
# shell's child, pinned to cpu 1. Its write to racebench's debugfs file
# arms a timer, waits 10 ms, gives up and returns to user space, where it
# spins (shell builtins: no system calls but a read of /proc/uptime now and
# then). The timer's interrupt, taken while it runs in user mode, completes
# the dead frame on its own kernel stack. Then the owner asks racebench
# what happened (irq_in_user_check), so it only exits once the timer is
# done with its stack.

# Runs racebench scenario $1 as the pinned owner.
iu_run() {
	# shellcheck disable=SC2016 # expanded by the owner's shell
	taskset -c 1 sh -c '
		echo "$1" > "$2/run" || exit 1
		read -r t0 rest < /proc/uptime
		t0=${t0%.*}
		while :; do
			i=0
			while [ "$i" -lt 2000 ]; do i=$((i + 1)); done
			read -r t rest < /proc/uptime
			[ $((${t%.*} - t0)) -ge 2 ] && break
		done
		echo irq_in_user_check > "$2/run"' owner "$1" "$RB"
	rc=$?
	cat "$RB/result" >> "$OUT/module.txt"
	[ "$rc" = 0 ] && grep -q '^ok' "$RB/result"
}

trigger() {
	iu_run irq_in_user
}
