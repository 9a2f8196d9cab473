# fio bursts on null_blk: completions from a timer (irqmode=2), then inline
# in the submitter (irqmode=0), with idle gaps between the bursts.

burst() {
	fio --name=burst --filename=/dev/nullb0 --rw=randrw --bs=4k --direct=1 \
		--ioengine=libaio --iodepth=64 --numjobs=2 --time_based \
		--runtime=2 --group_reporting
}

run() {
	local i
	step load-timer modprobe null_blk nr_devices=1 queue_mode=2 irqmode=2 \
		completion_nsec=50000 hw_queue_depth=64 submit_queues=2 || return
	step settle udevadm settle || return
	watch_dev /dev/nullb0 || return
	for i in 1 2 3; do
		step "burst-timer.$i" burst || return
		sleep 1
	done
	step unload modprobe -r null_blk || return
	step load-inline modprobe null_blk nr_devices=1 queue_mode=2 irqmode=0 || return
	step settle-inline udevadm settle || return
	step burst-inline burst
}

cleanup() {
	modprobe -r null_blk
}
