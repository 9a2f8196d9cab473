# lost_io_fixed: the same direct write, completed by the disk after a
# short delay (well under detector's --lost-io-after).
trigger() {
	rb_disk rb2 delay 300 || return 1
	t0=$(uptime_s)
	dd if=/dev/zero of=/dev/rb2 bs=4096 count=1 seek=100 oflag=direct || return 1
	rb_disk rb2 normal || return 1
	echo "dd took $(echo "$t0 $(uptime_s)" | awk '{ print $2 - $1 }')s"
}
