/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kern2usr builds against Debian's 6.1 and 6.12 and against 7.3: the kernel
 * API differences it meets are bridged here, and only here.
 */
#ifndef _KERN2USR_COMPAT_H
#define _KERN2USR_COMPAT_H

#include <linux/device.h>
#include <linux/eventfd.h>
#include <linux/hrtimer.h>
#include <linux/version.h>

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
