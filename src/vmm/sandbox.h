/* SPDX-License-Identifier: MIT */
/*
 * yun-vmm's seccomp sandbox (libseccomp). Each thread narrows itself to the system calls its
 * role needs; filters stack, so a thread started by a sandboxed thread keeps its parent's
 * filter and adds its own. Anything else is trapped: the process logs the call and dies of
 * SIGSYS. PR_SET_NO_NEW_PRIVS comes with the first filter.
 *
 *   main   set-up (and set-up again after a guest reset), the event loop with every device's
 *          queues, the console, signals: the broadest list
 *   vcpu   KVM_RUN and the exits it handles (port and MMIO accesses reach device registers,
 *          and a virtio device's activation or reset runs here): only KVM's and the tap's ioctls
 *   api    the control API's HTTP thread: sockets it was given, the vCPUs' register ioctls
 */
#ifndef YUN_VMM_SANDBOX_H
#define YUN_VMM_SANDBOX_H

#include <stdbool.h>

enum sandbox_role { SANDBOX_MAIN, SANDBOX_VCPU, SANDBOX_API };

/* Off with --no-sandbox (for debugging); on by default. */
void sandbox_set_enabled(bool on);
bool sandbox_enabled(void);
/* Install the calling thread's filter. Logs and returns -errno on failure. */
int sandbox_enter(enum sandbox_role role);
/*
 * Drop every capability of the calling thread (and so of the threads it starts later), from
 * the bounding set too, but CAP_NET_ADMIN when a tap may have to be created again after a
 * guest reset. Called before any other thread starts.
 */
int sandbox_drop_capabilities(bool keep_net_admin);

#endif
