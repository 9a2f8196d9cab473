# ext4, then xfs, on an md raid1 of a virtio and a virtio-scsi disk with an
# internal bitmap (superblock writes all along), a scrub
# (sync_action=check), and the array stopped. 320 MB: mkfs.xfs refuses
# less than 300.

# md_mod is loaded on a server with arrays: its hooks attach with the rest.
setup() {
	modprobe md_mod && modprobe raid1
}

run() {
	step create mdadm --create /dev/md0 --run --level=1 --raid-devices=2 \
		--metadata=1.2 --bitmap=internal --size=320M --assume-clean \
		"$SCRATCH_VIRTIO" "$SCRATCH_SCSI" || return
	watch_dev /dev/md0 && watch_dev "$SCRATCH_VIRTIO" && watch_dev "$SCRATCH_SCSI" || return
	fs_round ext4 /dev/md0 || return
	fs_round xfs /dev/md0 || return
	step check md_check md0 || return
	step stop mdadm --stop /dev/md0
}

# A scrub: md reads both halves and compares them.
md_check() {
	local md=/sys/block/$1/md
	echo check > "$md/sync_action" || return
	sleep 1
	while [ "$(cat "$md/sync_action")" != idle ]; do
		sleep 0.5
	done
	echo "mismatch_cnt $(cat "$md/mismatch_cnt")"
}

cleanup() {
	umount /mnt/work 2> /dev/null
	mdadm --stop /dev/md0 2> /dev/null
	mdadm --zero-superblock "$SCRATCH_VIRTIO" "$SCRATCH_SCSI"
}
