/* SPDX-License-Identifier: MIT */
/*
 * Loading a kernel into guest memory and setting the boot vCPU's registers: the Linux x86
 * boot protocol for bzImage (64-bit entry) and PVH for ELF kernels with a
 * XEN_ELFNOTE_PHYS32_ENTRY note. Both describe memory with the e820 map of e820.c.
 */
#ifndef YUN_VMM_BOOT_BOOT_H
#define YUN_VMM_BOOT_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/memory.h"

/* Low memory used while booting (all below 0xA0000, none of it reserved for the guest). */
#define BOOT_GDT_ADDR	    0x500
#define BOOT_PVH_INFO_ADDR  0x6000 /* hvm_start_info, then the module list and memory map */
#define BOOT_ZERO_PAGE_ADDR 0x7000
#define BOOT_PML4_ADDR	    0x9000 /* then PDPT at 0xA000, four PDs at 0xB000..0xEFFF */
#define BOOT_CMDLINE_ADDR   0x20000
#define BOOT_CMDLINE_MAX    0x10000
#define BOOT_KERNEL_ADDR    0x100000 /* bzImage protected-mode code, Linux boot protocol */

/* e820 types (ACPI 6.x §15, Linux's arch/x86/include/uapi/asm/e820.h). */
#define E820_RAM      1
#define E820_RESERVED 2

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* The memory map of guest memory m; returns the number of entries written (<= max). */
unsigned e820_build(const struct guest_mem *m, struct e820_entry *e, unsigned max);

/* What a loader leaves for the boot vCPU. */
struct boot_entry {
	enum { BOOT_PVH, BOOT_LINUX64 } kind;
	uint64_t entry;
	uint64_t arg; /* start_info (PVH) or zero page (Linux) */
};

struct boot_files {
	const uint8_t *kernel; /* the whole kernel file */
	size_t kernel_size;
	int initrd_fd; /* -1 when none */
	uint64_t initrd_size;
	const char *cmdline;
	uint64_t rsdp; /* guest-physical address of the ACPI RSDP */
};

/* 0 if the file looks like a bzImage or an ELF file, -ENOEXEC if neither, or -errno. */
int boot_check_kernel_file(const char *path);
/* Recognise the kernel and load it; -ENOEXEC with a log line if it is neither format. */
int boot_load(const struct guest_mem *m, const struct boot_files *f, struct boot_entry *out);
int bzimage_load(const struct guest_mem *m, const struct boot_files *f, struct boot_entry *out);
int pvh_load(const struct guest_mem *m, const struct boot_files *f, struct boot_entry *out);
/* Copy the initrd into the highest page-aligned spot below `limit` and above `floor`. */
int boot_load_initrd(const struct guest_mem *m, const struct boot_files *f, uint64_t floor,
		     uint64_t limit, uint64_t *addr);
/* The boot GDT and identity-mapped page tables (first 4 GiB, 2 MiB pages) for 64-bit entry. */
int boot_setup_long_mode(const struct guest_mem *m);

#endif
