// SPDX-License-Identifier: GPL-2.0
/*
 * onstack (seed 000, kernel bug 29402): blkdev_issue_zeroout() of
 * 2.6.38-rc kept its bio batch and DECLARE_COMPLETION_ONSTACK on the stack,
 * and bio_batch_end_io() counted a bio done BEFORE calling complete(). The
 * owner could see the count match, skip wait_for_completion() and return;
 * the late complete() then wrote into the dead frame.
 *
 *   kworker (end_io of the last bio)      owner (zo_issue_zeroout)
 *     atomic_inc(&bb->done)
 *     [injected window, ONSTACK_WINDOW_MS]  issued == atomic_read(&bb.done)
 *                                           -> no wait, return
 *     complete(bb->wait)  <- dead frame
 *
 * The fixed twin is commit 0aeea189 ("block: fix mis-synchronisation in
 * blkdev_issue_zeroout()"): the owner holds a reference on the count,
 * whoever drops it to zero signals, and the owner waits unless it did.
 *
 * Keeping the guest alive: the late complete() takes the dead completion's
 * spinlock and bumps its count, which is harmless as long as nobody reused
 * that stack region. So the frame sits below ONSTACK_PAD_FRAMES padded
 * frames (10 KiB; the debugfs write handler runs ~750 bytes below the top
 * of the 16 KiB stack, which leaves the batch's own calls ~4.5 KiB), and
 * after the return the owner stays shallow until the late complete() has
 * returned: it naps in msleep(), which only goes as deep as schedule()
 * plus the tracer's sched_switch program. (Waiting in wait_for_completion*()
 * instead went deep enough, with fentry programs taking stack traces, to
 * overwrite a dead frame 4.9 KiB down; once, with msleep(), one 8 KiB down
 * was found changed too.) Should the region be reused anyway, the late
 * completion finds the dead completion changed, skips complete() and the
 * scenario fails with what it found, instead of the guest spinning on a
 * garbage spinlock.
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/module.h>

#include "racebench.h"

#define ONSTACK_BIOS 4
#define ONSTACK_WINDOW_MS 1000
#define ONSTACK_PAD_FRAMES 20
#define ONSTACK_PAD_BYTES 512

struct zo_batch {
	atomic_t done;
	unsigned int issued;
	bool fixed;
	atomic_t seen;
	struct completion *wait;
};

/* Test hooks, module globals (not on anybody's stack). */
static DECLARE_COMPLETION(zo_last_in_window);
static bool zo_late_done;
static bool zo_frame_reused;
static struct task_struct *zo_owner;
static unsigned int zo_seen_done;
static unsigned long zo_seen_next, zo_owner_sp;
static ktime_t zo_returned_at, zo_late_at;
static unsigned long zo_wait_addr;

/*
 * Whether the dead completion still holds what the early complete()s left:
 * its count, an unlocked lock and no waiters. Reading the dead frame is
 * safe: the stack belongs to the owner, who is napping.
 */
static bool zo_still_intact(struct completion *wait, unsigned int done)
{
	return READ_ONCE(wait->done) == done &&
	       !raw_spin_is_locked(&wait->wait.lock) &&
	       READ_ONCE(wait->wait.task_list.next) == &wait->wait.task_list;
}

static void zo_end_io(struct bio *bio)
{
	struct zo_batch *bb = bio->bi_private;
	/* Read while the batch is surely alive; the buggy path outlives it. */
	struct completion *wait = bb->wait;
	unsigned int issued = bb->issued;
	bool last = atomic_inc_return(&bb->seen) == issued;

	bio_put(bio);
	if (!bb->fixed) {
		/* 2.6.38-rc5 bio_batch_end_io(): count, then signal */
		atomic_inc(&bb->done);
		if (!last) {
			complete(wait);
			return;
		}
		complete(&zo_last_in_window);
		msleep(ONSTACK_WINDOW_MS);
		zo_seen_done = READ_ONCE(wait->done);
		zo_seen_next = (unsigned long)READ_ONCE(wait->wait.task_list.next);
		zo_owner_sp = READ_ONCE(zo_owner->thread.sp);
		if (zo_still_intact(wait, issued - 1))
			complete(wait);
		else
			WRITE_ONCE(zo_frame_reused, true);
		zo_late_at = ktime_get();
		WRITE_ONCE(zo_late_done, true);
		return;
	}
	/* fixed: the same window, but the count decides who signals */
	if (last) {
		complete(&zo_last_in_window);
		msleep(ONSTACK_WINDOW_MS);
	}
	if (atomic_dec_and_test(&bb->done)) {
		if (last)
			zo_late_at = ktime_get();
		complete(wait);
	}
	if (last)
		WRITE_ONCE(zo_late_done, true);
}

/* blkdev_issue_zeroout() of 2.6.38-rc5 (buggy) or with 0aeea189 (fixed). */
static noinline int zo_issue_zeroout(struct rb_disk *d, sector_t sector, bool fixed)
{
	DECLARE_COMPLETION_ONSTACK(wait);
	struct zo_batch bb;
	unsigned int issued = 0;

	atomic_set(&bb.done, fixed ? 1 : 0);
	atomic_set(&bb.seen, 0);
	bb.issued = ONSTACK_BIOS;
	bb.fixed = fixed;
	bb.wait = &wait;
	zo_wait_addr = (unsigned long)&wait;

	while (issued < ONSTACK_BIOS) {
		struct bio *bio = rb_disk_write_bio(d, sector, zo_end_io, &bb);

		sector += PAGE_SIZE >> SECTOR_SHIFT;
		if (fixed)
			atomic_inc(&bb.done);
		issued++;
		submit_bio(bio);
	}

	/*
	 * Test hook: let the completions run until the last one is inside its
	 * window, so the owner's check below always sees the racy state.
	 */
	if (!wait_for_completion_timeout(&zo_last_in_window, 10 * HZ))
		pr_warn(RB_NAME ": onstack: the last completion never came\n");

	if (!fixed) {
		/* Wait for bios in-flight */
		while (issued != atomic_read(&bb.done))
			wait_for_completion(&wait);
	} else {
		if (!atomic_dec_and_test(&bb.done))
			wait_for_completion(&wait);
	}
	zo_returned_at = ktime_get();
	return 0;
}

/* Puts ONSTACK_PAD_FRAMES * ONSTACK_PAD_BYTES of stack above the batch. */
static noinline int zo_deep(int depth, struct rb_disk *d, bool fixed)
{
	volatile char pad[ONSTACK_PAD_BYTES];
	int ret;

	pad[0] = depth;
	if (depth)
		ret = zo_deep(depth - 1, d, fixed);
	else
		ret = zo_issue_zeroout(d, 64, fixed);
	/* a use after the call: no tail call, the pad stays */
	return ret + pad[0] - depth;
}

int rb_onstack(bool fixed)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	unsigned long here = (unsigned long)&d;
	unsigned int naps = 0;
	s64 late_us;
	int err;

	reinit_completion(&zo_last_in_window);
	WRITE_ONCE(zo_late_done, false);
	WRITE_ONCE(zo_frame_reused, false);
	zo_late_at = 0;
	zo_owner = current;
	err = zo_deep(ONSTACK_PAD_FRAMES, d, fixed);
	/* Shallow from here until the late complete() has returned. */
	while (!READ_ONCE(zo_late_done) && naps++ < (ONSTACK_WINDOW_MS + 10000) / 20)
		msleep(20);
	if (!READ_ONCE(zo_late_done))
		err = -ETIMEDOUT;
	if (err)
		return err;
	if (zo_frame_reused) {
		rb_result("fail onstack: the dead frame at 0x%lx (%lu bytes below the caller) "
			  "was reused before the late complete(); it was skipped (done %u, "
			  "list %lx, owner napping at sp %lx)",
			  zo_wait_addr, here - zo_wait_addr, zo_seen_done, zo_seen_next,
			  zo_owner_sp);
		return -EPROTO;
	}

	late_us = ktime_us_delta(zo_late_at, zo_returned_at);
	/* buggy: the last complete() lands after the owner returned */
	if (fixed ? late_us > 0 : late_us <= 0)
		err = -EPROTO;
	rb_result("%s onstack%s: end_io 0x%px, completion at 0x%lx (%lu bytes below the caller), "
		  "last complete() %lld us %s the owner returned",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", zo_end_io, zo_wait_addr,
		  here - zo_wait_addr, abs(late_us), late_us > 0 ? "after" : "before");
	return err;
}
