# md_teardown (seed 003): the same, with a superblock write still pending
# when `mdadm --stop` tears the array down.
. /bench/scenarios/md.sh
trigger() { md_cycle inject; }
