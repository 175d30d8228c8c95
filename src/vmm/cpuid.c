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
#include "vmm/cpuid.h"

#include <cpuid.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/log.h"

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

struct kvm_cpuid2 *cpuid_for_vcpu(int kvm_fd, unsigned id, unsigned ncpus)
{
	struct kvm_cpuid2 *c = supported_cpuid(kvm_fd);

	if (c)
		for (unsigned i = 0; i < c->nent; i++)
			filter_entry(&c->entries[i], id, ncpus);
	return c;
}

int cpuid_setup(int kvm_fd, int vcpu_fd, unsigned id, unsigned ncpus)
{
	struct kvm_cpuid2 *c = cpuid_for_vcpu(kvm_fd, id, ncpus);
	int ret = 0;

	if (!c)
		return -EIO;
	if (ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0) {
		ret = -errno;
		log_error("vcpu%u: KVM_SET_CPUID2: %s", id, strerror(errno));
	}
	free(c);
	return ret;
}

/*
 * Hosts that show the guest their own CPUID. On kvm_pvm in native mode the guest's CPUID
 * reports the host's features (XSAVE, AVX, POPCNT, SMAP, ...) whatever KVM_SET_CPUID2 says;
 * Linux then patches itself to use them in ring 0, where that host's emulator fails on them.
 * Linux's own `clearcpuid=` hides them again.
 */
bool cpuid_host_shows_through(void)
{
	static int shows = -1;

	/* A kernel may have kvm_pvm built in beside a hardware vendor module (then KVM is that). */
	if (shows < 0)
		shows = access("/sys/module/kvm_pvm", F_OK) == 0 &&
			access("/sys/module/kvm_intel", F_OK) &&
			access("/sys/module/kvm_amd", F_OK);
	return shows;
}

void cpuid_host(uint32_t leaf, uint32_t subleaf, struct cpuid_regs *out)
{
	unsigned max = __get_cpuid_max(leaf & 0x80000000u, NULL);

	memset(out, 0, sizeof(*out));
	/* Beyond the highest leaf, Intel CPUs answer with the highest one's data. */
	if (leaf <= max)
		__cpuid_count(leaf, subleaf, out->eax, out->ebx, out->ecx, out->edx);
}

enum { REG_EAX, REG_EBX, REG_ECX, REG_EDX };

/* Linux's capability words that come straight from a CPUID register (cpufeatures.h). */
static const struct {
	unsigned word;
	uint32_t leaf, subleaf;
	unsigned reg;
} linux_words[] = {
    {0, 1, 0, REG_EDX},		 {1, 0x80000001, 0, REG_EDX},  {4, 1, 0, REG_ECX},
    {6, 0x80000001, 0, REG_ECX}, {9, 7, 0, REG_EBX},	       {10, 0xd, 1, REG_EAX},
    {12, 7, 1, REG_EAX},	 {13, 0x80000008, 0, REG_EBX}, {16, 7, 0, REG_ECX},
    {18, 7, 0, REG_EDX},
};

#define F(word, bit) ((word)*32 + (bit))

/* Bits that report the machine's state or topology, not a feature. */
static bool not_a_feature(unsigned f)
{
	return f == F(0, 28) /* HTT */ || f == F(4, 27) /* OSXSAVE */ ||
	       f == F(4, 31) /* hypervisor */ || f == F(16, 4) /* OSPKE */;
}

/*
 * Features Linux clears by itself when the one they depend on is cleared
 * (arch/x86/kernel/cpu/cpuid-deps.c, 6.1): only pairs in that file, so that a feature left out
 * of the list is always one Linux takes away anyway.
 */
static const unsigned short depends[][2] = {
    {F(10, 0), F(4, 26)},  /* XSAVEOPT: XSAVE */
    {F(10, 1), F(4, 26)},  /* XSAVEC: XSAVE */
    {F(10, 3), F(4, 26)},  /* XSAVES: XSAVE */
    {F(4, 28), F(4, 26)},  /* AVX: XSAVE */
    {F(16, 3), F(4, 26)},  /* PKU: XSAVE */
    {F(9, 14), F(4, 26)},  /* MPX: XSAVE */
    {F(10, 2), F(4, 26)},  /* XGETBV1: XSAVE */
    {F(4, 12), F(4, 28)},  /* FMA: AVX */
    {F(9, 5), F(4, 28)},   /* AVX2: AVX */
    {F(9, 16), F(4, 28)},  /* AVX512F: AVX */
    {F(9, 17), F(9, 16)},  /* AVX512DQ: AVX512F */
    {F(9, 21), F(9, 16)},  /* AVX512IFMA */
    {F(9, 26), F(9, 16)},  /* AVX512PF */
    {F(9, 27), F(9, 16)},  /* AVX512ER */
    {F(9, 28), F(9, 16)},  /* AVX512CD */
    {F(9, 30), F(9, 16)},  /* AVX512BW */
    {F(9, 31), F(9, 16)},  /* AVX512VL */
    {F(16, 1), F(9, 16)},  /* AVX512VBMI */
    {F(16, 14), F(9, 16)}, /* AVX512_VPOPCNTDQ */
    {F(18, 2), F(9, 16)},  /* AVX512_4VNNIW */
    {F(18, 3), F(9, 16)},  /* AVX512_4FMAPS */
    {F(16, 6), F(9, 31)},  /* AVX512_VBMI2: AVX512VL */
    {F(16, 8), F(9, 31)},  /* GFNI: AVX512VL */
    {F(16, 9), F(9, 31)},  /* VAES: AVX512VL */
    {F(16, 10), F(9, 31)}, /* VPCLMULQDQ: AVX512VL */
    {F(16, 11), F(9, 31)}, /* AVX512_VNNI: AVX512VL */
    {F(16, 12), F(9, 31)}, /* AVX512_BITALG: AVX512VL */
    {F(18, 8), F(9, 31)},  /* AVX512_VP2INTERSECT: AVX512VL */
    {F(12, 5), F(9, 31)},  /* AVX512_BF16: AVX512VL */
    {F(18, 23), F(9, 30)}, /* AVX512_FP16: AVX512BW */
};

#define NR_FEATURES (19 * 32)

static uint32_t reg_of(const struct cpuid_regs *r, unsigned reg)
{
	const uint32_t v[] = {r->eax, r->ebx, r->ecx, r->edx};

	return v[reg];
}

static uint32_t guest_reg(const struct kvm_cpuid2 *c, uint32_t leaf, uint32_t subleaf, unsigned reg)
{
	for (unsigned i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == subleaf)) {
			struct cpuid_regs r = {e->eax, e->ebx, e->ecx, e->edx};

			return reg_of(&r, reg);
		}
	}
	return 0;
}

/* Whether Linux clears f by itself once some feature in `cleared` is cleared. */
static bool implied(unsigned f, const bool *cleared)
{
	for (size_t i = 0; i < sizeof(depends) / sizeof(depends[0]); i++)
		if (depends[i][0] == f &&
		    (cleared[depends[i][1]] || implied(depends[i][1], cleared)))
			return true;
	return false;
}

/* Linux 6.1 reads clearcpuid='s argument into a 128-byte buffer (cpu_parse_early_param()). */
#define CLEARCPUID_MAX 127

int cpuid_clearcpuid(const struct kvm_cpuid2 *guest, cpuid_fn *host, char *buf, size_t len,
		     unsigned *left_out)
{
	bool cleared[NR_FEATURES] = {false};
	char list[CLEARCPUID_MAX + 1] = "";
	size_t used = 0;
	int count = 0;

	*left_out = 0;
	for (size_t i = 0; i < sizeof(linux_words) / sizeof(linux_words[0]); i++) {
		struct cpuid_regs h;
		uint32_t extra;

		host(linux_words[i].leaf, linux_words[i].subleaf, &h);
		extra = reg_of(&h, linux_words[i].reg) & ~guest_reg(guest, linux_words[i].leaf,
								    linux_words[i].subleaf,
								    linux_words[i].reg);
		for (unsigned bit = 0; bit < 32; bit++)
			if (extra & (1u << bit) && !not_a_feature(F(linux_words[i].word, bit)))
				cleared[F(linux_words[i].word, bit)] = true;
	}
	for (unsigned f = 0; f < NR_FEATURES; f++) {
		int n;

		if (!cleared[f] || implied(f, cleared))
			continue;
		n = snprintf(list + used, sizeof(list) - used, "%s%u", count ? "," : "", f);
		if ((size_t)n >= sizeof(list) - used) {
			list[used] = 0;
			(*left_out)++;
			continue;
		}
		used += (size_t)n;
		count++;
	}
	if ((size_t)snprintf(buf, len, "%s%s", count ? "clearcpuid=" : "", list) >= len)
		return -ENOSPC;
	return *left_out ? -ENOSPC : count;
}
