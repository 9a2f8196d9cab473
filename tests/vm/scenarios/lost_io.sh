# lost_io: a direct write whose bio the disk holds for LOST_IO_HOLD seconds
# (past detector's --lost-io-after), while dd sleeps waiting for it. The
# bio is still in flight the whole time, so this is no lost wakeup.
LOST_IO_HOLD=5

trigger() {
	rb_disk rb2 hold || return 1
	dd if=/dev/zero of=/dev/rb2 bs=4096 count=1 seek=100 oflag=direct &
	dd_pid=$!
	sleep "$LOST_IO_HOLD"
	if ! kill -0 "$dd_pid"; then
		echo "dd finished although its bio was held"
		return 1
	fi
	rb_disk rb2 release || return 1
	rb_disk rb2 normal || return 1
	wait "$dd_pid" || { echo "dd failed"; return 1; }
	echo "dd's bio completed after being held ${LOST_IO_HOLD}s"
}
