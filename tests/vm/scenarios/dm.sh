# device-mapper targets on loop devices. No udev in the guest:
# libdevmapper makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1

# loop_file LOOPDEV FILE MIB: a zeroed file in tmpfs behind LOOPDEV.
loop_file() {
	dd if=/dev/zero of="$2" bs=1M count="$3" 2> /dev/null || return 1
	losetup "$1" "$2"
}

# "MAJ:MIN" of dm device $1.
dm_dev() {
	dmsetup info -c --noheadings -o major,minor "$1" | tr -d ' '
}
