// SPDX-License-Identifier: GPL-2.0
/*
 * lost_wakeup (seed 004, Red Hat bug 451819): RHEL4's dio_bio_end_aio()
 * read dio->waiter without dio->bio_lock, then dropped its reference. If
 * the waiter registered itself in between, the last completion saw no
 * waiter, skipped wake_up_process(), and the waiter slept in io_schedule()
 * forever on I/O that had already completed.
 *
 *   dio_await_one() (owner)               end_io of the last bio (kworker)
 *                                          waiter_holds_ref = !!dio->waiter (0)
 *   lock; refcount > 1                     [injected window]
 *   dio->waiter = current; unlock
 *   io_schedule()  ...forever
 *                                          remaining = --refcount (1)
 *                                          no waiter seen: no wakeup
 *
 * The fixed twin is upstream 5eb6c7a2 ("dio: lock refcount operations"):
 * the decrement and the waiter check happen together under bio_lock.
 *
 * So that the guest can finish, a delayed work rescues a waiter that is
 * still asleep LW_RESCUE_MS after it went to sleep, and the report says so.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>

#include "racebench.h"

#define LW_BIOS 3
#define LW_RESCUE_MS 8000

/* The part of RHEL4's struct dio this race is about. */
struct tdio {
	spinlock_t bio_lock;
	atomic_t refcount;
	struct task_struct *waiter;
	bool fixed;
	atomic_t seen;
	bool rescued;
	struct delayed_work rescue;
};

/*
 * Test hook: the last completion has (not) seen a waiter. A flag the owner
 * polls rather than a completion: a wakeup of the owner after its I/O
 * completed is exactly what the lost wakeup is about, and the owner's
 * path into io_schedule() must not have one the real code did not have.
 */
static bool lw_last_in_window;

/* Test hook: hold the last completion until the owner is asleep. */
static void lw_wait_for_sleeper(struct tdio *dio)
{
	int i;

	for (i = 0; i < 1000 && !READ_ONCE(dio->waiter); i++)
		msleep(5);
	/* from "waiter registered" to "asleep in io_schedule" is microseconds */
	msleep(200);
}

static void lw_end_io(struct bio *bio)
{
	struct tdio *dio = bio->bi_private;
	bool last = atomic_inc_return(&dio->seen) == LW_BIOS;
	unsigned long flags;
	int remaining;

	bio_put(bio);
	if (!dio->fixed) {
		/* RHEL4 dio_bio_end_aio(): dio->waiter read without the lock */
		int waiter_holds_ref = !!READ_ONCE(dio->waiter);

		if (last) {
			WRITE_ONCE(lw_last_in_window, true);
			lw_wait_for_sleeper(dio);
		}
		remaining = atomic_sub_return(1, &dio->refcount);
		if (remaining == 1 && waiter_holds_ref)
			wake_up_process(dio->waiter);
		return;
	}

	if (last) {
		WRITE_ONCE(lw_last_in_window, true);
		lw_wait_for_sleeper(dio);
	}
	/* 5eb6c7a2: decrement and look at the waiter under the lock */
	spin_lock_irqsave(&dio->bio_lock, flags);
	remaining = atomic_sub_return(1, &dio->refcount);
	if (remaining == 1 && dio->waiter)
		wake_up_process(dio->waiter);
	spin_unlock_irqrestore(&dio->bio_lock, flags);
}

static void lw_rescue(struct work_struct *w)
{
	struct tdio *dio = container_of(to_delayed_work(w), struct tdio, rescue);
	unsigned long flags;

	spin_lock_irqsave(&dio->bio_lock, flags);
	if (dio->waiter) {
		dio->rescued = true;
		wake_up_process(dio->waiter);
	}
	spin_unlock_irqrestore(&dio->bio_lock, flags);
}

/* dio_await_one(): sleep until only the owner's reference is left. */
static void lw_await(struct tdio *dio)
{
	unsigned long flags;

	spin_lock_irqsave(&dio->bio_lock, flags);
	while (atomic_read(&dio->refcount) > 1) {
		set_current_state(TASK_UNINTERRUPTIBLE);
		if (atomic_read(&dio->refcount) > 1) {
			dio->waiter = current;
			spin_unlock_irqrestore(&dio->bio_lock, flags);
			io_schedule();
			spin_lock_irqsave(&dio->bio_lock, flags);
			dio->waiter = NULL;
		}
		__set_current_state(TASK_RUNNING);
	}
	spin_unlock_irqrestore(&dio->bio_lock, flags);
}

int rb_lost_wakeup(bool fixed)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	struct tdio *dio;
	ktime_t slept_at;
	s64 slept_ms;
	bool rescued;
	int i, err = 0;

	dio = kzalloc(sizeof(*dio), GFP_KERNEL);
	if (!dio)
		return -ENOMEM;
	spin_lock_init(&dio->bio_lock);
	atomic_set(&dio->refcount, 1);
	dio->fixed = fixed;
	INIT_DELAYED_WORK(&dio->rescue, lw_rescue);
	WRITE_ONCE(lw_last_in_window, false);

	slept_at = ktime_get();
	for (i = 0; i < LW_BIOS; i++) {
		struct bio *bio = rb_disk_write_bio(d, 256 + i * 8, lw_end_io, dio);

		/* dio_bio_submit(): one reference per bio in flight */
		atomic_inc(&dio->refcount);
		submit_bio(bio);
	}
	/* Test hook: the last completion has (not) seen a waiter. */
	while (!READ_ONCE(lw_last_in_window)) {
		if (ktime_ms_delta(ktime_get(), slept_at) > 10000) {
			pr_warn(RB_NAME ": lost_wakeup: the last completion never came\n");
			break;
		}
		cond_resched();
	}

	schedule_delayed_work(&dio->rescue, msecs_to_jiffies(LW_RESCUE_MS));
	slept_at = ktime_get();
	lw_await(dio);
	slept_ms = ktime_ms_delta(ktime_get(), slept_at);
	cancel_delayed_work_sync(&dio->rescue);
	rescued = dio->rescued;
	kfree(dio);

	if (rescued == fixed)
		err = -EPROTO;
	rb_result("%s lost_wakeup%s: end_io 0x%px: the waiter slept %lld ms in io_schedule() and %s",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", lw_end_io, slept_ms,
		  rescued ? "was rescued (its wakeup was lost)" : "was woken by the last completion");
	return err;
}
