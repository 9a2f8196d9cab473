# blk-throttle: direct reads and writes from a cgroup whose io.max limits a
# null_blk disk to 256 KiB/s, so the throttle holds bios back for seconds
# (longer than the bench's lost-I/O threshold) before the device sees them.
# The device is fast and completes each bio as soon as it gets it: nothing
# stalls.

CG=/sys/fs/cgroup/bench-throttle
LIMIT=262144

setup() {
	modprobe null_blk nr_devices=1 queue_mode=2 irqmode=0 gb=1 &&
		udevadm settle &&
		echo +io > /sys/fs/cgroup/cgroup.subtree_control &&
		mkdir -p "$CG"
}

# in_cgroup CMD...: runs CMD as a member of the throttled cgroup.
in_cgroup() {
	sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$@"
}

# throttled NAME SECONDS CMD...: a step that the limit must hold back for
# at least SECONDS, or it did not test what it is for.
throttled() {
	local name=$1 least=$2 start
	shift 2
	start=$SECONDS
	step "$name" in_cgroup "$@" || return
	if [ $((SECONDS - start)) -lt "$least" ]; then
		echo "$name took $((SECONDS - start)) s: the throttle held nothing back" >> "$OUT/problems"
		return 1
	fi
}

run() {
	local majmin
	watch_dev /dev/nullb0 || return
	majmin=$(lsblk -dno MAJ:MIN /dev/nullb0 | tr -d ' ')
	step limit sh -c "echo '$majmin rbps=$LIMIT wbps=$LIMIT' > $CG/io.max" || return
	# 2 MiB each way at 256 KiB/s: the last bio waits about 8 s.
	throttled read 6 dd if=/dev/nullb0 of=/dev/null bs=512k count=4 iflag=direct || return
	throttled write 6 dd if=/dev/zero of=/dev/nullb0 bs=512k count=4 oflag=direct || return
	throttled parallel 6 fio --name=throttled --filename=/dev/nullb0 --rw=randrw \
		--bs=64k --direct=1 --ioengine=libaio --iodepth=8 --numjobs=2 \
		--size=2m --group_reporting || return
}

cleanup() {
	echo "$(lsblk -dno MAJ:MIN /dev/nullb0 | tr -d ' ') rbps=max wbps=max" > "$CG/io.max"
	rmdir "$CG"
	modprobe -r null_blk
}
