/* SPDX-License-Identifier: MIT */
/*
 * yun-vmm's jail (--jail DIR --uid U --gid G), after Firecracker's jailer: the process, still
 * root and single-threaded, makes the device nodes a VM needs inside DIR, chroots into DIR
 * and becomes U:G with no capability left. Everything it opens afterwards (kernel, initrd,
 * disks, /dev/kvm, /dev/net/tun, sockets, the console file), again after a guest reset, is
 * found inside DIR; what DIR holds is the host's to put there.
 */
#ifndef YUN_VMM_JAIL_H
#define YUN_VMM_JAIL_H

#include <sys/types.h>

/*
 * Make DIR/dev/kvm, DIR/dev/urandom and DIR/dev/net/tun (character devices, owned by
 * uid:gid, mode 0600), chroot into DIR, drop supplementary groups, switch to gid and uid for
 * good and empty every capability set. Before any thread starts. Logs and returns -errno on
 * failure.
 */
int jail_enter(const char *dir, uid_t uid, gid_t gid);

#endif
