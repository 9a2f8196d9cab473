# dm_thin_unprovisioned (issue 8, case 2): direct 64 KiB reads of a thin
# volume, every other block of which was written (provisioned) before. dm
# maps each read through a clone bio. A provisioned block's clone is
# remapped and submitted to the pool's data device; an unprovisioned
# block's is never submitted: the pool's worker zero-fills it and ends it
# (process_cell -> provision_block -> bio_endio), often at the address the
# clone of the read before used, with the same bi_end_io (clone_endio).
. /bench/scenarios/dm.sh
READS=64
SECTORS=131072
# the pool's data block: 128 sectors, 64 KiB
BLOCK_KIB=64

setup() {
	load_list dm || return 1
	loop_file /dev/loop0 /tmp/thin-meta 8 || return 1
	loop_file /dev/loop1 /tmp/thin-data 64 || return 1
	dmsetup create rbpool --table "0 $SECTORS thin-pool /dev/loop0 /dev/loop1 128 0" || return 1
	dmsetup message rbpool 0 "create_thin 0" || return 1
	dmsetup create rbthin --table "0 $SECTORS thin /dev/mapper/rbpool 0" || return 1
	i=0
	while [ "$i" -lt "$READS" ]; do
		dd if=/dev/urandom of=/dev/mapper/rbthin bs=${BLOCK_KIB}k count=1 seek="$i" \
			oflag=direct 2> /dev/null || return 1
		i=$((i + 2))
	done
	echo "ok $name: thin $(dm_dev rbthin) pool $(dm_dev rbpool) reads $READS," \
		"every other block provisioned, clone_endio $(kernel_symbol clone_endio)" >> "$OUT/module.txt"
}

trigger() {
	dd if=/dev/mapper/rbthin of=/dev/null bs=${BLOCK_KIB}k count="$READS" iflag=direct
}

cleanup() {
	dmsetup remove rbthin
	dmsetup remove rbpool
	losetup -d /dev/loop0
	losetup -d /dev/loop1
	rm -f /tmp/thin-meta /tmp/thin-data
}
