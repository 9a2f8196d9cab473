# dm-thin on the NVMe disk: reads of blocks never written (the pool answers
# them without I/O), then ext4 and xfs with fsync-heavy and direct I/O and
# fstrim (discards passed down to the NVMe disk), and a blkdiscard of the
# whole thin volume.

META_SECTORS=16384

setup() {
	modprobe dm_thin_pool
}

run() {
	local size data
	size=$(blockdev --getsz "$SCRATCH_NVME")
	data=$((size - META_SECTORS))
	step linear dmsetup create bench-meta --table "0 $META_SECTORS linear $SCRATCH_NVME 0" || return
	step linear-data dmsetup create bench-data --table "0 $data linear $SCRATCH_NVME $META_SECTORS" || return
	step zero-meta dd if=/dev/zero of=/dev/mapper/bench-meta bs=4k count=1 oflag=direct || return
	# 64 KiB blocks, no low-water mark
	step pool dmsetup create bench-pool \
		--table "0 $data thin-pool /dev/mapper/bench-meta /dev/mapper/bench-data 128 0" || return
	step create-thin dmsetup message bench-pool 0 "create_thin 0" || return
	step thin dmsetup create bench-thin --table "0 1048576 thin /dev/mapper/bench-pool 0" || return
	watch_dev /dev/mapper/bench-thin && watch_dev "$SCRATCH_NVME" || return
	step read-unprovisioned dd if=/dev/mapper/bench-thin of=/dev/null bs=64k count=256 iflag=direct || return
	fs_round ext4 /dev/mapper/bench-thin || return
	fs_round xfs /dev/mapper/bench-thin || return
	step blkdiscard blkdiscard -f /dev/mapper/bench-thin || return
	step remove dmsetup remove bench-thin bench-pool bench-data bench-meta
}

cleanup() {
	umount /mnt/work 2> /dev/null
	dmsetup remove bench-thin bench-pool bench-data bench-meta 2> /dev/null
	true
}
