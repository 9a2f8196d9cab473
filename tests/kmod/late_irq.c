// SPDX-License-Identifier: GPL-2.0
/*
 * Late complete() from interrupts, on a DECLARE_COMPLETION_ONSTACK whose
 * owner gave up waiting: the most common driver shape of seed 000. The
 * owner arms its device (a pinned hrtimer here), waits with
 * wait_for_completion_timeout(), times out and returns; the device's
 * interrupt comes later and completes the dead frame.
 *
 * late_complete_irq: the owner is a kthread on LI_CPU. After it returned it
 * sleeps, and a later interrupt on the same CPU (a second timer) wakes it.
 * Both interrupts must be taken in kernel mode (the CPU idle, or running
 * some task in the kernel), so that they run on the CPU's interrupt stack:
 * one taken in user mode runs on that task's stack (irq_in_user). They
 * re-arm themselves until they are.
 *
 * irq_in_user: the owner is a user task pinned to one CPU (the guest script
 * runs it under taskset); it wrote to debugfs, gave up, and returned to
 * user space, where it spins. The interrupt is taken while it runs in user
 * mode, so x86 runs the handler on the owner's own (empty) kernel stack:
 * the late complete() is in the owner's context, on the owner's stack.
 * The timer re-arms itself until it catches the owner in user mode.
 *
 * The fixed twins are the usual fix: after the timed wait gives up, the
 * owner waits for the interrupt's complete() before it leaves the frame.
 *
 * Keeping the guest alive, as in onstack.c: the completion sits below
 * RB_PAD_FRAMES padded frames, the owner stays shallow after its return,
 * and the late complete() is skipped (the scenario fails) if the dead
 * completion no longer looks as the timed-out wait left it.
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <asm/irq_regs.h>
#include <asm/ptrace.h>

#include "racebench.h"

#define RB_PAD_FRAMES 20
#define RB_PAD_BYTES 512

/* Runs fn(arg) below RB_PAD_FRAMES * RB_PAD_BYTES of stack. */
static noinline int rb_deep(int depth, void (*fn)(bool), bool arg)
{
	volatile char pad[RB_PAD_BYTES];

	pad[0] = depth;
	if (depth)
		rb_deep(depth - 1, fn, arg);
	else
		fn(arg);
	/* a use after the call: no tail call, the pad stays */
	return pad[0] - depth;
}

/* The dead completion is still what a timed-out wait left: done 0, no waiters. */
static bool rb_dead_intact(struct completion *c)
{
	return READ_ONCE(c->done) == 0 && !raw_spin_is_locked(&c->wait.lock) &&
	       READ_ONCE(c->wait.task_list.next) == &c->wait.task_list;
}

/* late_complete_irq */
#define LI_CPU 1
#define LI_GIVE_UP_MS 100
#define LI_LATE_MS 300
#define LI_WAKE_MS 600
#define LI_RETRY_US 200

static struct hrtimer li_late, li_wake;
static struct completion *li_wait;
static struct task_struct *li_owner;
static bool li_fixed, li_gave_up, li_late_done, li_woken, li_frame_reused;
static ktime_t li_returned_at, li_late_at, li_wake_at;
static int li_late_cpu = -1, li_wake_cpu = -1;
static DECLARE_COMPLETION(li_owner_done);

/* Whether the interrupt came from user mode; if so, the timer is re-armed. */
static bool li_from_user(struct hrtimer *t)
{
	struct pt_regs *regs = get_irq_regs();

	if (!regs || !user_mode(regs))
		return false;
	hrtimer_forward_now(t, ns_to_ktime(LI_RETRY_US * NSEC_PER_USEC));
	return true;
}

static enum hrtimer_restart li_late_fire(struct hrtimer *t)
{
	struct completion *c = READ_ONCE(li_wait);

	if (li_from_user(t))
		return HRTIMER_RESTART;
	li_late_cpu = smp_processor_id();
	if (li_fixed || rb_dead_intact(c))
		complete(c);
	else
		WRITE_ONCE(li_frame_reused, true);
	li_late_at = ktime_get();
	WRITE_ONCE(li_late_done, true);
	return HRTIMER_NORESTART;
}

static enum hrtimer_restart li_wake_fire(struct hrtimer *t)
{
	if (li_from_user(t))
		return HRTIMER_RESTART;
	li_wake_cpu = smp_processor_id();
	li_wake_at = ktime_get();
	WRITE_ONCE(li_woken, true);
	wake_up_process(li_owner);
	return HRTIMER_NORESTART;
}

static noinline void li_frame(bool fixed)
{
	DECLARE_COMPLETION_ONSTACK(wait);
	unsigned long left;

	WRITE_ONCE(li_wait, &wait);
	/* the device's interrupt, and a later one on the same CPU */
	hrtimer_start(&li_late, ms_to_ktime(LI_LATE_MS), HRTIMER_MODE_REL_PINNED);
	hrtimer_start(&li_wake, ms_to_ktime(LI_WAKE_MS), HRTIMER_MODE_REL_PINNED);
	left = wait_for_completion_timeout(&wait, msecs_to_jiffies(LI_GIVE_UP_MS));
	li_gave_up = !left;
	if (fixed && !left)
		wait_for_completion(&wait);
	li_returned_at = ktime_get();
}

static int li_owner_fn(void *data)
{
	rb_deep(RB_PAD_FRAMES, li_frame, li_fixed);
	/* Shallow from here: asleep until the second interrupt wakes it. */
	for (;;) {
		set_current_state(TASK_UNINTERRUPTIBLE);
		if (READ_ONCE(li_woken) && READ_ONCE(li_late_done))
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
	complete(&li_owner_done);
	return 0;
}

int rb_late_complete_irq(bool fixed)
{
	unsigned long addr;
	s64 late_us, wake_us;
	pid_t pid;
	int err = 0;

	if (!cpu_online(LI_CPU))
		return -ENODEV;
	li_fixed = fixed;
	li_gave_up = li_late_done = li_woken = li_frame_reused = false;
	li_late_cpu = li_wake_cpu = -1;
	reinit_completion(&li_owner_done);
	hrtimer_init(&li_late, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED);
	li_late.function = li_late_fire;
	hrtimer_init(&li_wake, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED);
	li_wake.function = li_wake_fire;
	li_owner = kthread_create(li_owner_fn, NULL, "rb_late_owner");
	if (IS_ERR(li_owner))
		return PTR_ERR(li_owner);
	kthread_bind(li_owner, LI_CPU);
	get_task_struct(li_owner);
	pid = li_owner->pid;
	wake_up_process(li_owner);
	if (!wait_for_completion_timeout(&li_owner_done, 10 * HZ)) {
		/* the owner sleeps until both timers ran: run them now */
		hrtimer_cancel(&li_late);
		hrtimer_cancel(&li_wake);
		WRITE_ONCE(li_late_done, true);
		WRITE_ONCE(li_woken, true);
		wake_up_process(li_owner);
		wait_for_completion(&li_owner_done);
		err = -ETIMEDOUT;
	}
	put_task_struct(li_owner);
	addr = (unsigned long)READ_ONCE(li_wait);

	late_us = ktime_us_delta(li_late_at, li_returned_at);
	wake_us = ktime_us_delta(li_wake_at, li_late_at);
	if (!err && (!li_gave_up || li_frame_reused || li_late_cpu != LI_CPU ||
		     li_wake_cpu != LI_CPU || wake_us <= 0 || (fixed ? late_us > 0 : late_us <= 0)))
		err = -EPROTO;
	rb_result("%s late_complete_irq%s: completion at 0x%lx of rb_late_owner (pid %d, cpu %d): it "
		  "gave up waiting after %d ms; complete() from a timer interrupt on cpu %d %lld us "
		  "%s it returned%s; a timer interrupt on cpu %d woke it %lld us later",
		  err ? "fail" : "ok", fixed ? "_fixed" : "", addr, pid, LI_CPU, LI_GIVE_UP_MS,
		  li_late_cpu, abs(late_us), late_us > 0 ? "after" : "before",
		  li_frame_reused ? " (skipped: the dead frame was reused)" : "", li_wake_cpu,
		  wake_us);
	return err;
}

/* irq_in_user */
#define IU_GIVE_UP_MS 10
/*
 * The timer must fire after the owner gave up (IU_GIVE_UP_MS): a margin
 * wide enough for a vCPU descheduled on a loaded emulating host, or the
 * fixed twin's wait returns before giving up and proves nothing.
 */
#define IU_LATE_MS 250
#define IU_RETRY_US 200
#define IU_MAX_TRIES 20000

enum { IU_ARMED, IU_FIRED, IU_GAVE_UP };

static struct hrtimer iu_timer;
static struct task_struct *iu_owner;
static struct completion *iu_wait;
static bool iu_armed, iu_fixed, iu_gave_up, iu_in_user, iu_frame_reused;
static int iu_cpu, iu_tries;
static atomic_t iu_state;
static ktime_t iu_returned_at, iu_fired_at;

/* The owner's device interrupt: in the racy case, only once the owner runs in user mode. */
static enum hrtimer_restart iu_fire(struct hrtimer *t)
{
	struct pt_regs *regs = get_irq_regs();
	struct completion *c = READ_ONCE(iu_wait);
	bool in_user = regs && user_mode(regs) && current == iu_owner;

	if (!iu_fixed && !in_user) {
		if (++iu_tries < IU_MAX_TRIES) {
			hrtimer_forward_now(t, ns_to_ktime(IU_RETRY_US * NSEC_PER_USEC));
			return HRTIMER_RESTART;
		}
		atomic_set(&iu_state, IU_GAVE_UP);
		return HRTIMER_NORESTART;
	}
	iu_in_user = in_user;
	if (iu_fixed || rb_dead_intact(c))
		complete(c);
	else
		WRITE_ONCE(iu_frame_reused, true);
	iu_fired_at = ktime_get();
	atomic_set(&iu_state, IU_FIRED);
	return HRTIMER_NORESTART;
}

static noinline void iu_frame(bool fixed)
{
	DECLARE_COMPLETION_ONSTACK(wait);
	unsigned long left;

	WRITE_ONCE(iu_wait, &wait);
	hrtimer_start(&iu_timer, ms_to_ktime(IU_LATE_MS), HRTIMER_MODE_REL_PINNED);
	left = wait_for_completion_timeout(&wait, msecs_to_jiffies(IU_GIVE_UP_MS));
	iu_gave_up = !left;
	if (fixed && !left)
		wait_for_completion(&wait);
	iu_returned_at = ktime_get();
}

/* The owner's system call: returns to user space with the timer armed. */
int rb_irq_in_user(bool fixed)
{
	if (current->nr_cpus_allowed != 1) {
		rb_result("fail irq_in_user: run it pinned to one CPU (taskset)");
		return -EINVAL;
	}
	if (iu_armed)
		return -EBUSY;
	iu_armed = true;
	iu_fixed = fixed;
	iu_gave_up = iu_in_user = iu_frame_reused = false;
	iu_tries = 0;
	atomic_set(&iu_state, IU_ARMED);
	/* the timer compares current with it: no other task may get its address */
	iu_owner = get_task_struct(current);
	iu_cpu = raw_smp_processor_id();
	hrtimer_init(&iu_timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED);
	iu_timer.function = iu_fire;
	rb_deep(RB_PAD_FRAMES, iu_frame, fixed);
	rb_result("armed irq_in_user%s: completion at 0x%lx", fixed ? "_fixed" : "",
		  (unsigned long)iu_wait);
	return 0;
}

/* Run by the owner after its spin in user space: the interrupt's verdict. */
int rb_irq_in_user_check(void)
{
	int i, state, err = 0;
	s64 late_us;

	if (!iu_armed)
		return -EINVAL;
	for (i = 0; i < 250 && atomic_read(&iu_state) == IU_ARMED; i++)
		msleep(20);
	hrtimer_cancel(&iu_timer);
	iu_armed = false;
	state = atomic_read(&iu_state);
	late_us = ktime_us_delta(iu_fired_at, iu_returned_at);
	if (state != IU_FIRED || !iu_gave_up || iu_frame_reused ||
	    (iu_fixed ? late_us > 0 : late_us <= 0 || !iu_in_user))
		err = -EPROTO;
	rb_result("%s irq_in_user%s: completion at 0x%lx on the stack of pid %d (cpu %d): it gave up "
		  "waiting after %d ms; complete() from a timer interrupt %s, %lld us %s it returned "
		  "(%d retries)%s",
		  err ? "fail" : "ok", iu_fixed ? "_fixed" : "", (unsigned long)iu_wait,
		  task_pid_nr(iu_owner), iu_cpu, IU_GIVE_UP_MS,
		  state != IU_FIRED ? "that never caught it in user mode" :
		  iu_in_user ? "taken in its user mode" : "taken while it waited",
		  abs(late_us), late_us > 0 ? "after" : "before", iu_tries,
		  iu_frame_reused ? " (skipped: the dead frame was reused)" : "");
	put_task_struct(iu_owner);
	return err;
}

/* Module unload: a timer left armed by an owner that never checked. */
void rb_late_irq_exit(void)
{
	if (iu_armed) {
		hrtimer_cancel(&iu_timer);
		put_task_struct(iu_owner);
	}
}
