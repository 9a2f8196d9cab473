# split_reuse (issue 8, case 2): direct 64 KiB reads from a disk that takes
# at most 4 KiB per request (scsi_debug, max_sectors_kb 4). The block layer
# splits each bio (__bio_split_to_limits): it submits the remainder again
# and hands the 4 KiB front, a new bio chained to it (bi_end_io
# bio_chain_endio), straight on, never through submit_bio. The fronts come
# from the queue's bio_split set, each at an address the one before used.
. /bench/scenarios/scsi.sh
READS=16

setup() {
	scsi_debug_add dev_size_mb=16 || return 1
	echo 4 > "/sys/block/$(scsi_disk)/queue/max_sectors_kb" || return 1
	echo "ok $name: disk $(scsi_dev) reads $READS of 64 KiB, max_sectors_kb" \
		"$(cat "/sys/block/$(scsi_disk)/queue/max_sectors_kb")" \
		"bio_chain_endio $(kernel_symbol bio_chain_endio)" >> "$OUT/module.txt"
}

trigger() {
	dd if="/dev/$(scsi_disk)" of=/dev/null bs=65536 count="$READS" iflag=direct
}

cleanup() {
	scsi_debug_remove
}
