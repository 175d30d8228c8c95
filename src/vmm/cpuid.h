/* SPDX-License-Identifier: MIT */
/*
 * The CPUID the guest sees (cpuid.c), and what to do on hosts whose KVM does not hold the
 * guest to it.
 */
#ifndef YUN_VMM_CPUID_H
#define YUN_VMM_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CPUID for vCPU `id` of `ncpus`, from what KVM supports. */
int cpuid_setup(int kvm_fd, int vcpu_fd, unsigned id, unsigned ncpus);

/*
 * Whether this host's KVM shows the guest the host's own CPUID features whatever
 * KVM_SET_CPUID2 says (kvm_pvm in native mode: see ../shared/DESIGN.md, "Testing on these
 * hosts"). Found out by the first call, which must come before the process is jailed (it looks
 * for /sys/module/kvm_pvm, and for no kvm_intel or kvm_amd).
 */
bool cpuid_host_shows_through(void);

struct cpuid_regs {
	uint32_t eax, ebx, ecx, edx;
};
typedef void cpuid_fn(uint32_t leaf, uint32_t subleaf, struct cpuid_regs *out);
/* This process's own CPUID instruction. */
cpuid_fn cpuid_host;

/*
 * Linux's `clearcpuid=` for the features `host` has and `guest` (the CPUID set for vCPU 0)
 * does not, as feature numbers (word * 32 + bit, arch/x86/include/asm/cpufeatures.h), leaving
 * out those Linux clears by itself with a feature they depend on. Written to buf as
 * "clearcpuid=N,N,..." (an empty string when there is none); returns how many numbers it
 * holds, or -ENOSPC when they do not fit in Linux 6.1's 127-character argument (buf then holds
 * as many as fit, each whole, and the count returned by *left_out is what was left out).
 */
int cpuid_clearcpuid(const struct kvm_cpuid2 *guest, cpuid_fn *host, char *buf, size_t len,
		     unsigned *left_out);

/* The CPUID vCPU 0 gets (KVM_GET_SUPPORTED_CPUID, filtered); free() it. NULL on failure. */
struct kvm_cpuid2 *cpuid_for_vcpu(int kvm_fd, unsigned id, unsigned ncpus);

#endif
