// SPDX-License-Identifier: GPL-2.0
/*
 * A RAM-backed, bio-based test disk. Data is copied at submission; the
 * completion (bio_endio) comes later from the disk's workqueue, so end_io
 * handlers run in process context, in submission order, on
 * RB_COMPLETION_CPU. The per-disk mode decides when: right away, after a
 * delay, never until released, or twice (a buggy timeout path).
 *
 * RB_SWAP_DUP and RB_SWAP_DUP_FIXED put a stacking driver in front of the
 * dup modes: it saves the bio's bi_end_io and bi_private at submission and
 * hooks its own (dm_hook_bio() in dm-bio-record.h, as dm-thin, dm-cache
 * and dm-snapshot do); the hook restores them and ends the bio again, so
 * one real completion runs bio_endio() twice, with two different end_io.
 *
 * Bio-based disks hold q_usage_counter only while ->submit_bio runs, so
 * del_gendisk() does not wait for held bios: that is what lets the
 * complete-after-teardown scenario complete a bio on a deleted disk.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "racebench.h"

struct rb_disk *rb_disks[RB_NR_DISKS];
static struct rb_disk *rb_extra_disk;

/* A command of a disk in a dup mode (RB_DUP, RB_SWAP_DUP and their fixed twins). */
struct rb_cmd {
	struct rb_disk *disk;
	struct bio *bio;
	bool fixed;
	unsigned int timeout_ms;
	/* what the stacking driver's hook saved (RB_SWAP_*) */
	bio_end_io_t *saved_end_io;
	void *saved_private;
#define RB_CMD_CLAIMED 0
	unsigned long flags;
	struct work_struct done;
	struct delayed_work timeout;
};

static blk_status_t rb_copy(struct rb_disk *d, struct bio *bio)
{
	sector_t sector = bio->bi_iter.bi_sector;
	struct bvec_iter iter;
	struct bio_vec bv;
	u64 off = (u64)sector << SECTOR_SHIFT;

	if (sector + bio_sectors(bio) > d->sectors)
		return BLK_STS_IOERR;

	switch (bio_op(bio)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
		break;
	case REQ_OP_FLUSH:
		return BLK_STS_OK;
	default:
		return BLK_STS_NOTSUPP;
	}

	bio_for_each_segment(bv, bio, iter) {
		if (op_is_write(bio_op(bio)))
			memcpy_from_bvec(d->data + off, &bv);
		else
			memcpy_to_bvec(&bv, d->data + off);
		off += bv.bv_len;
	}
	return BLK_STS_OK;
}

/*
 * The stacking driver's end_io hook: puts the owner's end_io back and ends
 * the bio again, from inside the first bio_endio() (dm_unhook_bio(), then
 * bio_endio()).
 */
void rb_swap_end_io(struct bio *bio)
{
	struct rb_cmd *cmd = bio->bi_private;

	bio->bi_end_io = cmd->saved_end_io;
	bio->bi_private = cmd->saved_private;
	bio_endio(bio);
}

/*
 * The normal completion of a dup-mode command. The timeout path is armed
 * only now, timeout_ms later, so that it always comes second, even when a
 * loaded host delays the workers.
 */
static void rb_cmd_done(struct work_struct *w)
{
	struct rb_cmd *cmd = container_of(w, struct rb_cmd, done);
	struct rb_disk *d = cmd->disk;

	if (!cmd->fixed || !test_and_set_bit(RB_CMD_CLAIMED, &cmd->flags))
		bio_endio(cmd->bio);
	spin_lock_irq(&d->lock);
	d->armed = cmd;
	queue_delayed_work_on(RB_COMPLETION_CPU, d->wq, &cmd->timeout,
			      msecs_to_jiffies(cmd->timeout_ms));
	spin_unlock_irq(&d->lock);
}

bool rb_disk_fire_timeout(struct rb_disk *d)
{
	bool armed;

	spin_lock_irq(&d->lock);
	armed = d->armed;
	if (armed)
		mod_delayed_work_on(RB_COMPLETION_CPU, d->wq, &d->armed->timeout, 0);
	spin_unlock_irq(&d->lock);
	return armed;
}

/*
 * The timeout path of a RB_DUP command: it believes the command failed and
 * completes the bio with an error. The buggy one never asks whether the
 * normal path got there first (the dm-writeboost error path of seed 002);
 * the fixed one claims the command, as blk-mq's timeout handling does.
 */
static void rb_cmd_timeout(struct work_struct *w)
{
	struct rb_cmd *cmd = container_of(to_delayed_work(w), struct rb_cmd, timeout);
	struct rb_disk *d = cmd->disk;

	spin_lock_irq(&d->lock);
	if (d->armed == cmd)
		d->armed = NULL;
	spin_unlock_irq(&d->lock);
	if (!cmd->fixed || !test_and_set_bit(RB_CMD_CLAIMED, &cmd->flags)) {
		cmd->bio->bi_status = BLK_STS_IOERR;
		bio_endio(cmd->bio);
	}
	kfree(cmd);
}

static void rb_submit_dup(struct rb_disk *d, struct bio *bio, bool fixed, bool swap,
			  unsigned int timeout_ms)
{
	struct rb_cmd *cmd = kzalloc(sizeof(*cmd), GFP_NOIO);

	if (!cmd) {
		bio_io_error(bio);
		return;
	}
	cmd->disk = d;
	cmd->bio = bio;
	cmd->fixed = fixed;
	cmd->timeout_ms = timeout_ms ?: RB_DUP_TIMEOUT_MS;
	if (swap) {
		/* dm_hook_bio() */
		cmd->saved_end_io = bio->bi_end_io;
		cmd->saved_private = bio->bi_private;
		bio->bi_end_io = rb_swap_end_io;
		bio->bi_private = cmd;
	}
	INIT_WORK(&cmd->done, rb_cmd_done);
	INIT_DELAYED_WORK(&cmd->timeout, rb_cmd_timeout);
	queue_work_on(RB_COMPLETION_CPU, d->wq, &cmd->done);
}

static void rb_submit_bio(struct bio *bio)
{
	struct rb_disk *d = bio->bi_bdev->bd_disk->private_data;
	blk_status_t status = rb_copy(d, bio);
	unsigned long flags;
	unsigned long delay = 0;

	rb_md_saw_bio(d, bio);
	if (status != BLK_STS_OK) {
		bio->bi_status = status;
		bio_endio(bio);
		return;
	}

	spin_lock_irqsave(&d->lock, flags);
	switch (d->mode) {
	case RB_HOLD:
		if (!d->hold_only || d->hold_only == current) {
			bio_list_add(&d->held, bio);
			spin_unlock_irqrestore(&d->lock, flags);
			return;
		}
		break;
	case RB_DUP:
	case RB_DUP_FIXED:
	case RB_SWAP_DUP:
	case RB_SWAP_DUP_FIXED: {
		enum rb_mode mode = d->mode;
		unsigned int timeout_ms = d->delay_ms;

		spin_unlock_irqrestore(&d->lock, flags);
		rb_submit_dup(d, bio, mode == RB_DUP_FIXED || mode == RB_SWAP_DUP_FIXED,
			      mode == RB_SWAP_DUP || mode == RB_SWAP_DUP_FIXED, timeout_ms);
		return;
	}
	case RB_INLINE:
		/* a driver that completes in its submission path (or a polled one) */
		spin_unlock_irqrestore(&d->lock, flags);
		bio_endio(bio);
		return;
	case RB_DELAY:
		delay = msecs_to_jiffies(d->delay_ms);
		break;
	case RB_NORMAL:
		break;
	}
	bio_list_add(&d->pending, bio);
	spin_unlock_irqrestore(&d->lock, flags);
	/* A delayed bio must not be overtaken: the worker's next run waits too. */
	if (delay)
		mod_delayed_work_on(RB_COMPLETION_CPU, d->wq, &d->work, delay);
	else
		queue_delayed_work_on(RB_COMPLETION_CPU, d->wq, &d->work, 0);
}

static void rb_work(struct work_struct *w)
{
	struct rb_disk *d = container_of(to_delayed_work(w), struct rb_disk, work);
	struct bio *bio;

	for (;;) {
		spin_lock_irq(&d->lock);
		bio = bio_list_pop(&d->pending);
		spin_unlock_irq(&d->lock);
		if (!bio)
			break;
		bio_endio(bio);
	}
}

static const struct block_device_operations rb_fops = {
	.owner = THIS_MODULE,
	.submit_bio = rb_submit_bio,
};

struct rb_disk *rb_disk_create(const char *name, unsigned int mib)
{
	struct rb_disk *d;
	int err = -ENOMEM;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return ERR_PTR(-ENOMEM);
	d->sectors = (sector_t)mib << (20 - SECTOR_SHIFT);
	d->data = vzalloc((size_t)mib << 20);
	if (!d->data)
		goto free_d;
	spin_lock_init(&d->lock);
	bio_list_init(&d->pending);
	bio_list_init(&d->held);
	INIT_DELAYED_WORK(&d->work, rb_work);
	/* Bound: every completion runs on RB_COMPLETION_CPU. */
	d->wq = alloc_workqueue("%s", WQ_MEM_RECLAIM | WQ_HIGHPRI, 0, name);
	if (!d->wq)
		goto free_data;

	d->disk = blk_alloc_disk(NUMA_NO_NODE);
	if (!d->disk)
		goto free_wq;
	/* major 0: a dynamic dev_t from the extended range (259:n) */
	d->disk->fops = &rb_fops;
	d->disk->private_data = d;
	d->disk->flags |= GENHD_FL_NO_PART;
	strscpy(d->disk->disk_name, name, DISK_NAME_LEN);
	set_capacity(d->disk, d->sectors);
	blk_queue_logical_block_size(d->disk->queue, SECTOR_SIZE);
	blk_queue_physical_block_size(d->disk->queue, PAGE_SIZE);
	err = add_disk(d->disk);
	if (err)
		goto put_disk;
	return d;

put_disk:
	put_disk(d->disk);
free_wq:
	destroy_workqueue(d->wq);
free_data:
	vfree(d->data);
free_d:
	kfree(d);
	return ERR_PTR(err);
}

/* For a disk whose gendisk was already deleted (del_gendisk) by the caller. */
static void rb_disk_free(struct rb_disk *d)
{
	flush_delayed_work(&d->work);
	/* The RB_DUP timeout works are queued on the same workqueue. */
	destroy_workqueue(d->wq);
	put_disk(d->disk);
	vfree(d->data);
	kfree(d);
}

void rb_disk_destroy(struct rb_disk *d)
{
	if (!d)
		return;
	/* Nothing may stay held: the bios' owners wait for them. */
	rb_disk_set_mode(d, RB_NORMAL, 0);
	rb_disk_release(d);
	del_gendisk(d->disk);
	rb_disk_free(d);
}

struct rb_disk *rb_disk_find(const char *name)
{
	int i;

	for (i = 0; i < RB_NR_DISKS; i++)
		if (rb_disks[i] && !strcmp(rb_disks[i]->disk->disk_name, name))
			return rb_disks[i];
	if (rb_extra_disk && !strcmp(rb_extra_disk->disk->disk_name, name))
		return rb_extra_disk;
	return NULL;
}

void rb_disk_set_mode(struct rb_disk *d, enum rb_mode mode, unsigned int delay_ms)
{
	spin_lock_irq(&d->lock);
	d->mode = mode;
	d->delay_ms = delay_ms;
	if (mode != RB_HOLD)
		d->hold_only = NULL;
	spin_unlock_irq(&d->lock);
}

unsigned int rb_disk_release(struct rb_disk *d)
{
	unsigned int n = 0;
	struct bio *bio;

	spin_lock_irq(&d->lock);
	while ((bio = bio_list_pop(&d->held))) {
		bio_list_add(&d->pending, bio);
		n++;
	}
	spin_unlock_irq(&d->lock);
	queue_delayed_work_on(RB_COMPLETION_CPU, d->wq, &d->work, 0);
	return n;
}

struct bio *rb_disk_take_held(struct rb_disk *d)
{
	struct bio *bio;
	unsigned long flags;

	spin_lock_irqsave(&d->lock, flags);
	bio = bio_list_get(&d->held);
	spin_unlock_irqrestore(&d->lock, flags);
	return bio;
}

unsigned int rb_disk_nr_held(struct rb_disk *d)
{
	unsigned int n;

	spin_lock_irq(&d->lock);
	n = bio_list_size(&d->held);
	spin_unlock_irq(&d->lock);
	return n;
}

struct bio *rb_disk_write_bio(struct rb_disk *d, sector_t sector,
			      bio_end_io_t *end_io, void *private)
{
	struct bio *bio = bio_alloc(d->disk->part0, 1, REQ_OP_WRITE, GFP_KERNEL);

	bio->bi_iter.bi_sector = sector;
	__bio_add_page(bio, ZERO_PAGE(0), PAGE_SIZE, 0);
	bio->bi_end_io = end_io;
	bio->bi_private = private;
	return bio;
}

/*
 * complete_after_teardown (and its twin): a bio completes on a disk after
 * (before) del_gendisk() of that disk. The disk is a fresh one, so the
 * scratch disks stay usable.
 */
static DECLARE_COMPLETION(cat_done);

static void cat_end_io(struct bio *bio)
{
	complete(&cat_done);
}

int rb_complete_after_teardown(bool fixed)
{
	struct rb_disk *d;
	struct bio *bio;
	ktime_t del_at, done_at;
	int err = 0;

	d = rb_disk_create("rbt", 4);
	if (IS_ERR(d))
		return PTR_ERR(d);
	rb_extra_disk = d;
	reinit_completion(&cat_done);
	rb_disk_set_mode(d, RB_HOLD, 0);
	bio = rb_disk_write_bio(d, 0, cat_end_io, NULL);
	submit_bio(bio);

	if (fixed) {
		rb_disk_release(d);
		wait_for_completion(&cat_done);
		done_at = ktime_get();
		del_gendisk(d->disk);
		del_at = ktime_get();
	} else {
		del_gendisk(d->disk);
		del_at = ktime_get();
		/* the driver's late completion, on a disk that is gone */
		msleep(200);
		rb_disk_release(d);
		wait_for_completion(&cat_done);
		done_at = ktime_get();
	}
	bio_put(bio);
	rb_extra_disk = NULL;
	rb_disk_free(d);

	if (fixed != ktime_before(done_at, del_at))
		err = -EPROTO;
	rb_result("%s complete_after_teardown%s: end_io 0x%px: bio completed %lld us %s del_gendisk",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", cat_end_io,
		  abs(ktime_us_delta(done_at, del_at)),
		  ktime_before(done_at, del_at) ? "before" : "after");
	return err;
}
