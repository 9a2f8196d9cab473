# md_clean: a raid1 created, written, and stopped with nothing pending.
. /bench/scenarios/md.sh
trigger() { md_cycle clean; }
