// SPDX-License-Identifier: MIT
/* clearcpuid= for hosts that show guests their own CPUID: which features, and how many fit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/cpuid.h"

/* Linux's feature numbers (word * 32 + bit). */
#define POPCNT	 (4 * 32 + 23)
#define XSAVE	 (4 * 32 + 26)
#define OSXSAVE	 (4 * 32 + 27)
#define AVX	 (4 * 32 + 28)
#define FSGSBASE (9 * 32 + 0)
#define AVX2	 (9 * 32 + 5)
#define AVX512F	 (9 * 32 + 16)
#define SMAP	 (9 * 32 + 20)
#define XSAVEOPT (10 * 32 + 0)
#define RDPID	 (16 * 32 + 22)
#define SSE3	 (4 * 32 + 0)

#define BIT(f) (1u << ((f) % 32))

/* A host like the one DESIGN.md describes: SSE3, POPCNT, XSAVE (OSXSAVE on), AVX, AVX2,
 * AVX-512F, FSGSBASE, SMAP, XSAVEOPT, RDPID, the hypervisor bit. */
static void probe_host(uint32_t leaf, uint32_t subleaf, struct cpuid_regs *r)
{
	memset(r, 0, sizeof(*r));
	if (leaf == 1) {
		r->ecx = BIT(SSE3) | BIT(POPCNT) | BIT(XSAVE) | BIT(OSXSAVE) | BIT(AVX) | 1u << 31;
		r->edx = 1u << 28; /* HTT */
	} else if (leaf == 7 && subleaf == 0) {
		r->ebx = BIT(FSGSBASE) | BIT(AVX2) | BIT(AVX512F) | BIT(SMAP);
		r->ecx = BIT(RDPID);
	} else if (leaf == 0xd && subleaf == 1) {
		r->eax = BIT(XSAVEOPT);
	}
}

/* Every bit of every register of every leaf. */
static void everything_host(uint32_t leaf, uint32_t subleaf, struct cpuid_regs *r)
{
	r->eax = r->ebx = r->ecx = r->edx = ~0u;
}

static struct kvm_cpuid2 *guest_cpuid(unsigned nent)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));

	assert_non_null(c);
	c->nent = nent;
	return c;
}

/* The numbers of a "clearcpuid=a,b,c" argument, or -1 at the end. */
static bool listed(const char *arg, unsigned f)
{
	const char *p;

	if (strncmp(arg, "clearcpuid=", 11))
		return false;
	p = arg + 11;
	while (*p) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);

		assert_true(end > p);
		if (v == f)
			return true;
		p = *end == ',' ? end + 1 : end;
	}
	return false;
}

static void test_hidden_features_listed(void **state)
{
	struct kvm_cpuid2 *g = guest_cpuid(2);
	unsigned left_out;
	char buf[160];
	int n;

	/* The guest is offered SSE3 and the hypervisor bit, and nothing of leaf 7 or 0xd. */
	g->entries[0] = (struct kvm_cpuid_entry2){.function = 1, .ecx = BIT(SSE3) | 1u << 31};
	g->entries[1] = (struct kvm_cpuid_entry2){.function = 0, .eax = 0xd};
	n = cpuid_clearcpuid(g, probe_host, buf, sizeof(buf), &left_out);
	assert_int_equal(left_out, 0);
	assert_true(listed(buf, POPCNT));
	assert_true(listed(buf, XSAVE));
	assert_true(listed(buf, FSGSBASE));
	assert_true(listed(buf, SMAP));
	assert_true(listed(buf, RDPID));
	/* Offered, or not features at all. */
	assert_false(listed(buf, SSE3));
	assert_false(listed(buf, OSXSAVE));
	assert_false(listed(buf, 4 * 32 + 31));
	assert_false(listed(buf, 28));
	/* Linux clears these itself once XSAVE is cleared (cpuid-deps.c). */
	assert_false(listed(buf, AVX));
	assert_false(listed(buf, AVX2));
	assert_false(listed(buf, AVX512F));
	assert_false(listed(buf, XSAVEOPT));
	assert_int_equal(n, 5);
	free(g);
}

static void test_dependents_listed_when_parent_offered(void **state)
{
	struct kvm_cpuid2 *g = guest_cpuid(1);
	unsigned left_out;
	char buf[160];

	/* XSAVE offered, AVX not: AVX is listed, and AVX2 and AVX-512F go with it. */
	g->entries[0] = (struct kvm_cpuid_entry2){.function = 1, .ecx = BIT(XSAVE) | BIT(POPCNT)};
	assert_int_equal(cpuid_clearcpuid(g, probe_host, buf, sizeof(buf), &left_out), 6);
	assert_true(listed(buf, AVX));
	assert_true(listed(buf, XSAVEOPT));
	assert_false(listed(buf, XSAVE));
	assert_false(listed(buf, POPCNT));
	assert_false(listed(buf, AVX2));
	assert_false(listed(buf, AVX512F));
	free(g);
}

static void test_subleaf_matters(void **state)
{
	struct kvm_cpuid2 *g = guest_cpuid(2);
	unsigned left_out;
	char buf[160];

	/* Leaf 7's subleaf 1 offers FSGSBASE's bit position; subleaf 0 does not. */
	g->entries[0] = (struct kvm_cpuid_entry2){
	    .function = 7, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = ~0u};
	g->entries[1] = (struct kvm_cpuid_entry2){
	    .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ecx = BIT(RDPID)};
	assert_true(cpuid_clearcpuid(g, probe_host, buf, sizeof(buf), &left_out) > 0);
	assert_true(listed(buf, FSGSBASE));
	assert_false(listed(buf, RDPID));
	free(g);
}

static void test_nothing_hidden(void **state)
{
	struct kvm_cpuid2 *g = guest_cpuid(3);
	unsigned left_out;
	char buf[16];

	g->entries[0] = (struct kvm_cpuid_entry2){.function = 1, .ecx = ~0u, .edx = ~0u};
	g->entries[1] = (struct kvm_cpuid_entry2){.function = 7, .ebx = ~0u, .ecx = ~0u};
	g->entries[2] = (struct kvm_cpuid_entry2){.function = 0xd, .index = 1, .eax = ~0u};
	assert_int_equal(cpuid_clearcpuid(g, probe_host, buf, sizeof(buf), &left_out), 0);
	assert_string_equal(buf, "");
	free(g);
}

static void test_too_many_for_linux(void **state)
{
	struct kvm_cpuid2 *g = guest_cpuid(0);
	unsigned left_out;
	char buf[256];
	const char *p;
	int n;

	n = cpuid_clearcpuid(g, everything_host, buf, sizeof(buf), &left_out);
	assert_int_equal(n, -ENOSPC);
	assert_true(left_out > 100);
	/* What is there fits Linux 6.1's 127 characters, and every number is whole. */
	assert_true(strlen(buf) - strlen("clearcpuid=") <= 127);
	for (p = buf + strlen("clearcpuid="); *p; p++)
		assert_true((*p >= '0' && *p <= '9') || *p == ',');
	assert_true(buf[strlen(buf) - 1] != ',');
	free(g);
}

static void test_small_buffer(void **state)
{
	struct kvm_cpuid2 *g = guest_cpuid(0);
	unsigned left_out;
	char buf[12];

	assert_int_equal(cpuid_clearcpuid(g, probe_host, buf, sizeof(buf), &left_out), -ENOSPC);
	assert_true(strlen(buf) < sizeof(buf));
	free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hidden_features_listed),
	    cmocka_unit_test(test_dependents_listed_when_parent_offered),
	    cmocka_unit_test(test_subleaf_matters),
	    cmocka_unit_test(test_nothing_hidden),
	    cmocka_unit_test(test_too_many_for_linux),
	    cmocka_unit_test(test_small_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
