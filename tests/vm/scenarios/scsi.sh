# scsi_debug disks for the scenarios: a real SCSI disk (sd) on scsi_debug's
# emulated host, loaded with each scenario's parameters, removed after it.

# Loads scsi_debug with parameters "$@" and waits for its disk (sd probes
# asynchronously); the disk's name is kept in /tmp/scsi-disk, since setup()
# runs in a subshell.
scsi_debug_add() {
	load_list scsi || return 1
	insmod /lib/modules/scsi_debug.ko "$@" || return 1
	i=0
	until disk=$(scsi_debug_disk) && [ -b "/dev/$disk" ]; do
		i=$((i + 1))
		if [ "$i" -gt 100 ]; then
			echo "scsi_debug $* made no disk"
			return 1
		fi
		sleep 0.1
	done
	echo "$disk" > /tmp/scsi-disk
	echo "scsi_debug $*: $disk ($(cat "/sys/block/$disk/dev"))"
}

scsi_debug_disk() {
	for b in /sys/bus/pseudo/drivers/scsi_debug/adapter*/host*/target*/*/block/*; do
		if [ -e "$b" ]; then
			basename "$b"
			return 0
		fi
	done
	return 1
}

scsi_disk() {
	cat /tmp/scsi-disk
}

# "MAJ:MIN" of the scsi_debug disk.
scsi_dev() {
	cat "/sys/block/$(scsi_disk)/dev"
}

scsi_debug_remove() {
	rm -f /tmp/scsi-disk
	rmmod scsi_debug
}
