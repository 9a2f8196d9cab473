// SPDX-License-Identifier: GPL-2.0
/*
 * md_teardown (seed 003): a superblock write issued with md_super_write()
 * and never waited for (md_super_wait()) is still in flight when the array
 * is stopped; its completion, super_written(), then runs for an array
 * whose teardown has begun (the reported crash: a NULL dereference in
 * super_written() after the rdevs were gone).
 *
 * The guest script builds a real raid1 on two test disks and waits until
 * the array is clean (in_sync), so that __md_stop_writes() has no
 * superblock update to wait for. Then "md_inject" calls the real
 * md_super_write() for a member (the rdev, sector, size and page of the
 * last superblock write that member saw) while that member holds the bio:
 * mddev->pending_writes stays 1. `mdadm --stop` runs the teardown:
 * do_md_stop() -> __md_stop_writes() -> __md_stop(), which destroys the
 * bitmap, detaches the array (mddev_detach), frees the personality and at
 * its end exits the array's bio sets. A kprobe on bioset_exit() for the
 * bio set the held write came from (mddev->sync_set, the held bio's
 * bi_pool) has that write completed right then, from an interrupt (an IPI)
 * on the other CPU, the way a disk's completion would come: super_written()
 * runs after mddev_detach() and pers->free(), the point of no return.
 * That is as late as the guest survives it: the bio can still go back to
 * its pool, and export_array() has not freed the rdevs yet. (Completing it
 * inside the kprobe handler itself would hide it from kprobe-based
 * tracers: kprobes do not nest.)
 *
 * Checked on 6.1.192: md_super_write and super_written are not exported
 * (their addresses come from a kprobe registration); __md_stop() ends with
 * bioset_exit(&mddev->bio_set), bioset_exit(&mddev->sync_set).
 */
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/smp.h>

#include "racebench.h"

struct mddev;
struct md_rdev;
typedef void (*md_super_write_fn)(struct mddev *mddev, struct md_rdev *rdev,
				  sector_t sector, int size, struct page *page);

static md_super_write_fn md_super_write_p;
static unsigned long super_written_addr;

/* The last superblock write a test disk saw. */
static DEFINE_SPINLOCK(sb_lock);
static struct {
	struct rb_disk *disk;
	struct md_rdev *rdev;
	sector_t sector;
	unsigned int size;
	struct page *page;
} last_sb;

/* The injected write, completed inside the teardown. */
static struct mddev *inject_mddev;
static struct bio_set *inject_pool;
static struct rb_disk *inject_disk;
static bool released;
static const char *released_in;

static unsigned long rb_symbol(const char *name)
{
	struct kprobe kp = { .symbol_name = name };
	unsigned long addr;

	if (register_kprobe(&kp) < 0)
		return 0;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	return addr;
}

int rb_md_prepare(void)
{
	md_super_write_p = (md_super_write_fn)rb_symbol("md_super_write");
	super_written_addr = rb_symbol("super_written");
	if (!md_super_write_p || !super_written_addr) {
		rb_result("fail md_prepare: md_super_write/super_written not found (md_mod loaded?)");
		return -ENOENT;
	}
	rb_result("ok md_prepare: md_super_write at %px, super_written at %px",
		  md_super_write_p, (void *)super_written_addr);
	return 0;
}

void rb_md_saw_bio(struct rb_disk *d, struct bio *bio)
{
	unsigned long flags;

	if (!super_written_addr || (unsigned long)bio->bi_end_io != super_written_addr)
		return;
	spin_lock_irqsave(&sb_lock, flags);
	last_sb.disk = d;
	last_sb.rdev = bio->bi_private;
	last_sb.sector = bio->bi_iter.bi_sector;
	last_sb.size = bio->bi_iter.bi_size;
	last_sb.page = bio_first_page_all(bio);
	spin_unlock_irqrestore(&sb_lock, flags);
}

static void md_complete_held(void *info)
{
	struct bio *bio, *next;

	for (bio = info; bio; bio = next) {
		next = bio->bi_next;
		bio->bi_next = NULL;
		bio_endio(bio);
	}
}

/* bioset_exit(bs): the end of __md_stop() when bs is the held write's pool. */
static int md_release_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct bio *held;
	unsigned int cpu;

	if (released || regs->di != (unsigned long)inject_pool)
		return 0;
	released = true;
	released_in = "bioset_exit(sync_set) at the end of __md_stop(), from an IPI on the other CPU";
	held = rb_disk_take_held(inject_disk);
	cpu = cpumask_any_but(cpu_online_mask, smp_processor_id());
	if (cpu < nr_cpu_ids) {
		smp_call_function_single(cpu, md_complete_held, held, 1);
	} else {
		released_in = "bioset_exit(sync_set) at the end of __md_stop()";
		md_complete_held(held);
	}
	return 0;
}

static struct kprobe release_probe = {
	.symbol_name = "bioset_exit",
	.pre_handler = md_release_pre,
};
static bool release_probe_armed;

int rb_md_inject(const char *md_path)
{
	struct block_device *bdev;
	struct mddev *mddev;
	struct rb_disk *d;
	struct md_rdev *rdev;
	struct page *page;
	sector_t sector;
	unsigned int size, held;
	int err;

	if (!md_super_write_p || release_probe_armed)
		return -EINVAL;
	bdev = blkdev_get_by_path(md_path, FMODE_READ, NULL);
	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	/* md_alloc(): disk->private_data = mddev */
	mddev = bdev->bd_disk->private_data;
	blkdev_put(bdev, FMODE_READ);

	spin_lock_irq(&sb_lock);
	d = last_sb.disk;
	rdev = last_sb.rdev;
	sector = last_sb.sector;
	size = last_sb.size;
	page = last_sb.page;
	spin_unlock_irq(&sb_lock);
	if (!d) {
		rb_result("fail md_inject: no superblock write seen on a test disk");
		return -ENODATA;
	}

	inject_mddev = mddev;
	inject_disk = d;
	released = false;

	spin_lock_irq(&d->lock);
	d->mode = RB_HOLD;
	d->hold_only = current;
	spin_unlock_irq(&d->lock);
	/* The same write md_update_sb() issues, minus its md_super_wait(). */
	md_super_write_p(mddev, rdev, sector, size, page);
	rb_disk_set_mode(d, RB_NORMAL, 0);

	held = rb_disk_nr_held(d);
	spin_lock_irq(&d->lock);
	inject_pool = held == 1 ? d->held.head->bi_pool : NULL;
	spin_unlock_irq(&d->lock);
	err = inject_pool ? register_kprobe(&release_probe) : -EPROTO;
	if (err) {
		rb_disk_release(d);
		rb_result("fail md_inject: %u superblock writes held on %s (1 expected), "
			  "kprobe on bioset_exit: %d", held, d->disk->disk_name, err);
		return -EPROTO;
	}
	release_probe_armed = true;
	rb_result("ok md_inject: superblock write to %s sector %llu (%u bytes) held, "
		  "mddev %px rdev %px", d->disk->disk_name, (unsigned long long)sector,
		  size, mddev, rdev);
	return 0;
}

int rb_md_check(bool expect_injected)
{
	unsigned int left;

	if (!expect_injected) {
		rb_result("ok md_check: nothing injected");
		return 0;
	}
	if (!release_probe_armed)
		return -EINVAL;
	unregister_kprobe(&release_probe);
	release_probe_armed = false;
	left = inject_disk ? rb_disk_nr_held(inject_disk) : 0;
	if (!released || left) {
		/*
		 * Completing it now could touch freed rdevs and a dead bio set:
		 * leave it held and fail loudly.
		 */
		rb_result("fail md_check: the held superblock write was not completed "
			  "inside the teardown (%u still held)", left);
		return -EPROTO;
	}
	rb_result("ok md_check: the held superblock write completed in %s, after "
		  "the teardown began", released_in);
	return 0;
}

void rb_md_exit(void)
{
	if (release_probe_armed)
		unregister_kprobe(&release_probe);
}
