# Reads from a disk with T10 protection information (scsi_debug DIF type 1
# with DIX): each read's integrity is verified after it completes.

run() {
	local disk
	step modprobe modprobe scsi_debug dif=1 dix=1 dev_size_mb=64 || return
	step settle udevadm settle || return
	disk=$(scsi_debug_disks | head -n 1)
	[ -n "$disk" ] || { echo "scsi_debug made no disk" >> "$OUT/problems"; return 1; }
	watch_dev "$disk" || return
	step write dd if=/dev/urandom of="$disk" bs=1M count=16 oflag=direct || return
	step fio-read fio_read_dev "$disk" 4 || return
	step buffered-read dd if="$disk" of=/dev/null bs=1M count=32 || return
}

cleanup() {
	udevadm settle
	modprobe -r scsi_debug
}
