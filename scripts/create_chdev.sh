#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Step 5 of the walkthrough: make the seed's node /dev/char/mmaptest for the
# kern2usr device. The module already creates /dev/kern2usr (dynamic major,
# mode 0600); this gives the same device the seed's name.
# Usage: create_chdev.sh [--remove]
set -eu
node=/dev/char/mmaptest
# The C module registers its own class; the Rust module a misc device.
sysdev=/sys/class/kern2usr/kern2usr/dev
[ -r "$sysdev" ] || sysdev=/sys/class/misc/kern2usr/dev

if [ "${1:-}" = "--remove" ]; then
	rm -f "$node"
	exit 0
fi
if [ ! -r "$sysdev" ]; then
	echo "create_chdev.sh: $sysdev not found: insmod kern2usr.ko first" >&2
	exit 1
fi
majmin=$(cat "$sysdev")
major=${majmin%%:*}
minor=${majmin##*:}
mkdir -p /dev/char
rm -f "$node"
mknod -m 0600 "$node" c "$major" "$minor"
echo "Created $node (major $major, minor $minor)"
