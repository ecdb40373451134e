// SPDX-License-Identifier: GPL-2.0-only
/*
 * The producer API of kern2usr_producer.h, implemented in Rust (producer.rs,
 * `#[no_mangle] extern "C"` functions) and exported here: a module's
 * symbols are exported from C (EXPORT_SYMBOL_GPL); Rust has no equivalent.
 * Including the header declares them with the prototypes other modules
 * compile against; producer.rs mirrors them.
 */
#include <linux/export.h>

#include "../c/include/kern2usr_producer.h"

EXPORT_SYMBOL_GPL(k2u_producer_create);
EXPORT_SYMBOL_GPL(k2u_producer_destroy);
EXPORT_SYMBOL_GPL(k2u_producer_reserve);
EXPORT_SYMBOL_GPL(k2u_producer_publish);
EXPORT_SYMBOL_GPL(k2u_producer_wait_ack);
