// SPDX-License-Identifier: GPL-2.0-only
/*
 * The producer API of kern2usr_producer.h, implemented in Rust (producer.rs,
 * `#[no_mangle] extern "C"` functions) and exported here: a module's
 * symbols are exported from C (EXPORT_SYMBOL_GPL); Rust has no equivalent.
 * Including the header declares them with the prototypes other modules
 * compile against; producer.rs mirrors them.
 */
#include <linux/build_bug.h>
#include <linux/export.h>
#include <linux/stddef.h>

#include "../c/include/kern2usr_producer.h"

/* producer.rs mirrors these: K2uProducerOpts and the ATTACH_* constants. */
static_assert(sizeof(struct k2u_producer_opts) == 12);
static_assert(offsetof(struct k2u_producer_opts, attach) == 0);
static_assert(offsetof(struct k2u_producer_opts, uid) == 4);
static_assert(offsetof(struct k2u_producer_opts, gid) == 8);
static_assert(K2U_ATTACH_UID == 0x1 && K2U_ATTACH_GID == 0x2 &&
	      K2U_ATTACH_ANYONE == 0x4);

EXPORT_SYMBOL_GPL(k2u_producer_create);
EXPORT_SYMBOL_GPL(k2u_producer_create_opts);
EXPORT_SYMBOL_GPL(k2u_producer_destroy);
EXPORT_SYMBOL_GPL(k2u_producer_reserve);
EXPORT_SYMBOL_GPL(k2u_producer_publish);
EXPORT_SYMBOL_GPL(k2u_producer_wait_ack);
