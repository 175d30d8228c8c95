// SPDX-License-Identifier: MIT
/* Guest memory: the one accessor's bounds, and the page-table walker on hand-built tables. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/layout.h"
#include "vmm/memory.h"

#define RAM_SIZE (8 * MiB)

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->ram);
	free(f);
	return 0;
}

static void test_slice_bounds(void **state)
{
	struct fixture *f = *state;
	struct guest_mem *m = &f->m;

	assert_ptr_equal(gm_slice(m, 0, RAM_SIZE), f->ram);
	assert_ptr_equal(gm_slice(m, RAM_SIZE - 1, 1), f->ram + RAM_SIZE - 1);
	assert_ptr_equal(gm_slice(m, RAM_SIZE, 0), f->ram + RAM_SIZE);
	assert_null(gm_slice(m, RAM_SIZE, 1));
	assert_null(gm_slice(m, RAM_SIZE - 1, 2)); /* straddles the end */
	assert_null(gm_slice(m, 0, RAM_SIZE + 1));
	assert_null(gm_slice(m, 16, UINT64_MAX)); /* gpa + len overflows */
	assert_null(gm_slice(m, UINT64_MAX, 2));
	assert_null(gm_slice(m, UINT64_MAX - 4, 16));
}

static void test_two_regions(void **state)
{
	static uint8_t high[2 * 4096];
	struct fixture *f = *state;
	struct guest_mem *m = &f->m;
	uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	assert_int_equal(gm_add_region(m, LAYOUT_4G, sizeof(high), high), 0);
	assert_int_equal(gm_add_region(m, RAM_SIZE - 4096, 8192, high), -EEXIST);
	assert_ptr_equal(gm_slice(m, LAYOUT_4G + 4096, 4096), high + 4096);
	/* Nothing between the regions, and no range across the gap. */
	assert_null(gm_slice(m, RAM_SIZE, 4096));
	assert_null(gm_slice(m, LAYOUT_4G - 4, 8));
	assert_int_equal(gm_write(m, LAYOUT_4G, buf, sizeof(buf)), 0);
	assert_memory_equal(high, buf, sizeof(buf));
	assert_int_equal(gm_write(m, LAYOUT_4G + sizeof(high) - 4, buf, sizeof(buf)), -EFAULT);
	assert_int_equal(m->ram_size, RAM_SIZE + sizeof(high));
	assert_non_null(gm_region_of(m, LAYOUT_4G + 1));
	assert_null(gm_region_of(m, LAYOUT_4G - 1));
}

static void test_memfd_layout(void **state)
{
	struct guest_mem m;

	assert_int_equal(gm_init(&m, 128 * MiB), 0);
	assert_int_equal(m.nr_regions, 1);
	assert_true(m.memfd >= 0);
	assert_non_null(gm_slice(&m, 128 * MiB - 4096, 4096));
	assert_null(gm_slice(&m, 128 * MiB, 1));
	gm_destroy(&m);
	/* More than 3 GiB: the rest goes above 4 GiB, leaving the PCI hole. */
	assert_int_equal(gm_init(&m, 4 * GiB), 0);
	assert_int_equal(m.nr_regions, 2);
	assert_int_equal(m.regions[0].size, LAYOUT_RAM_BELOW_4G);
	assert_int_equal(m.regions[1].gpa, LAYOUT_4G);
	assert_int_equal(m.regions[1].size, 1 * GiB);
	assert_null(gm_slice(&m, LAYOUT_PCI_MMIO32_BASE, 1));
	assert_ptr_equal(gm_slice(&m, LAYOUT_4G, 1), m.regions[0].hva + LAYOUT_RAM_BELOW_4G);
	gm_destroy(&m);
	assert_int_equal(gm_init(&m, 3 * MiB), -EINVAL);
	assert_int_equal(gm_init(&m, 0), -EINVAL);
}

/* Hand-built 4-level tables: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000. */
#define P  0x1ULL
#define RW 0x2ULL
#define US 0x4ULL
#define PS 0x80ULL
#define NX (1ULL << 63)

static void put64(struct fixture *f, uint64_t gpa, uint64_t v)
{
	memcpy(f->ram + gpa, &v, 8);
}

static const struct gm_paging long_mode = {
    .cr0 = 0x80010001, /* PG, WP, PE */
    .cr3 = 0x1000,
    .cr4 = 0x20,   /* PAE */
    .efer = 0xd00, /* LME, LMA, NXE */
};

static void build_4level(struct fixture *f)
{
	put64(f, 0x1000 + 0 * 8, 0x2000 | P | RW | US);
	put64(f, 0x2000 + 0 * 8, 0x3000 | P | RW | US);
	/* 1 GiB page at gva 1 GiB → gpa 0 (RAM is smaller, so most of it is not RAM). */
	put64(f, 0x2000 + 1 * 8, 0x0 | P | RW | PS);
	put64(f, 0x3000 + 0 * 8, 0x4000 | P | RW | US);
	/* 2 MiB page at gva 2 MiB → gpa 4 MiB, read-only, supervisor. */
	put64(f, 0x3000 + 1 * 8, 0x400000 | P | PS);
	/* 4 KiB pages: gva 0x5000 → gpa 0x7000 (user, rw); gva 0x6000 → 0x8000 (user, NX). */
	put64(f, 0x4000 + 5 * 8, 0x7000 | P | RW | US);
	put64(f, 0x4000 + 6 * 8, 0x8000 | P | US | NX);
	/* gva 4 MiB: a page directory entry whose page table lies outside RAM. */
	put64(f, 0x3000 + 2 * 8, 0x40000000ULL | P | RW);
}

static void test_walk_4k(void **state)
{
	struct fixture *f = *state;
	struct gm_translation t;

	build_4level(f);
	assert_int_equal(
	    gm_translate(&f->m, &long_mode, 0x5123, GM_ACCESS_USER | GM_ACCESS_WRITE, &t), 0);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x7123);
	assert_ptr_equal(t.hva, f->ram + 0x7123);
	assert_int_equal(t.page_size, 4096);
	assert_int_equal(t.nr_steps, 4);
	assert_int_equal(t.steps[0].level, 4);
	assert_int_equal(t.steps[0].entry_gpa, 0x1000);
	assert_int_equal(t.steps[3].entry_gpa, 0x4000 + 5 * 8);
	assert_int_equal(t.steps[3].entry, 0x7000 | P | RW | US);
}

static void test_walk_large_pages(void **state)
{
	struct fixture *f = *state;
	struct gm_translation t;

	build_4level(f);
	assert_int_equal(gm_translate(&f->m, &long_mode, 0x200000 + 0x1234, 0, &t), 0);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x400000 + 0x1234);
	assert_int_equal(t.page_size, 2 * MiB);
	assert_int_equal(t.nr_steps, 3);

	assert_int_equal(gm_translate(&f->m, &long_mode, GiB + 0x5000, 0, &t), 0);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x5000);
	assert_int_equal(t.page_size, GiB);
	assert_int_equal(t.nr_steps, 2);
	/* Translated, but past the end of RAM. */
	assert_int_equal(gm_translate(&f->m, &long_mode, GiB + 0x10000000, 0, &t), 0);
	assert_int_equal(t.result, GM_WALK_NOT_IN_RAM);
	assert_null(t.hva);
}

static void test_walk_faults(void **state)
{
	struct fixture *f = *state;
	struct gm_translation t;

	build_4level(f);
	/* Not present: error code has P clear and the access bits. */
	gm_translate(&f->m, &long_mode, 0x9000, GM_ACCESS_WRITE | GM_ACCESS_USER, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);
	assert_int_equal(t.error_code, GM_PF_WRITE | GM_PF_USER);
	/* Write to a read-only page from ring 0 with CR0.WP set. */
	gm_translate(&f->m, &long_mode, 0x200000, GM_ACCESS_WRITE, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);
	assert_int_equal(t.error_code, GM_PF_PRESENT | GM_PF_WRITE);
	/* ... allowed with CR0.WP clear. */
	struct gm_paging nowp = long_mode;
	nowp.cr0 &= ~0x10000ULL;
	gm_translate(&f->m, &nowp, 0x200000, GM_ACCESS_WRITE, &t);
	assert_int_equal(t.result, GM_WALK_OK);
	/* User access to a supervisor page. */
	gm_translate(&f->m, &long_mode, 0x200000, GM_ACCESS_USER, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);
	assert_int_equal(t.error_code, GM_PF_PRESENT | GM_PF_USER);
	/* Fetch from an NX page. */
	gm_translate(&f->m, &long_mode, 0x6000, GM_ACCESS_FETCH | GM_ACCESS_USER, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);
	assert_int_equal(t.error_code, GM_PF_PRESENT | GM_PF_FETCH | GM_PF_USER);
	/* Without NXE (and SMEP) no fetch is refused, and a fetch's fault leaves I/D clear. */
	struct gm_paging nonx = long_mode;
	nonx.efer &= ~0x800ULL;
	gm_translate(&f->m, &nonx, 0x6000, GM_ACCESS_FETCH | GM_ACCESS_USER, &t);
	assert_int_equal(t.result, GM_WALK_OK);
	gm_translate(&f->m, &nonx, 0x200000, GM_ACCESS_FETCH | GM_ACCESS_USER, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);
	assert_int_equal(t.error_code, GM_PF_PRESENT | GM_PF_USER);
	/* Non-canonical address: #GP, reported as a fault with no error code. */
	gm_translate(&f->m, &long_mode, 0x0000800000000000ULL, 0, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);
	assert_int_equal(t.nr_steps, 0);
	/* A table outside RAM. */
	gm_translate(&f->m, &long_mode, 0x400000, 0, &t);
	assert_int_equal(t.result, GM_WALK_BAD_TABLE);
	/* Long mode without PAE makes no sense. */
	struct gm_paging bad = long_mode;
	bad.cr4 = 0;
	assert_int_equal(gm_translate(&f->m, &bad, 0, 0, &t), -EINVAL);
}

static void test_walk_no_paging_and_legacy(void **state)
{
	struct fixture *f = *state;
	struct gm_translation t;
	struct gm_paging off = {.cr0 = 1};

	gm_translate(&f->m, &off, 0x1234, 0, &t);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x1234);
	assert_int_equal(t.nr_steps, 0);

	/* 32-bit paging: PD at 0x10000; gva 0x00401000 → PT 0x11000 → 0x20000; 4 MiB page at 8 MiB. */
	uint32_t pde0 = 0x11000 | P | RW | US, pde2 = 0x400000 | P | RW | PS;
	uint32_t pte = 0x20000 | P | RW;
	memcpy(f->ram + 0x10000 + 1 * 4, &pde0, 4);
	memcpy(f->ram + 0x10000 + 2 * 4, &pde2, 4);
	memcpy(f->ram + 0x11000 + 1 * 4, &pte, 4);
	struct gm_paging p32 = {.cr0 = 0x80000001, .cr3 = 0x10000, .cr4 = 0x10 /* PSE */};
	gm_translate(&f->m, &p32, 0x00401abc, 0, &t);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x20abc);
	assert_int_equal(t.nr_steps, 2);
	gm_translate(&f->m, &p32, 0x00801abc, 0, &t);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x401abc);
	assert_int_equal(t.page_size, 4 * MiB);
	/* The PTE is supervisor-only (PDE is user): user access faults. */
	gm_translate(&f->m, &p32, 0x00401abc, GM_ACCESS_USER, &t);
	assert_int_equal(t.result, GM_WALK_PAGE_FAULT);

	/* PAE: PDPT at 0x30000 → PD 0x31000 → 2 MiB page at 6 MiB for gva 0x40200000. */
	put64(f, 0x30000 + 1 * 8, 0x31000 | P);
	put64(f, 0x31000 + 1 * 8, 0x600000 | P | RW | PS);
	struct gm_paging pae = {.cr0 = 0x80000001, .cr3 = 0x30000, .cr4 = 0x20};
	gm_translate(&f->m, &pae, 0x40200000 + 0x42, 0, &t);
	assert_int_equal(t.result, GM_WALK_OK);
	assert_int_equal(t.gpa, 0x600042);
	assert_int_equal(t.nr_steps, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_slice_bounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_regions, setup, teardown),
	    cmocka_unit_test(test_memfd_layout),
	    cmocka_unit_test_setup_teardown(test_walk_4k, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_walk_large_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_walk_faults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_walk_no_paging_and_legacy, setup, teardown),
	};
	return cmocka_run_group_tests_name("memory", tests, NULL, NULL);
}
