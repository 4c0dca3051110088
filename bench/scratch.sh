#!/bin/bash
# Re-create the benchmark's scratch filesystem: a fresh loop-mounted ext4
# image, so every repetition starts from empty stores and the wipe costs
# nothing (deleting many files on the work disk runs at ~540 files/s).
#
#   bench/scratch.sh mount DIR IMG SIZE   # (re)format IMG and mount it on DIR
#   bench/scratch.sh unmount DIR IMG      # unmount (and submounts), delete IMG
#
# Like lib.sh's mount_scratch, but in its own place (the tests use lib.sh's
# scratch at the same time) and mounted with noinit_itable: otherwise the
# kernel's ext4lazyinit thread zeroes inode tables in the background during
# the measurements. The image is a fresh sparse file, so the tables read as
# zeros anyway.
set -euo pipefail

release() {
    local dir=$1 m
    mountpoint -q "$dir" || return 0
    { grep -o " $dir/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    umount "$dir" 2>/dev/null || umount -l "$dir"
}

case ${1:-} in
mount)
    dir=$2 img=$3 size=${4:-24G}
    release "$dir"
    rm -f "$img"
    mkdir -p "$(dirname "$img")" "$dir"
    truncate -s "$size" "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$img"
    mount -o loop,noinit_itable "$img" "$dir"
    ;;
unmount)
    dir=$2 img=$3
    release "$dir"
    rm -f "$img"
    ;;
*)
    echo "usage: $0 mount DIR IMG [SIZE] | unmount DIR IMG" >&2
    exit 2
    ;;
esac
