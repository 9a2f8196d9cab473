// SPDX-License-Identifier: GPL-2.0
/*
 * Completion-handler races on single bios.
 *
 * double_complete (seed 002): a driver's error path completes a bio that
 * its normal path already completed; the owner's end_io runs twice. The
 * test disk's RB_DUP mode is that driver; RB_DUP_FIXED claims the command
 * before completing, so only one path does.
 *
 * double_complete_lost_events and endio_swap: the same race, with events
 * lost between the two completions, or behind a stacking driver's end_io
 * hook.
 *
 * stuck_handler (seed 001): ext4_finish_bio() spun with interrupts off on
 * BH_Uptodate_Lock, a bit spinlock held elsewhere, until the hard-lockup
 * watchdog fired. Here the end_io does the same on a bit lock held for
 * SH_HOLD_MS (the twin: SH_BRIEF_MS). A kthread on the other CPU takes the
 * bit and a timer interrupt there releases it: a task could not be relied
 * on to, since that CPU may be waiting with preemption off for the spinning
 * CPU to answer an IPI (a deferred TLB flush after a BPF trampoline is
 * freed, say), and the guest would deadlock.
 */
#include <linux/bit_spinlock.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/module.h>

#include "racebench.h"

/* double_complete */
static DECLARE_COMPLETION(dc_first);
static DECLARE_COMPLETION(dc_second);
static atomic_t dc_calls;
static blk_status_t dc_status[2];
static ktime_t dc_at[2];

static void dc_end_io(struct bio *bio)
{
	int n = atomic_inc_return(&dc_calls);

	if (n <= 2) {
		dc_status[n - 1] = bio->bi_status;
		dc_at[n - 1] = ktime_get();
	}
	/* The bio stays ours until both calls had their chance: no bio_put here. */
	complete(n == 1 ? &dc_first : &dc_second);
}

/*
 * Test hook of double_complete_lost_events: events the tracer must record
 * between the two completions, complete() on a completion on this task's
 * stack (the tracer reports those; one in static memory it leaves out in
 * the kernel, as no rule follows it), fast enough to overrun a small ring
 * buffer, then waited for so that the frame is left synchronized. The
 * timeout path is
 * armed far out and run once the burst is over and the tracer's reader
 * had DC_DRAIN_MS to catch up, so that the second completion is recorded
 * however long the burst took.
 */
#define DC_BURST 20000
#define DC_BURST_TIMEOUT_MS 60000
#define DC_DRAIN_MS 1000
static ktime_t dc_burst_end;

/* The burst, then the armed timeout path run now. */
static void dc_burst_then_timeout(struct rb_disk *d, unsigned int burst, s64 *burst_us)
{
	DECLARE_COMPLETION_ONSTACK(dc_burst);
	ktime_t t0 = ktime_get();
	int i;

	for (i = 0; i < burst; i++)
		complete(&dc_burst);
	wait_for_completion(&dc_burst);
	dc_burst_end = ktime_get();
	*burst_us = ktime_us_delta(dc_burst_end, t0);
	msleep(DC_DRAIN_MS);
	for (i = 0; i < 1000 && !rb_disk_fire_timeout(d); i++)
		msleep(1);
}

/* Completes rb2's next bio under `mode`; returns how many times it ran. */
static int dc_run(enum rb_mode mode, bool fixed, unsigned int timeout_ms, unsigned int burst,
		  s64 *burst_us)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	unsigned int wait_ms = (burst ? 0 : (timeout_ms ?: RB_DUP_TIMEOUT_MS)) +
			       (fixed ? 1000 : 20000);
	struct bio *bio;
	unsigned long left;
	int calls;

	atomic_set(&dc_calls, 0);
	reinit_completion(&dc_first);
	reinit_completion(&dc_second);
	rb_disk_set_mode(d, mode, timeout_ms);
	bio = rb_disk_write_bio(d, 8, dc_end_io, NULL);
	submit_bio(bio);
	wait_for_completion(&dc_first);
	*burst_us = 0;
	if (burst)
		dc_burst_then_timeout(d, burst, burst_us);
	/*
	 * The timeout path runs timeout_ms after the first completion (or
	 * after the burst). The buggy one completes the bio again: the bio
	 * must live until then.
	 */
	left = wait_for_completion_timeout(&dc_second, msecs_to_jiffies(wait_ms));
	rb_disk_set_mode(d, RB_NORMAL, 0);
	if (!fixed && !left)
		/* still armed: leak the bio rather than let it be completed freed */
		return -ETIMEDOUT;
	/* Let a fixed timeout path finish with its command. */
	flush_workqueue(d->wq);
	calls = atomic_read(&dc_calls);
	bio_put(bio);
	return calls;
}

int rb_double_complete(bool fixed)
{
	s64 burst_us;
	int calls = dc_run(fixed ? RB_DUP_FIXED : RB_DUP, fixed, 0, 0, &burst_us);
	int err = 0;

	if (calls < 0) {
		rb_result("fail double_complete: no second completion within 20 s");
		return calls;
	}
	if (calls != (fixed ? 1 : 2))
		err = -EPROTO;
	rb_result("%s double_complete%s: end_io 0x%px ran %d time(s), status %d then %d",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", dc_end_io, calls,
		  blk_status_to_errno(dc_status[0]),
		  calls > 1 ? blk_status_to_errno(dc_status[1]) : 0);
	return err;
}

/*
 * double_complete_lost_events: double_complete, with DC_BURST events
 * between the two completions. Traced with a small ring buffer, events are
 * lost between the two sides: what the tracer says about the bio can no
 * longer be proven. The burst ends well before the second completion, so
 * both completions themselves are recorded.
 */
int rb_double_complete_lost_events(void)
{
	s64 burst_us;
	int calls = dc_run(RB_DUP, false, DC_BURST_TIMEOUT_MS, DC_BURST, &burst_us);
	s64 gap_ms;
	int err = 0;

	if (calls < 0) {
		rb_result("fail double_complete_lost_events: no second completion within 20 s");
		return calls;
	}
	gap_ms = ktime_ms_delta(dc_at[1], dc_at[0]);
	/* the burst lies between the two completions */
	if (calls != 2 || ktime_before(dc_at[1], dc_burst_end))
		err = -EPROTO;
	rb_result("%s double_complete_lost_events: end_io 0x%px ran %d time(s), status %d then %d, "
		  "%d complete() calls in %lld us between them (%lld ms apart)",
		  err ? "fail" : "ok", dc_end_io, calls, blk_status_to_errno(dc_status[0]),
		  calls > 1 ? blk_status_to_errno(dc_status[1]) : 0, DC_BURST, burst_us, gap_ms);
	return err;
}

/*
 * endio_swap: the bio reaches the dup-mode disk through a stacking driver
 * that hooks its bi_end_io (disk.c, RB_SWAP_*). The normal completion runs
 * the hook, which restores the owner's end_io and ends the bio again; the
 * buggy timeout path then completes it a second time, with the owner's
 * end_io: it runs twice. The fixed twin claims the command first: the
 * owner's end_io runs once, after the hook.
 */
int rb_endio_swap(bool fixed)
{
	s64 burst_us;
	int calls = dc_run(fixed ? RB_SWAP_DUP_FIXED : RB_SWAP_DUP, fixed, 0, 0, &burst_us);
	int err = 0;

	if (calls < 0) {
		rb_result("fail endio_swap: no second completion within 20 s");
		return calls;
	}
	if (calls != (fixed ? 1 : 2))
		err = -EPROTO;
	rb_result("%s endio_swap%s: end_io 0x%px ran %d time(s) behind hook 0x%px, status %d then %d",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", dc_end_io, calls, rb_swap_end_io,
		  blk_status_to_errno(dc_status[0]),
		  calls > 1 ? blk_status_to_errno(dc_status[1]) : 0);
	return err;
}

#define SH_HOLD_MS 3000
#define SH_BRIEF_MS 20
#define SH_LOCK_BIT 0
#define SH_HOLDER_CPU (RB_COMPLETION_CPU + 1)

static unsigned long sh_state;
static struct hrtimer sh_release;
static DECLARE_COMPLETION(sh_held);
static DECLARE_COMPLETION(sh_handler_done);
static DECLARE_COMPLETION(sh_holder_done);
static ktime_t sh_spin_start, sh_spin_end;

static enum hrtimer_restart sh_release_bit(struct hrtimer *timer)
{
	clear_bit_unlock(SH_LOCK_BIT, &sh_state);
	complete(&sh_holder_done);
	return HRTIMER_NORESTART;
}

/* Takes the bit and arms the timer that releases it *data ms later, here. */
static int sh_holder(void *data)
{
	unsigned int ms = (unsigned long)data;

	while (test_and_set_bit_lock(SH_LOCK_BIT, &sh_state))
		cpu_relax();
	hrtimer_start(&sh_release, ms_to_ktime(ms), HRTIMER_MODE_REL_PINNED);
	complete(&sh_held);
	return 0;
}

/* ext4_finish_bio(): the buffer-state walk under the page's bit lock. */
static void sh_end_io(struct bio *bio)
{
	unsigned long flags;

	local_irq_save(flags);
	sh_spin_start = ktime_get();
	bit_spin_lock(SH_LOCK_BIT, &sh_state);
	sh_spin_end = ktime_get();
	bit_spin_unlock(SH_LOCK_BIT, &sh_state);
	local_irq_restore(flags);
	bio_put(bio);
	complete(&sh_handler_done);
}

int rb_stuck_handler(bool fixed)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	unsigned long ms = fixed ? SH_BRIEF_MS : SH_HOLD_MS;
	struct task_struct *holder;
	s64 spun_ms;
	int err = 0;

	/* With one CPU the spinning handler would starve the holder for good. */
	if (!cpu_online(SH_HOLDER_CPU))
		return -ENODEV;
	reinit_completion(&sh_held);
	reinit_completion(&sh_handler_done);
	reinit_completion(&sh_holder_done);
	hrtimer_init(&sh_release, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED);
	sh_release.function = sh_release_bit;
	holder = kthread_create(sh_holder, (void *)ms, "rb_bitlock_holder");
	if (IS_ERR(holder))
		return PTR_ERR(holder);
	kthread_bind(holder, SH_HOLDER_CPU);
	wake_up_process(holder);
	wait_for_completion(&sh_held);

	submit_bio(rb_disk_write_bio(d, 512, sh_end_io, NULL));
	wait_for_completion(&sh_handler_done);
	wait_for_completion(&sh_holder_done);

	spun_ms = ktime_ms_delta(sh_spin_end, sh_spin_start);
	if (fixed ? spun_ms > 500 : spun_ms < SH_HOLD_MS - 500)
		err = -EPROTO;
	rb_result("%s stuck_handler%s: end_io 0x%px spun %lld ms with interrupts off on cpu %d",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", sh_end_io, spun_ms,
		  RB_COMPLETION_CPU);
	return err;
}
