// SPDX-License-Identifier: MIT
/*
 * The Linux x86 boot protocol (Documentation/arch/x86/boot.rst) for a bzImage, entered
 * through its 64-bit entry point (protocol 2.12+ with XLF_KERNEL_64): no real-mode code runs.
 */
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "vmm/boot/boot.h"
#include "vmm/layout.h"

/* Offsets in the zero page (struct boot_params) and its setup header. */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES	     0x1e8
#define BP_SETUP_SECTS	     0x1f1
#define BP_JUMP		     0x200 /* 2-byte jump; its second byte gives the header's end */
#define BP_VERSION	     0x206
#define BP_TYPE_OF_LOADER    0x210
#define BP_LOADFLAGS	     0x211
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE	     0x21c
#define BP_HEAP_END_PTR	     0x224
#define BP_CMD_LINE_PTR	     0x228
#define BP_INITRD_ADDR_MAX   0x22c
#define BP_XLOADFLAGS	     0x236
#define BP_CMDLINE_SIZE	     0x238
#define BP_INIT_SIZE	     0x260
#define BP_E820_TABLE	     0x2d0
#define BP_E820_MAX	     128

#define LOADED_HIGH   0x01
#define CAN_USE_HEAP  0x80
#define XLF_KERNEL_64 0x01

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

int bzimage_load(const struct guest_mem *m, const struct boot_files *f, struct boot_entry *out)
{
	const uint8_t *k = f->kernel;
	unsigned setup_sects = k[BP_SETUP_SECTS] ? k[BP_SETUP_SECTS] : 4;
	uint16_t version = get16(k + BP_VERSION);
	size_t setup_size = (setup_sects + 1) * 512ULL, hdr_end = 0x202 + k[BP_JUMP + 1];
	uint64_t kernel_size, init_size, low_end, initrd_addr = 0;
	uint32_t cmdline_max, initrd_max;
	size_t cmdline_len = strlen(f->cmdline);
	struct e820_entry e820[BP_E820_MAX];
	uint8_t *zp, *dst;
	unsigned n;
	int err;

	if (version < 0x20c || !(k[BP_XLOADFLAGS] & XLF_KERNEL_64)) {
		log_error(
		    "kernel: boot protocol %u.%02u without a 64-bit entry point (needs 2.12+)",
		    version >> 8, version & 0xff);
		return -ENOEXEC;
	}
	if (setup_size >= f->kernel_size || hdr_end > 0x1000 || hdr_end > setup_size) {
		log_error("kernel: bzImage header is inconsistent with the file size");
		return -ENOEXEC;
	}
	kernel_size = f->kernel_size - setup_size;
	init_size = get32(k + BP_INIT_SIZE);
	if (init_size < kernel_size)
		init_size = kernel_size;
	low_end = m->nr_regions ? m->regions[0].size : 0;
	if (low_end > LAYOUT_RAM_BELOW_4G)
		low_end = LAYOUT_RAM_BELOW_4G;
	if (BOOT_KERNEL_ADDR + init_size > low_end) {
		log_error("kernel: needs %llu MiB of memory to decompress, more than the guest has",
			  (unsigned long long)((BOOT_KERNEL_ADDR + init_size) >> 20) + 1);
		return -ENOMEM;
	}
	dst = gm_slice(m, BOOT_KERNEL_ADDR, kernel_size);
	zp = gm_slice(m, BOOT_ZERO_PAGE_ADDR, 0x1000);
	if (!dst || !zp)
		return -EFAULT;
	memcpy(dst, k + setup_size, kernel_size);

	/* The zero page: zeroes, then the setup header as the image has it. */
	memset(zp, 0, 0x1000);
	memcpy(zp + BP_SETUP_SECTS, k + BP_SETUP_SECTS, hdr_end - BP_SETUP_SECTS);
	zp[BP_TYPE_OF_LOADER] = 0xff; /* undefined boot loader */
	zp[BP_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
	zp[BP_HEAP_END_PTR] = 0x00;
	zp[BP_HEAP_END_PTR + 1] = 0xfe;

	cmdline_max = get32(k + BP_CMDLINE_SIZE);
	if (cmdline_max > BOOT_CMDLINE_MAX - 1)
		cmdline_max = BOOT_CMDLINE_MAX - 1;
	if (cmdline_len > cmdline_max) {
		log_error("command line: %zu bytes, more than the kernel's limit of %u",
			  cmdline_len, cmdline_max);
		return -E2BIG;
	}
	if (gm_write(m, BOOT_CMDLINE_ADDR, f->cmdline, cmdline_len + 1))
		return -EFAULT;
	put32(zp + BP_CMD_LINE_PTR, BOOT_CMDLINE_ADDR);

	if (f->initrd_fd >= 0) {
		initrd_max = get32(k + BP_INITRD_ADDR_MAX);
		err = boot_load_initrd(
		    m, f, BOOT_KERNEL_ADDR + init_size,
		    low_end < (uint64_t)initrd_max + 1 ? low_end : (uint64_t)initrd_max + 1,
		    &initrd_addr);
		if (err)
			return err;
		put32(zp + BP_RAMDISK_IMAGE, (uint32_t)initrd_addr);
		put32(zp + BP_RAMDISK_SIZE, (uint32_t)f->initrd_size);
		put32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd_addr >> 32));
		put32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(f->initrd_size >> 32));
	}

	n = e820_build(m, e820, BP_E820_MAX);
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	memcpy(zp + BP_E820_TABLE, e820, n * sizeof(e820[0]));
	/* Protocol 2.14: the RSDP's address, so the kernel need not scan for it. */
	if (version >= 0x20e)
		memcpy(zp + BP_ACPI_RSDP_ADDR, &f->rsdp, 8);

	err = boot_setup_long_mode(m);
	if (err)
		return err;
	out->kind = BOOT_LINUX64;
	out->entry = BOOT_KERNEL_ADDR + 0x200; /* startup_64 */
	out->arg = BOOT_ZERO_PAGE_ADDR;
	return 0;
}
