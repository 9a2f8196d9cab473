# A disk deleted while fio submits to it (blktests block/027's shape):
# scsi_debug disks with slow commands, queued random reads, then each disk
# deleted through sysfs; fio's I/O errors are the expected outcome.

run() {
	local disks d fio_pid jobs=()
	step modprobe modprobe scsi_debug dev_size_mb=256 max_luns=2 ndelay=10000 max_queue=64 || return
	step settle udevadm settle || return
	disks=$(scsi_debug_disks)
	[ -n "$disks" ] || { echo "scsi_debug made no disk" >> "$OUT/problems"; return 1; }
	for d in $disks; do
		watch_dev "$d" || return
		jobs+=("--name=job${d##*/}" "--filename=$d")
	done
	mark start fio
	fio --rw=randread --direct=1 --ioengine=libaio --iodepth=64 --numjobs=2 \
		--bs=4k --time_based --runtime=8 --group_reporting "${jobs[@]}" \
		>> "$OUT/steps.log" 2>&1 &
	fio_pid=$!
	sleep 4
	for d in $disks; do
		step "delete.${d##*/}" sh -c "echo 1 > /sys/block/${d##*/}/device/delete" || return
	done
	# fio fails with I/O errors on the deleted disks: that is the test
	wait "$fio_pid"
	mark end fio "$?"
	step settle-after udevadm settle
}

cleanup() {
	modprobe -r scsi_debug
}
