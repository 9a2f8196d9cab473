/* SPDX-License-Identifier: GPL-2.0 */
/*
 * racebench: reproduces the races of detector's seed bug reports on real
 * kernel objects (bios, completions, md arrays) with the racy interleaving
 * forced by injected delays, each next to its fixed twin.
 *
 * Everything is driven from the guest's shell through debugfs:
 *   /sys/kernel/debug/racebench/run     write "<scenario> [arg]"; the write
 *                                       returns when the scenario is over
 *   /sys/kernel/debug/racebench/disk    write "<disk> <mode> [ms]"
 *   /sys/kernel/debug/racebench/result  the last scenario's verdict line
 *
 * Checked against Debian's 6.1.0 (6.1.192) amd64 kernel.
 */
#ifndef RACEBENCH_H
#define RACEBENCH_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#define RB_NAME "racebench"

struct rb_cmd;

/* How a test disk completes the bios submitted to it. */
enum rb_mode {
	/* from its workqueue, right away */
	RB_NORMAL,
	/* kept until "release" */
	RB_HOLD,
	/* from its workqueue, delay_ms after submission */
	RB_DELAY,
	/* completed, then completed again by a timeout path (seed 002) */
	RB_DUP,
	/* the same, with the timeout path claiming the command first */
	RB_DUP_FIXED,
	/* RB_DUP behind a stacking driver that hooks bi_end_io (see disk.c) */
	RB_SWAP_DUP,
	/* RB_DUP_FIXED behind the same hook: one real completion */
	RB_SWAP_DUP_FIXED,
	/* inside ->submit_bio, in the submitter's context */
	RB_INLINE,
};

/*
 * All completions run on this CPU, from the disk's workqueue (process
 * context, so end_io handlers may sleep to widen a race window). The
 * stuck-handler scenario relies on it: its lock holder sleeps on the other
 * CPU while the handler spins here with interrupts off.
 */
#define RB_COMPLETION_CPU 0

/*
 * The timeout path of RB_DUP fires this long after the normal completion
 * (a disk's delay_ms replaces it when set).
 */
#define RB_DUP_TIMEOUT_MS 300

struct rb_disk {
	struct gendisk *disk;
	char *data;
	sector_t sectors;

	spinlock_t lock;
	/* bios waiting for the worker, and bios held back */
	struct bio_list pending;
	struct bio_list held;
	enum rb_mode mode;
	unsigned int delay_ms;
	/* when set, only bios submitted by this task are held */
	struct task_struct *hold_only;
	/* the dup-mode command whose timeout path is armed */
	struct rb_cmd *armed;

	struct workqueue_struct *wq;
	struct delayed_work work;
};

/* The disks created at load time: two md members and a scratch disk. */
#define RB_NR_DISKS 3
#define RB_SCRATCH 2
extern struct rb_disk *rb_disks[RB_NR_DISKS];

struct rb_disk *rb_disk_create(const char *name, unsigned int mib);
void rb_disk_destroy(struct rb_disk *d);
struct rb_disk *rb_disk_find(const char *name);
void rb_disk_set_mode(struct rb_disk *d, enum rb_mode mode, unsigned int delay_ms);
/* Hands the held bios to the worker; returns how many. */
unsigned int rb_disk_release(struct rb_disk *d);
/* Takes the held bios out, for a caller that completes them itself. */
struct bio *rb_disk_take_held(struct rb_disk *d);
unsigned int rb_disk_nr_held(struct rb_disk *d);
/* Runs the armed dup-mode timeout path now; false if none is armed yet. */
bool rb_disk_fire_timeout(struct rb_disk *d);
/* A one-page write to the disk, not yet submitted. */
struct bio *rb_disk_write_bio(struct rb_disk *d, sector_t sector,
			      bio_end_io_t *end_io, void *private);

/* A recorded md superblock write seen by a test disk (seed 003). */
void rb_md_saw_bio(struct rb_disk *d, struct bio *bio);

/* The scenario's verdict, readable from debugfs and logged. */
void rb_result(const char *fmt, ...) __printf(1, 2);

int rb_onstack(bool fixed);
int rb_lost_wakeup(bool fixed);
int rb_double_complete(bool fixed);
int rb_stuck_handler(bool fixed);
int rb_complete_after_teardown(bool fixed);
int rb_double_complete_lost_events(void);
int rb_endio_swap(bool fixed);
int rb_stall_recovers(void);
int rb_sleeping_handler(void);
int rb_iowait_folio_lock(void);
int rb_iowait_timeout(void);
int rb_late_complete_irq(bool fixed);
int rb_irq_in_user(bool fixed);
int rb_irq_in_user_check(void);
void rb_late_irq_exit(void);
int rb_queue_freeze(const char *path);
int rb_queue_unfreeze(void);
/* The end_io hook of the RB_SWAP_* modes, for the scenarios' verdicts. */
void rb_swap_end_io(struct bio *bio);
int rb_md_prepare(void);
int rb_md_inject(const char *md_path);
int rb_md_check(bool expect_injected);
void rb_md_exit(void);

#endif
