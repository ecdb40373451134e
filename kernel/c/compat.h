/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kern2usr builds against Debian's 6.1 and 6.12 and against 7.3: the kernel
 * API differences it meets are bridged here, and only here.
 */
#ifndef _KERN2USR_COMPAT_H
#define _KERN2USR_COMPAT_H

#include <linux/device.h>
#include <linux/eventfd.h>
#include <linux/capability.h>
#include <linux/hrtimer.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/version.h>

/* 6.12 moved the unaligned accessors (the fill's word copies) to linux/. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

/* Since 6.8 eventfd_signal() only adds 1: the codes travel as records. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
#define K2U_EVENT_MODE K2U_EVENT_MODE_QUEUE
#define K2U_QUEUE_MODE 1
#else
#define K2U_EVENT_MODE K2U_EVENT_MODE_COUNTER
#define K2U_QUEUE_MODE 0
#endif

/* Ring efd: in counter mode the counter carries @code, else it adds 1. */
static inline void k2u_eventfd_ring(struct eventfd_ctx *ctx, unsigned int code)
{
#if K2U_QUEUE_MODE
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, code);
#endif
}

/*
 * WQ_PERCPU came with 6.17 (and stable backports such as Debian's 6.12);
 * where it exists, a workqueue without it or WQ_UNBOUND warns. Kbuild
 * looks for it in the headers, as no version number tells.
 */
#ifdef K2U_HAVE_WQ_PERCPU
#define K2U_WQ_PERCPU WQ_PERCPU
#else
#define K2U_WQ_PERCPU 0
#endif

/* 6.4 dropped class_create()'s owner argument. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
#define k2u_class_create(name) class_create(name)
#else
#define k2u_class_create(name) class_create(THIS_MODULE, name)
#endif

/* 6.2 made the device of class->devnode() const. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define K2U_DEVNODE_DEV const struct device
#else
#define K2U_DEVNODE_DEV struct device
#endif

/*
 * The dumpability step of __ptrace_may_access(): a target that is not
 * dumpable needs CAP_SYS_PTRACE in the namespace it belongs to. Until 7.x
 * that is the mm's flag (needs task_lock); since then the task's
 * exec_state, under RCU. Call with both held. No exported helper does it.
 */
#ifdef K2U_HAVE_EXEC_STATE
#include <linux/sched/exec_state.h>

static inline bool k2u_dumpable_or_capable(struct task_struct *task)
{
	const struct task_exec_state *es = rcu_dereference(task->exec_state);

	return READ_ONCE(es->dumpable) == TASK_DUMPABLE_OWNER ||
	       ns_capable(es->user_ns, CAP_SYS_PTRACE);
}
#else
#include <linux/sched/coredump.h>

static inline bool k2u_dumpable_or_capable(struct task_struct *task)
{
	struct mm_struct *mm = task->mm;

	return !mm || get_dumpable(mm) == SUID_DUMP_USER ||
	       ns_capable(mm->user_ns, CAP_SYS_PTRACE);
}
#endif

/* 6.3 made vma->vm_flags read-only: set flags through vm_flags_set(). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define k2u_vm_flags_set(vma, flags) vm_flags_set(vma, flags)
#define k2u_vm_flags_clear(vma, flags) vm_flags_clear(vma, flags)
#else
#define k2u_vm_flags_set(vma, flags) ((vma)->vm_flags |= (flags))
#define k2u_vm_flags_clear(vma, flags) ((vma)->vm_flags &= ~(flags))
#endif

/* 6.13 replaced hrtimer_init() + ->function by hrtimer_setup(). */
static inline void k2u_hrtimer_setup(struct hrtimer *timer,
				     enum hrtimer_restart (*fn)(struct hrtimer *))
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	hrtimer_setup(timer, fn, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
	timer->function = fn;
#endif
}

#endif /* _KERN2USR_COMPAT_H */
