// SPDX-License-Identifier: GPL-2.0
/*
 * racebench: module setup and the debugfs interface (see racebench.h).
 */
#include <linux/debugfs.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>

#include "racebench.h"

static struct dentry *rb_dir;
/* One scenario at a time: they share the scratch disk and test hooks. */
static DEFINE_MUTEX(rb_run_lock);
static DEFINE_SPINLOCK(rb_result_lock);
static char rb_result_buf[256];

void rb_result(const char *fmt, ...)
{
	va_list args;

	spin_lock(&rb_result_lock);
	va_start(args, fmt);
	vscnprintf(rb_result_buf, sizeof(rb_result_buf), fmt, args);
	va_end(args);
	spin_unlock(&rb_result_lock);
	pr_info(RB_NAME ": %s\n", rb_result_buf);
}

static int rb_run(const char *name, const char *arg)
{
	static const struct {
		const char *name;
		int (*fn)(bool fixed);
		bool fixed;
	} table[] = {
		{ "onstack", rb_onstack, false },
		{ "onstack_fixed", rb_onstack, true },
		{ "lost_wakeup", rb_lost_wakeup, false },
		{ "lost_wakeup_fixed", rb_lost_wakeup, true },
		{ "double_complete", rb_double_complete, false },
		{ "double_complete_fixed", rb_double_complete, true },
		{ "stuck_handler", rb_stuck_handler, false },
		{ "stuck_handler_fixed", rb_stuck_handler, true },
		{ "complete_after_teardown", rb_complete_after_teardown, false },
		{ "complete_after_teardown_fixed", rb_complete_after_teardown, true },
		{ "endio_swap", rb_endio_swap, false },
		{ "endio_swap_fixed", rb_endio_swap, true },
		{ "late_complete_irq", rb_late_complete_irq, false },
		{ "late_complete_irq_fixed", rb_late_complete_irq, true },
		{ "irq_in_user", rb_irq_in_user, false },
		{ "irq_in_user_fixed", rb_irq_in_user, true },
		{ "md_check", rb_md_check, true },
		{ "md_check_clean", rb_md_check, false },
	};
	static const struct {
		const char *name;
		int (*fn)(void);
	} plain[] = {
		{ "double_complete_lost_events", rb_double_complete_lost_events },
		{ "stall_recovers", rb_stall_recovers },
		{ "sleeping_handler", rb_sleeping_handler },
		{ "iowait_folio_lock", rb_iowait_folio_lock },
		{ "iowait_timeout", rb_iowait_timeout },
		{ "irq_in_user_check", rb_irq_in_user_check },
		{ "queue_unfreeze", rb_queue_unfreeze },
		{ "md_prepare", rb_md_prepare },
	};
	int i;

	for (i = 0; i < ARRAY_SIZE(plain); i++)
		if (!strcmp(name, plain[i].name))
			return plain[i].fn();
	if (!strcmp(name, "md_inject"))
		return arg ? rb_md_inject(arg) : -EINVAL;
	if (!strcmp(name, "queue_freeze"))
		return arg ? rb_queue_freeze(arg) : -EINVAL;
	for (i = 0; i < ARRAY_SIZE(table); i++)
		if (!strcmp(name, table[i].name))
			return table[i].fn(table[i].fixed);
	return -ENOENT;
}

/* Copies a short command from user space and splits off its first word. */
static int rb_read_cmd(const char __user *ubuf, size_t len, char *buf, size_t size,
		       char **rest)
{
	char *s;

	if (len >= size)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	s = strim(buf);
	if (s != buf)
		memmove(buf, s, strlen(s) + 1);
	*rest = strchr(buf, ' ');
	if (*rest) {
		**rest = 0;
		*rest = skip_spaces(*rest + 1);
	}
	return 0;
}

static ssize_t run_write(struct file *f, const char __user *ubuf, size_t len, loff_t *pos)
{
	char buf[128], *arg;
	int err = rb_read_cmd(ubuf, len, buf, sizeof(buf), &arg);

	if (err)
		return err;
	mutex_lock(&rb_run_lock);
	pr_info(RB_NAME ": run %s%s%s\n", buf, arg ? " " : "", arg ? arg : "");
	err = rb_run(buf, arg);
	mutex_unlock(&rb_run_lock);
	return err ? err : len;
}

static ssize_t disk_write(struct file *f, const char __user *ubuf, size_t len, loff_t *pos)
{
	static const char *const modes[] = {
		[RB_NORMAL] = "normal", [RB_HOLD] = "hold", [RB_DELAY] = "delay",
		[RB_DUP] = "dup", [RB_DUP_FIXED] = "dup_fixed",
		[RB_SWAP_DUP] = "swap_dup", [RB_SWAP_DUP_FIXED] = "swap_dup_fixed",
		[RB_INLINE] = "inline",
	};
	char buf[64], *arg, *ms;
	struct rb_disk *d;
	unsigned int delay = 0;
	int err = rb_read_cmd(ubuf, len, buf, sizeof(buf), &arg);
	int i;

	if (err)
		return err;
	d = rb_disk_find(buf);
	if (!d || !arg)
		return -EINVAL;
	ms = strchr(arg, ' ');
	if (ms) {
		*ms = 0;
		if (kstrtouint(skip_spaces(ms + 1), 10, &delay))
			return -EINVAL;
	}
	if (!strcmp(arg, "release")) {
		pr_info(RB_NAME ": %s: released %u bios\n", buf, rb_disk_release(d));
		return len;
	}
	for (i = 0; i < ARRAY_SIZE(modes); i++) {
		if (!strcmp(arg, modes[i])) {
			rb_disk_set_mode(d, i, delay);
			pr_info(RB_NAME ": %s: mode %s\n", buf, arg);
			return len;
		}
	}
	return -EINVAL;
}

static ssize_t result_read(struct file *f, char __user *ubuf, size_t len, loff_t *pos)
{
	char buf[sizeof(rb_result_buf) + 1];
	int n;

	spin_lock(&rb_result_lock);
	n = scnprintf(buf, sizeof(buf), "%s\n", rb_result_buf);
	spin_unlock(&rb_result_lock);
	return simple_read_from_buffer(ubuf, len, pos, buf, n);
}

static const struct file_operations run_fops = { .owner = THIS_MODULE, .write = run_write };
static const struct file_operations disk_fops = { .owner = THIS_MODULE, .write = disk_write };
static const struct file_operations result_fops = { .owner = THIS_MODULE, .read = result_read };

static void rb_cleanup(void)
{
	int i;

	debugfs_remove_recursive(rb_dir);
	rb_queue_unfreeze();
	rb_late_irq_exit();
	rb_md_exit();
	for (i = 0; i < RB_NR_DISKS; i++) {
		if (!IS_ERR_OR_NULL(rb_disks[i]))
			rb_disk_destroy(rb_disks[i]);
		rb_disks[i] = NULL;
	}
}

static int __init rb_init(void)
{
	/* rb0 and rb1 are md members, rb2 the scenarios' scratch disk */
	static const unsigned int mib[RB_NR_DISKS] = { 32, 32, 16 };
	char name[8];
	int i;

	for (i = 0; i < RB_NR_DISKS; i++) {
		snprintf(name, sizeof(name), "rb%d", i);
		rb_disks[i] = rb_disk_create(name, mib[i]);
		if (IS_ERR(rb_disks[i])) {
			int err = PTR_ERR(rb_disks[i]);

			rb_disks[i] = NULL;
			rb_cleanup();
			return err;
		}
	}
	rb_dir = debugfs_create_dir(RB_NAME, NULL);
	debugfs_create_file("run", 0200, rb_dir, NULL, &run_fops);
	debugfs_create_file("disk", 0200, rb_dir, NULL, &disk_fops);
	debugfs_create_file("result", 0400, rb_dir, NULL, &result_fops);
	pr_info(RB_NAME ": ready: rb0 rb1 (md members), rb2 (scratch)\n");
	return 0;
}

static void __exit rb_exit(void)
{
	rb_cleanup();
}

module_init(rb_init);
module_exit(rb_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Reproduces block and completion races for detector's VM bench");
