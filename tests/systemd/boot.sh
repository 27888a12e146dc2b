#!/bin/bash
# Boots systemd as PID 1 of the fresh namespaces this script runs in (see
# tests/systemd_boot.rs, which starts it under `unshare`): an overlay of the
# host's / whose changes stay on a tmpfs (the host's /etc and /usr are never
# touched), a fresh /proc, a read-only /sys, the namespace's own cgroup2,
# and tmpfs /dev, /run and /tmp. Then pivot_root, and exec systemd.
#
#   boot.sh SCRATCH [DIR...]
#
# SCRATCH: an empty directory for the overlay. Each DIR (the checkout, the
# binaries) is bound read-only at its own path, so that it is seen inside
# even where a tmpfs covers it (a checkout under /tmp).
set -euo pipefail
scratch="$1"
shift
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs "$scratch"
mkdir "$scratch"/{upper,work,root}
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
root="$scratch/root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
for d in dev run tmp; do mount -t tmpfs -o mode=0755 tmpfs "$root/$d"; done
chmod 1777 "$root/tmp"
for dir in "$@"; do
  mkdir -p "$root$dir"
  mount --bind "$dir" "$root$dir"
  mount -o remount,bind,ro "$root$dir"
done
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
# A machine id of its own, so the journal and user managers are content.
tr -d - < /proc/sys/kernel/random/uuid > "$root/etc/machine-id"
mkdir -p "$root/oldroot"
cd "$root"
pivot_root . oldroot
umount -l /oldroot
rmdir /oldroot
export container=piper-test
exec /lib/systemd/systemd --system
