# integrity_reads (issue 8, case 1): direct reads from a disk with T10 PI
# and DIX (scsi_debug dif=1 dix=1). With read_verify on, the block layer
# verifies each read's protection information in kintegrityd:
# bio_integrity_endio() defers the bio's completion to a work item
# (bio_integrity_verify_fn), which calls bio_endio() again. Every read bio
# is ended twice by design, for one completion. The _noverify twin turns
# read_verify off: one bio_endio() per read.
. /bench/scenarios/scsi.sh
READS=32
READ_VERIFY=1

setup() {
	scsi_debug_add dif=1 dix=1 dev_size_mb=64 || return 1
	disk=$(scsi_disk)
	format=$(cat "/sys/block/$disk/integrity/format")
	if [ "$format" = none ]; then
		echo "$disk has no integrity profile"
		return 1
	fi
	echo "$READ_VERIFY" > "/sys/block/$disk/integrity/read_verify" || return 1
	# written with protection information the block layer generates
	dd if=/dev/urandom of="/dev/$disk" bs=4096 count="$READS" oflag=direct || return 1
	echo "ok $name: disk $(scsi_dev) reads $READS format $format read_verify" \
		"$(cat "/sys/block/$disk/integrity/read_verify")" >> "$OUT/module.txt"
}

trigger() {
	dd if="/dev/$(scsi_disk)" of=/dev/null bs=4096 count="$READS" iflag=direct
}

cleanup() {
	scsi_debug_remove
}
