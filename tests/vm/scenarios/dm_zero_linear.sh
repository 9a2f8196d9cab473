# dm_zero_linear (issue 8, case 2): direct reads alternating between a
# dm-zero and a dm-linear device. Both map reads through clone bios from
# bio slabs of the same size: dm-linear submits its clone to the loop
# device under it; dm-zero zero-fills its clone and ends it inside its map
# function, never submitting it, often at an address a dm-linear clone
# just used, with the same bi_end_io (clone_endio).
. /bench/scenarios/dm.sh
PAIRS=32
SECTORS=32768

setup() {
	load_list dm || return 1
	loop_file /dev/loop2 /tmp/linear 16 || return 1
	dmsetup create rbzero --table "0 $SECTORS zero" || return 1
	dmsetup create rblinear --table "0 $SECTORS linear /dev/loop2 0" || return 1
	echo "ok $name: zero $(dm_dev rbzero) linear $(dm_dev rblinear) pairs $PAIRS" \
		"clone_endio $(kernel_symbol clone_endio)" >> "$OUT/module.txt"
}

trigger() {
	i=0
	while [ "$i" -lt "$PAIRS" ]; do
		for dev in rblinear rbzero; do
			dd if="/dev/mapper/$dev" of=/dev/null bs=4096 count=1 skip="$i" \
				iflag=direct 2> /dev/null || return 1
		done
		i=$((i + 1))
	done
	echo "$PAIRS direct reads from each, alternating"
}

cleanup() {
	dmsetup remove rbzero
	dmsetup remove rblinear
	losetup -d /dev/loop2
	rm -f /tmp/linear
}
