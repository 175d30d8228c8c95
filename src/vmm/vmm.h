/* SPDX-License-Identifier: MIT */
/*
 * The yun-vmm process: one configuration, the VM built from it (again after each guest reset),
 * and its state as the control API sees it. main() runs it; the API thread drives it through
 * these functions, which take the lock, check the state and return 0 or -errno with a message
 * for the caller (vmm_error()).
 */
#ifndef YUN_VMM_VMM_H
#define YUN_VMM_VMM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/console.h"
#include "devices/virtio/net.h"
#include "devices/virtio/rng.h"
#include "vmm/config.h"
#include "vmm/emulate.h"
#include "vmm/memory.h"
#include "vmm/vm.h"

enum vmm_state {
	VMM_NOT_STARTED, /* configuring, waiting for the API's InstanceStart */
	VMM_RUNNING,
	VMM_PAUSED,
	VMM_SHUTTING_DOWN, /* the guest was asked to power off and has not yet */
	VMM_STOPPED,
};

struct console;

struct vmm {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* state changed */
	struct vm_config *cfg;
	struct console *console;
	enum vmm_state state;
	struct vm *vm;	    /* while one exists */
	enum vm_exit exit;  /* why the last VM stopped */
	int exit_signal;    /* for VM_EXIT_SIGNAL */
	unsigned boots;	    /* VMs built so far (a reset builds another) */
	char error[256];    /* the message of the last failed call */
	char restore[4096]; /* the snapshot PUT /snapshot/load named (cfg->restore points here) */
};

/* Counters of the running VM, for the metrics endpoint. */
struct vmm_metrics {
	unsigned nr_vcpus;
	uint64_t exits[VM_MAX_CPUS][64];	      /* by KVM_EXIT_* reason, vCPU by vCPU */
	uint64_t emulated[VM_MAX_CPUS][EMU_NR_INSNS]; /* by instruction (emulate.h) */
	unsigned nr_disks;
	struct blk_stats disks[VM_MAX_DISKS];
	bool has_net, has_rng, has_vconsole;
	struct net_stats net;
	struct rng_stats rng;
	struct virtio_console_stats vconsole;
};

void vmm_init(struct vmm *m, struct vm_config *cfg, struct console *console);
void vmm_destroy(struct vmm *m);
/* Build and run the VM until it stops for good (a reset builds it again); returns why. */
enum vm_exit vmm_run(struct vmm *m);

const char *vmm_error(struct vmm *m);
const char *vmm_state_name(enum vmm_state s);
enum vmm_state vmm_state(struct vmm *m);

/* Lifecycle (from the API thread). */
int vmm_start(struct vmm *m);
int vmm_pause(struct vmm *m);
int vmm_resume(struct vmm *m);
int vmm_power_button(struct vmm *m);
int vmm_ctrl_alt_del(struct vmm *m);
int vmm_stop(struct vmm *m);
/* Write a snapshot of the paused VM into dir (snapshot.h). */
int vmm_snapshot(struct vmm *m, const char *dir);
/*
 * Before start: take the configuration of the snapshot in dir (its config.json) and start the
 * VM from it, as --restore does. A bad configuration changes nothing.
 */
int vmm_load_snapshot(struct vmm *m, const char *dir);
/*
 * Replace the configuration before start with one given as JSON (see config.h); a bad one
 * changes nothing.
 */
int vmm_configure(struct vmm *m, const char *json, size_t len);
/*
 * Change the configuration before start, a part at a time (Firecracker's endpoints): edit()
 * changes it as JSON (vm_config_to_json()'s, which vmm_configure() takes), or fails with a
 * message in err; the result is parsed as vmm_configure()'s is, then checked for `check`
 * (VM_CHECK_*). Any failure changes nothing.
 */
typedef int (*vmm_config_edit_fn)(struct json_t *cfg, void *arg, char *err, size_t errlen);
int vmm_edit_config(struct vmm *m, vmm_config_edit_fn edit, void *arg, unsigned check);
/* The configuration, for describing the VM: fn runs with the lock held. */
void vmm_with_config(struct vmm *m, void (*fn)(const struct vm_config *cfg, void *arg), void *arg);

/* Observation. */
int vmm_metrics(struct vmm *m, struct vmm_metrics *out);
int vmm_vcpu_registers(struct vmm *m, unsigned id, struct kvm_regs *regs, struct kvm_sregs *sregs);
int vmm_translate(struct vmm *m, unsigned id, uint64_t gva, struct gm_translation *t);
/* Copy guest memory at a guest-physical address (at most VMM_MAX_READ bytes). */
#define VMM_MAX_READ 65536
int vmm_read_memory(struct vmm *m, uint64_t gpa, void *buf, uint64_t len);
/*
 * The same at a guest-virtual address, through vCPU `id`'s page tables as its kernel would
 * read (the VM paused); pages (room for VMM_MAX_READ / 4096 + 1) get where each piece was.
 */
struct vmm_page {
	uint64_t gva, gpa, len;
};
int vmm_read_virtual(struct vmm *m, unsigned id, uint64_t gva, void *buf, uint64_t len,
		     struct vmm_page *pages, unsigned *nr_pages);

#endif
