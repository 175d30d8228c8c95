/* SPDX-License-Identifier: MIT */
/*
 * Snapshots of a whole VM: a directory holding
 *   config.json  the VM's configuration, as --config reads it;
 *   memory       guest RAM, byte for byte (a sparse file: pages of zeros are holes);
 *   state        the rest (common/snapshot_file.h): KVM's irqchip, PIT and clock, every vCPU,
 *                every device, including each virtqueue's positions.
 * `yun-vmm --restore DIR` builds the same machine, maps `memory` copy-on-write (pages load when
 * the guest touches them; the file is never written, so it can be restored again), puts the
 * state back and runs the vCPUs: the guest goes on where it was.
 */
#ifndef YUN_VMM_SNAPSHOT_H
#define YUN_VMM_SNAPSHOT_H

struct vm;

/*
 * Write a snapshot of a paused VM into dir (created if missing). Runs on the event loop's
 * thread (event_loop_call()), so that no device moves meanwhile. 0 or -errno, logged.
 */
int vm_snapshot_save(struct vm *vm, const char *dir);
/* Open dir's memory file for vm_create() (-errno, logged). */
int vm_snapshot_open_memory(const char *dir, int *fd);
/* Put the state back into a VM just built from the snapshot's configuration and memory. */
int vm_snapshot_load(struct vm *vm, const char *dir);

#endif
