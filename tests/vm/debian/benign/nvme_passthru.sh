# NVMe passthrough: io_uring commands on the namespace's generic character
# device (/dev/ng0n1), bios built without the block layer's submit path.

run() {
	local ng=${SCRATCH_NVME/nvme/ng}
	ng=/dev/${ng##*/}
	[ -c "$ng" ] || { echo "no $ng" >> "$OUT/problems"; return 1; }
	watch_dev "$SCRATCH_NVME" || return
	step read fio --name=passthru-read --filename="$ng" --ioengine=io_uring_cmd \
		--cmd_type=nvme --rw=randread --bs=4k --iodepth=16 --time_based \
		--runtime=4 || return
	step write fio --name=passthru-write --filename="$ng" --ioengine=io_uring_cmd \
		--cmd_type=nvme --rw=randwrite --bs=4k --iodepth=16 --time_based \
		--runtime=4 || return
}
