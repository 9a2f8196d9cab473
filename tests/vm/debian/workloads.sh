# Helpers of the benign workloads: fio jobs, short (seconds: the guest runs
# under emulation) but shaped like real use, and file system rounds.

# Small synchronous writes, each followed by fsync: a database's log.
fio_fsync() {
	fio --name=fsync --directory="$1" --rw=randwrite --bs=4k --size=8m \
		--ioengine=psync --fsync=1 --numjobs=2 --time_based --runtime=4 \
		--group_reporting
}

# Direct I/O, queued: a database's data files.
fio_direct() {
	fio --name=direct --directory="$1" --rw=randrw --bs=16k --size=16m \
		--direct=1 --ioengine=libaio --iodepth=16 --numjobs=2 \
		--time_based --runtime=4 --group_reporting
}

# Direct random reads of a whole device.
fio_read_dev() {
	fio --name=read --filename="$1" --rw=randread --bs=4k --direct=1 \
		--ioengine=libaio --iodepth=16 --time_based --runtime="${2:-4}" \
		--group_reporting
}

# mkfs_fs ext4|xfs DEV
mkfs_fs() {
	case "$1" in
	ext4) mkfs.ext4 -q -F "$2" ;;
	xfs) mkfs.xfs -q -f "$2" ;;
	esac
}

# fs_round FS DEV: a file system made, mounted, written both ways, trimmed
# and unmounted, each a step.
fs_round() {
	local fs=$1 dev=$2
	step "mkfs.$fs" mkfs_fs "$fs" "$dev" || return
	step "mount.$fs" mount -t "$fs" "$dev" /mnt/work || return
	step "fio-fsync.$fs" fio_fsync /mnt/work || return
	step "fio-direct.$fs" fio_direct /mnt/work || return
	step "fstrim.$fs" fstrim -v /mnt/work || return
	step "umount.$fs" umount /mnt/work
}

# The disk scsi_debug created (its first one, or all with "all").
scsi_debug_disks() {
	local d
	for d in /sys/bus/pseudo/drivers/scsi_debug/adapter*/host*/target*/*/block/*; do
		[ -e "$d" ] && echo "/dev/${d##*/}"
	done
}
