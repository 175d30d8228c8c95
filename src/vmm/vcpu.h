/* SPDX-License-Identifier: MIT */
/* One vCPU: its KVM file, its shared kvm_run page, its thread. */
#ifndef YUN_VMM_VCPU_H
#define YUN_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/emulate.h"

struct vm;

/* The guest's CPUID leaf 0xD: each XSAVE component's offset and size in the standard format. */
struct xsave_layout {
	uint32_t offset[EMU_XFEATURES];
	uint32_t size[EMU_XFEATURES];
};

struct vcpu {
	struct vm *vm;
	unsigned id; /* also its APIC ID */
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	/* VM exits by reason, for metrics (KVM_EXIT_* below 64). */
	uint64_t exits[64];
	/* Instructions KVM gave up on that the fallback (emulate.c) carried out, by instruction. */
	uint64_t emulated[EMU_NR_INSNS];
	struct xsave_layout xsave_layout;
};

int vcpu_create(struct vm *vm, unsigned id, struct vcpu **out);
void vcpu_destroy(struct vcpu *v);
/* Start the thread that runs KVM_RUN until the VM stops. */
int vcpu_start(struct vcpu *v);
/* Make a running vCPU leave KVM_RUN so that it sees the VM stopping. */
void vcpu_kick(struct vcpu *v);
void vcpu_join(struct vcpu *v);

/* The boot state the loaders ask for (the BSP only; APs wait for INIT-SIPI-SIPI). */
int vcpu_set_boot_pvh(struct vcpu *v, uint64_t entry, uint64_t start_info);
int vcpu_set_boot_linux64(struct vcpu *v, uint64_t entry, uint64_t zero_page, uint64_t pml4,
			  uint64_t gdt);

/*
 * Snapshots (section "vcpuN"): registers, special registers, XSAVE, XCRs, debug registers, the
 * LAPIC, MP state, pending events and MSRs. Save while the vCPU is parked; load into a vCPU
 * just created (CPUID set), before it first runs.
 */
struct snap_writer;
struct snap_reader;
int vcpu_save(struct vcpu *v, struct snap_writer *w);
int vcpu_load(struct vcpu *v, const struct snap_reader *r);

#endif
