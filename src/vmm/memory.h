/* SPDX-License-Identifier: MIT */
/*
 * Guest memory. RAM is one memfd, mapped into the VMM in one or two regions (below the 32-bit
 * PCI hole, and above 4 GiB for large guests). Device and boot code reach guest memory only
 * through gm_slice() and the helpers built on it: nothing else turns a guest address into a
 * host pointer, and every range is checked to lie wholly inside one region.
 *
 * gm_translate() walks the guest's own page tables (guest-virtual → guest-physical), reporting
 * each entry it reads, so that all three address spaces are visible: gva → gpa (guest page
 * tables) → hva (this map) → hpa (the host kernel, not visible here).
 */
#ifndef YUN_VMM_MEMORY_H
#define YUN_VMM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_MAX_REGIONS 4

struct gm_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	uint64_t fd_offset; /* offset of this region in the memfd */
};

struct guest_mem {
	struct gm_region regions[GM_MAX_REGIONS];
	unsigned nr_regions;
	uint64_t ram_size; /* total RAM, all regions */
	int memfd;	   /* the file mapped: a memfd, or a snapshot's memory (private_file);
			    * -1 when the regions are the caller's (unit tests) */
	bool private_file; /* mapped copy-on-write from a snapshot's memory file */
};

/* Lay out ram_size bytes of RAM per layout.h, backed by a new memfd, mapped shared. */
int gm_init(struct guest_mem *m, uint64_t ram_size);
/*
 * The same layout from a snapshot's memory file (fd, exactly ram_size bytes; taken over),
 * mapped privately: pages are read from the file when first touched, and the guest's writes
 * stay in this process, so the file can be restored again.
 */
int gm_init_file(struct guest_mem *m, uint64_t ram_size, int fd);
/* Write the whole of RAM into fd at its offsets, as a sparse file: pages of zeros are left out. */
int gm_save(const struct guest_mem *m, int fd);
void gm_destroy(struct guest_mem *m);
/* Add a region backed by caller-owned memory (unit tests, fuzzers). */
int gm_add_region(struct guest_mem *m, uint64_t gpa, uint64_t size, void *hva);

/* The host pointer for [gpa, gpa+len), or NULL unless the whole range lies in one region. */
void *gm_slice(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Copies that may span regions' ends are refused like slices: -EFAULT. */
int gm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);
int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
/* The region holding gpa, or NULL. */
const struct gm_region *gm_region_of(const struct guest_mem *m, uint64_t gpa);

/* The paging state of one vCPU, as KVM_GET_SREGS reports it. */
struct gm_paging {
	uint64_t cr0, cr3, cr4, efer;
};

/* Access type, with the bit values of the #PF error code (Intel SDM vol. 3 §4.7). */
#define GM_ACCESS_WRITE 0x02u
#define GM_ACCESS_USER	0x04u
#define GM_ACCESS_FETCH 0x10u

/* #PF error code bits. */
#define GM_PF_PRESENT 0x01u
#define GM_PF_WRITE   0x02u
#define GM_PF_USER    0x04u
#define GM_PF_RSVD    0x08u
#define GM_PF_FETCH   0x10u

struct gm_walk_step {
	unsigned level;	    /* 5..1 in long mode: PML5, PML4, PDPT, PD, PT */
	uint64_t entry_gpa; /* where the entry was read */
	uint64_t entry;	    /* its value */
};

enum gm_walk_result {
	GM_WALK_OK = 0,
	GM_WALK_PAGE_FAULT, /* the guest would take #PF: see error_code */
	GM_WALK_BAD_TABLE,  /* a table lies outside guest RAM (hardware would read MMIO) */
	GM_WALK_NOT_IN_RAM, /* translated, but the gpa is not RAM */
};

struct gm_translation {
	uint64_t gva;
	uint64_t gpa;
	void *hva;	    /* NULL unless the gpa is in RAM */
	uint64_t page_size; /* 4 KiB, 2 MiB or 1 GiB; 0 when paging is off */
	unsigned nr_steps;
	struct gm_walk_step steps[5];
	enum gm_walk_result result;
	uint32_t error_code; /* #PF error code when result == GM_WALK_PAGE_FAULT */
};

/*
 * Translate gva for an access of the given type (GM_ACCESS_*) under the paging mode the
 * registers select: none, 32-bit, PAE, 4-level or 5-level. Returns 0 when the walk completed
 * (t->result says how) and -EINVAL for a paging mode that makes no sense.
 */
int gm_translate(const struct guest_mem *m, const struct gm_paging *p, uint64_t gva,
		 unsigned access, struct gm_translation *t);

#endif
