# The md scenarios' shared steps (see tests/kmod/md_teardown.c).
NEEDS_MD=1

# A raid1 on the two test disks.
md_create() {
	rb_run md_prepare || return 1
	mdadm --create /dev/md0 --level=1 --raid-devices=2 --metadata=1.2 \
		--bitmap=none --run --assume-clean /dev/rb0 /dev/rb1 || return 1
	# clean (in_sync) 50 ms after the last write instead of 200 ms
	echo 0.05 > /sys/block/md0/md/safe_mode_delay
}

# Before detector starts, so that the recording stays short; unless md_mod
# only loads during the session (LATE_MD), then md_cycle creates it.
setup() {
	[ "$LATE_MD" = 1 ] || md_create
}

# Writes to the array, waits until it is clean, then stops it; with
# "inject", a superblock write is left pending for the teardown to run into.
md_cycle() {
	if [ "$LATE_MD" = 1 ]; then
		md_create || return 1
	fi
	dd if=/dev/urandom of=/dev/md0 bs=4096 count=64 oflag=direct || return 1
	i=0
	until [ "$(cat /sys/block/md0/md/array_state)" = clean ]; do
		i=$((i + 1))
		if [ "$i" -gt 100 ]; then
			echo "md0 never became clean: $(cat /sys/block/md0/md/array_state)"
			return 1
		fi
		sleep 0.1
	done
	cat /proc/mdstat
	if [ "$1" = inject ]; then
		rb_run md_inject /dev/md0 || return 1
		mdadm --stop /dev/md0 || return 1
		rb_run md_check || return 1
	else
		mdadm --stop /dev/md0 || return 1
		rb_run md_check_clean || return 1
	fi
	mdadm --zero-superblock /dev/rb0 /dev/rb1
}
