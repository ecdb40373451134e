// SPDX-License-Identifier: GPL-2.0-only
/*
 * The sample producer, built beside the Rust kern2usr.ko from the C
 * module's source, so that one sample serves both modules.
 */
#include "../c/k2u_sample_producer.c"
