// SPDX-License-Identifier: GPL-2.0
/*
 * Slow but healthy: behaviour that looks like a seed race from outside for
 * a while, and is not one.
 *
 * stall_recovers: a transport stall, the shape of an NVMe-over-TCP
 * keep-alive expiry (blktests nvme/014): the disk holds every bio for
 * ST_HOLD_MS, past the tracer's lost-I/O threshold, then completes them all
 * with status 0. Their submitter waits in wait_for_completion_io() the
 * whole time, as a real one would.
 *
 * sleeping_handler: a bio's end_io, run from the disk's workqueue (process
 * context), sleeps in msleep() for SL_SLEEP_MS, past the tracer's
 * stuck-handler threshold. It is off the CPU, with interrupts on, the whole
 * time: nothing spins.
 */
#include <linux/delay.h>
#include <linux/module.h>

#include "racebench.h"

#define ST_BIOS 16
#define ST_HOLD_MS 5000

static atomic_t st_pending;
static atomic_t st_errors;
static DECLARE_COMPLETION(st_all_done);

static void st_end_io(struct bio *bio)
{
	if (bio->bi_status)
		atomic_inc(&st_errors);
	bio_put(bio);
	if (atomic_dec_and_test(&st_pending))
		complete(&st_all_done);
}

int rb_stall_recovers(void)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	unsigned int held;
	ktime_t t0;
	s64 waited_ms;
	int i, err = 0;

	atomic_set(&st_pending, ST_BIOS);
	atomic_set(&st_errors, 0);
	reinit_completion(&st_all_done);
	rb_disk_set_mode(d, RB_HOLD, 0);
	t0 = ktime_get();
	for (i = 0; i < ST_BIOS; i++)
		submit_bio(rb_disk_write_bio(d, 1024 + i * 8, st_end_io, NULL));
	held = rb_disk_nr_held(d);
	/* the transport recovers after ST_HOLD_MS, whoever waits */
	if (wait_for_completion_io_timeout(&st_all_done, msecs_to_jiffies(ST_HOLD_MS)))
		err = -EPROTO;
	rb_disk_set_mode(d, RB_NORMAL, 0);
	rb_disk_release(d);
	if (!wait_for_completion_io_timeout(&st_all_done, 10 * HZ)) {
		rb_result("fail stall_recovers: %d of %d bios never completed",
			  atomic_read(&st_pending), ST_BIOS);
		return -ETIMEDOUT;
	}
	waited_ms = ktime_ms_delta(ktime_get(), t0);
	if (held != ST_BIOS || atomic_read(&st_errors))
		err = -EPROTO;
	rb_result("%s stall_recovers: end_io 0x%px: %u of %d bios held %d ms, then all completed "
		  "after %lld ms, %d with an error",
		  err ? "fail" : "ok", st_end_io, held, ST_BIOS, ST_HOLD_MS, waited_ms,
		  atomic_read(&st_errors));
	return err;
}

#define SL_SLEEP_MS 3000

static DECLARE_COMPLETION(sl_done);
static ktime_t sl_start, sl_end;

static void sl_end_io(struct bio *bio)
{
	sl_start = ktime_get();
	/* e.g. a filesystem's end_io waiting for a mutex held across I/O */
	msleep(SL_SLEEP_MS);
	sl_end = ktime_get();
	bio_put(bio);
	complete(&sl_done);
}

int rb_sleeping_handler(void)
{
	struct rb_disk *d = rb_disks[RB_SCRATCH];
	s64 slept_ms;
	int err = 0;

	reinit_completion(&sl_done);
	rb_disk_set_mode(d, RB_NORMAL, 0);
	submit_bio(rb_disk_write_bio(d, 768, sl_end_io, NULL));
	wait_for_completion(&sl_done);
	slept_ms = ktime_ms_delta(sl_end, sl_start);
	if (slept_ms < SL_SLEEP_MS)
		err = -EPROTO;
	rb_result("%s sleeping_handler: end_io 0x%px slept %lld ms in msleep() from the disk's "
		  "workqueue on cpu %d",
		  err ? "fail" : "ok", sl_end_io, slept_ms, RB_COMPLETION_CPU);
	return err;
}
