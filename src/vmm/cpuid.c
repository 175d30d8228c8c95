// SPDX-License-Identifier: MIT
/*
 * The CPUID the guest sees: what KVM supports (KVM_GET_SUPPORTED_CPUID), then
 *  - the topology of this VM: each vCPU its own APIC ID, all vCPUs cores of one package, one
 *    thread per core (leaves 1, 4, 0xB, 0x1F, 0x80000008, 0x8000001E);
 *  - the hypervisor bit (leaf 1 ECX[31]) and KVM's hypervisor leaves at 0x40000000 as KVM
 *    reports them, so that Linux uses kvmclock and paravirtual EOI;
 *  - no features the VMM does not offer: leaf 6 (power management) is emptied, MONITOR/MWAIT
 *    off, no performance monitoring (leaf 0xA) since the VMM does not virtualize PMU state for
 *    snapshots. KVM_GET_SUPPORTED_CPUID leaves out the TSC-deadline timer and ARAT, which
 *    QEMU adds; so does this file for now: with both, Debian's kernel once hung at boot in the
 *    nested KVM host (tests/kvmhost), and there was no time to find out why.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/log.h"
#include "vmm/vcpu.h"

#define MAX_CPUID_ENTRIES 256

static struct kvm_cpuid2 *supported_cpuid(int kvm_fd)
{
	struct kvm_cpuid2 *c;

	c = calloc(1, sizeof(*c) + MAX_CPUID_ENTRIES * sizeof(c->entries[0]));
	if (!c)
		return NULL;
	c->nent = MAX_CPUID_ENTRIES;
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		log_error("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
		free(c);
		return NULL;
	}
	return c;
}

/* Bits needed to number n things (as CPUID's topology shifts count them). */
static unsigned order_base_2(unsigned n)
{
	unsigned bits = 0;

	while ((1u << bits) < n)
		bits++;
	return bits;
}

static void filter_entry(struct kvm_cpuid_entry2 *e, unsigned id, unsigned ncpus)
{
	unsigned core_bits = order_base_2(ncpus);

	switch (e->function) {
	case 1:
		/* EBX: initial APIC ID [31:24], logical processors per package [23:16]. */
		e->ebx = (e->ebx & 0x0000ffff) | (id << 24) | ((ncpus & 0xff) << 16);
		if (ncpus > 1)
			e->edx |= 1u << 28; /* HTT: the package field above is valid */
		e->ecx &= ~(1u << 3);	    /* MONITOR/MWAIT: not offered */
		e->ecx |= 1u << 31;	    /* running under a hypervisor */
		break;
	case 4:
		/* Deterministic cache parameters: cores per package - 1 in EAX[31:26]. */
		e->eax = (e->eax & 0x03ffffff) | ((ncpus - 1) << 26);
		break;
	case 6:
	case 0xa:
		e->eax = e->ebx = e->ecx = e->edx = 0;
		break;
	case 0xb:
	case 0x1f:
		/* Extended topology: level 0 SMT (1 thread), level 1 core (ncpus). */
		e->edx = id;
		if (e->index == 0) {
			e->eax = 0;
			e->ebx = 1;
			e->ecx = (1u << 8) | 0;
		} else if (e->index == 1) {
			e->eax = core_bits;
			e->ebx = ncpus;
			e->ecx = (2u << 8) | 1;
		} else {
			e->eax = e->ebx = 0;
			e->ecx = e->index;
		}
		break;
	case 0x80000008:
		/* AMD: number of threads in the package - 1, and the APIC ID size. */
		e->ecx = (e->ecx & ~0xf0ffu) | (core_bits << 12) | ((ncpus - 1) & 0xff);
		break;
	case 0x8000001e:
		/* AMD extended APIC ID, one thread per core, core id = APIC ID. */
		e->eax = id;
		e->ebx = (e->ebx & ~0xffffu) | (id & 0xff);
		e->ecx = 0;
		break;
	default:
		break;
	}
}

int cpuid_setup(int kvm_fd, int vcpu_fd, unsigned id, unsigned ncpus)
{
	struct kvm_cpuid2 *c = supported_cpuid(kvm_fd);
	int ret = 0;

	if (!c)
		return -EIO;
	for (unsigned i = 0; i < c->nent; i++)
		filter_entry(&c->entries[i], id, ncpus);
	if (ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0) {
		ret = -errno;
		log_error("vcpu%u: KVM_SET_CPUID2: %s", id, strerror(errno));
	}
	free(c);
	return ret;
}
