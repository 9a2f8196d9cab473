// SPDX-License-Identifier: GPL-2.0
/*
 * Lost-wakeup look-alikes: a task whose own bios all completed, without it
 * ever sleeping for them (the disk completes them inside submit_bio(), as a
 * polled or synchronous driver does), that then sleeps in I/O wait for
 * something else, longer than the tracer's lost-wakeup threshold, and is
 * woken as soon as that something happens. Its sleep starts right after
 * its last completion, as in the seed race.
 *
 * iowait_folio_lock: the something is a page-cache folio's lock (of rb2's
 * block device mapping), held by a kthread for FL_HOLD_MS: folio_lock()
 * sleeps in io_schedule() (folio_wait_bit_common()), and folio_unlock()
 * wakes it.
 *
 * iowait_timeout: the something is time: io_schedule_timeout(), as
 * balance_dirty_pages() and the writeback throttles sleep. The timer wakes
 * it after IT_SLEEP_MS.
 */
#include <linux/blkdev.h>
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/pagemap.h>

#include "racebench.h"

#define IO_BIOS 3
#define FL_HOLD_MS 5000
#define FL_INDEX 3000
#define IT_SLEEP_MS 5000

static atomic_t io_done;

static void io_end_io(struct bio *bio)
{
	atomic_inc(&io_done);
	bio_put(bio);
}

/* The task's own I/O: IO_BIOS writes, completed before submit_bio() returns. */
static int io_own_bios(void)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	int i;

	atomic_set(&io_done, 0);
	rb_disk_set_mode(d, RB_INLINE, 0);
	for (i = 0; i < IO_BIOS; i++)
		submit_bio(rb_disk_write_bio(d, 2048 + i * 8, io_end_io, NULL));
	rb_disk_set_mode(d, RB_NORMAL, 0);
	return atomic_read(&io_done) == IO_BIOS ? 0 : -EPROTO;
}

static struct address_space *fl_mapping(void)
{
	return rb_disks[RB_SCRATCH]->disk->part0->bd_inode->i_mapping;
}

static DECLARE_COMPLETION(fl_locked);
static DECLARE_COMPLETION(fl_holder_done);
static ktime_t fl_unlocked_at;

/* Locks the folio (creating it), holds it FL_HOLD_MS, unlocks it. */
static int fl_holder(void *data)
{
	struct page *page = find_or_create_page(fl_mapping(), FL_INDEX, GFP_KERNEL);

	if (!page) {
		complete(&fl_locked);
		complete(&fl_holder_done);
		return -ENOMEM;
	}
	complete(&fl_locked);
	msleep(FL_HOLD_MS);
	fl_unlocked_at = ktime_get();
	unlock_page(page);
	put_page(page);
	complete(&fl_holder_done);
	return 0;
}

int rb_iowait_folio_lock(void)
{
	struct task_struct *holder;
	struct page *page;
	pid_t holder_pid;
	ktime_t asleep_at;
	s64 slept_ms, woken_after_us;
	int err;

	reinit_completion(&fl_locked);
	reinit_completion(&fl_holder_done);
	holder = kthread_run(fl_holder, NULL, "rb_folio_holder");
	if (IS_ERR(holder))
		return PTR_ERR(holder);
	/* it exits on its own once done */
	holder_pid = holder->pid;
	wait_for_completion(&fl_locked);
	page = find_get_page(fl_mapping(), FL_INDEX);
	if (!page || !PageLocked(page)) {
		if (page)
			put_page(page);
		wait_for_completion(&fl_holder_done);
		rb_result("fail iowait_folio_lock: the holder did not lock the folio");
		return -EPROTO;
	}
	err = io_own_bios();
	asleep_at = ktime_get();
	lock_page(page);
	slept_ms = ktime_ms_delta(ktime_get(), asleep_at);
	woken_after_us = ktime_us_delta(ktime_get(), fl_unlocked_at);
	unlock_page(page);
	put_page(page);
	wait_for_completion(&fl_holder_done);
	invalidate_mapping_pages(fl_mapping(), FL_INDEX, FL_INDEX);

	if (!err && slept_ms < FL_HOLD_MS - 1000)
		err = -EPROTO;
	rb_result("%s iowait_folio_lock: end_io 0x%px: %d own bios completed inline, then slept "
		  "%lld ms on a folio lock held by rb_folio_holder (pid %d), got it %lld us after "
		  "the unlock",
		  err ? "fail" : "ok", io_end_io, atomic_read(&io_done), slept_ms, holder_pid,
		  woken_after_us);
	return err;
}

int rb_iowait_timeout(void)
{
	ktime_t asleep_at;
	long left;
	s64 slept_ms;
	int err = io_own_bios();

	asleep_at = ktime_get();
	set_current_state(TASK_UNINTERRUPTIBLE);
	left = io_schedule_timeout(msecs_to_jiffies(IT_SLEEP_MS));
	slept_ms = ktime_ms_delta(ktime_get(), asleep_at);
	if (!err && (left || slept_ms < IT_SLEEP_MS - 500))
		err = -EPROTO;
	rb_result("%s iowait_timeout: end_io 0x%px: %d own bios completed inline, then slept %lld ms "
		  "in io_schedule_timeout() (%ld jiffies left)",
		  err ? "fail" : "ok", io_end_io, atomic_read(&io_done), slept_ms, left);
	return err;
}
