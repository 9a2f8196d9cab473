// SPDX-License-Identifier: GPL-2.0
/*
 * Holding a real disk's queue frozen (delete_during_io): bios submitted to
 * it then wait in bio_queue_enter(), as they do while anything freezes the
 * queue (an elevator switch, a queue limit update, the deletion itself).
 * When del_gendisk() marks the disk dead it wakes them, and each fails
 * with an I/O error inside its own submit_bio() call (blktests block/027).
 * Without the freeze, a bio meets that state only if it passes the
 * capacity check just before del_gendisk() zeroes the capacity and reaches
 * bio_queue_enter() just after the disk is marked dead: microseconds.
 *
 *   run "queue_freeze /dev/sdX"   opens the disk, starts a freeze
 *   run "queue_unfreeze"          ends it, closes the disk
 *
 * The deletion waits for the unfreeze in its last step (sd_shutdown()'s
 * SYNCHRONIZE CACHE needs the queue), so the guest script deletes in the
 * background and unfreezes after a while.
 */
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/module.h>

#include "racebench.h"

static struct block_device *rb_frozen;

int rb_queue_freeze(const char *path)
{
	struct block_device *bdev;

	if (rb_frozen)
		return -EBUSY;
	bdev = blkdev_get_by_path(path, FMODE_READ, NULL);
	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	blk_freeze_queue_start(bdev_get_queue(bdev));
	rb_frozen = bdev;
	rb_result("ok queue_freeze: %s frozen", path);
	return 0;
}

int rb_queue_unfreeze(void)
{
	if (!rb_frozen)
		return -EINVAL;
	/* the open disk keeps its queue alive, deleted or not */
	blk_mq_unfreeze_queue(bdev_get_queue(rb_frozen));
	blkdev_put(rb_frozen, FMODE_READ);
	rb_frozen = NULL;
	rb_result("ok queue_unfreeze");
	return 0;
}
