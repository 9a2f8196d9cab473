# delete_during_io (issue 8, case 3): a scsi_debug disk deleted
# (/sys/block/sdX/device/delete, as blktests block/027 does) while direct
# writes and reads keep being submitted to it. Bios submitted while the
# disk goes away fail with an I/O error inside their own submission:
# del_gendisk() marks the disk dead and wakes the bios waiting in
# bio_queue_enter(), which end them there; nothing completes late. The
# queue is held frozen around the deletion (racebench's queue_freeze; see
# tests/kmod/freeze.c), so that bios are waiting there when it comes.
. /bench/scenarios/scsi.sh
BLOCKS=8192

setup() {
	scsi_debug_add dev_size_mb=64 || return 1
	echo "ok $name: disk $(scsi_dev)" >> "$OUT/module.txt"
}

trigger() {
	disk=$(scsi_disk)
	ioloop write "/dev/$disk" "$BLOCKS" 20 > /tmp/ioloop-write &
	writer=$!
	ioloop read "/dev/$disk" "$BLOCKS" 20 > /tmp/ioloop-read &
	reader=$!
	sleep 1
	rb_run queue_freeze "/dev/$disk" || return 1
	sleep 1
	# it waits for the unfreeze in its last step
	echo 1 > "/sys/block/$disk/device/delete" &
	deleter=$!
	sleep 2
	rb_run queue_unfreeze || return 1
	wait "$deleter" || return 1
	wait "$writer"
	wait "$reader"
	cat /tmp/ioloop-write /tmp/ioloop-read
	if [ -e "/sys/block/$disk" ]; then
		echo "$disk is still there"
		return 1
	fi
	# the I/O went on into the deletion: some of it failed
	grep -q 'errors [1-9]' /tmp/ioloop-write /tmp/ioloop-read
}

cleanup() {
	scsi_debug_remove
}
