// SPDX-License-Identifier: MIT
/*
 * PVH boot (Xen's "HVM direct boot ABI", xen/include/public/arch-x86/hvm/start_info.h), which
 * Linux supports with CONFIG_PVH and QEMU and Firecracker use for ELF kernels: load the ELF's
 * PT_LOAD segments at their physical addresses and enter the XEN_ELFNOTE_PHYS32_ENTRY address
 * in 32-bit protected mode with EBX pointing at a struct hvm_start_info.
 */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "vmm/boot/boot.h"
#include "vmm/layout.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC		 0x336ec578
#define PVH_MEMMAP_MAX		 16

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version 1 */
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

/* One program header, widened to the 64-bit form. */
struct phdr {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz;
};

static int get_phdr(const struct boot_files *f, bool is64, unsigned i, struct phdr *p)
{
	const uint8_t *k = f->kernel;
	uint64_t phoff, entsize, off;

	if (is64) {
		const Elf64_Ehdr *eh = (const Elf64_Ehdr *)k;

		phoff = eh->e_phoff;
		entsize = eh->e_phentsize;
		if (entsize < sizeof(Elf64_Phdr))
			return -ENOEXEC;
	} else {
		const Elf32_Ehdr *eh = (const Elf32_Ehdr *)k;

		phoff = eh->e_phoff;
		entsize = eh->e_phentsize;
		if (entsize < sizeof(Elf32_Phdr))
			return -ENOEXEC;
	}
	off = phoff + i * entsize;
	if (phoff > f->kernel_size || off > f->kernel_size - entsize)
		return -ENOEXEC;
	if (is64) {
		Elf64_Phdr ph;

		memcpy(&ph, k + off, sizeof(ph));
		*p = (struct phdr){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
	} else {
		Elf32_Phdr ph;

		memcpy(&ph, k + off, sizeof(ph));
		*p = (struct phdr){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
	}
	if (p->offset > f->kernel_size || p->filesz > f->kernel_size - p->offset ||
	    p->filesz > p->memsz)
		return -ENOEXEC;
	return 0;
}

/* Find XEN_ELFNOTE_PHYS32_ENTRY in a PT_NOTE segment. */
static bool find_pvh_entry(const struct boot_files *f, const struct phdr *p, uint64_t *entry)
{
	const uint8_t *n = f->kernel + p->offset, *end = n + p->filesz;

	while (end - n >= 12) {
		uint32_t namesz, descsz, type;
		uint64_t name_pad, desc_pad;

		memcpy(&namesz, n, 4);
		memcpy(&descsz, n + 4, 4);
		memcpy(&type, n + 8, 4);
		name_pad = ((uint64_t)namesz + 3) & ~3ULL;
		desc_pad = ((uint64_t)descsz + 3) & ~3ULL;
		if (name_pad + desc_pad > (uint64_t)(end - n - 12))
			return false;
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && !memcmp(n + 12, "Xen", 4) &&
		    (descsz == 4 || descsz == 8)) {
			uint64_t v = 0;

			memcpy(&v, n + 12 + name_pad, descsz);
			*entry = v & 0xffffffffULL; /* a 32-bit physical address */
			return true;
		}
		n += 12 + name_pad + desc_pad;
	}
	return false;
}

int pvh_load(const struct guest_mem *m, const struct boot_files *f, struct boot_entry *out)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)f->kernel;
	bool is64 = eh->e_ident[EI_CLASS] == ELFCLASS64;
	unsigned phnum;
	uint64_t entry = 0, kernel_end = 0, low_end, initrd_addr = 0;
	struct hvm_memmap_table_entry memmap[PVH_MEMMAP_MAX];
	struct e820_entry e820[PVH_MEMMAP_MAX];
	struct hvm_start_info si = {.magic = HVM_START_MAGIC, .version = 1};
	struct hvm_modlist_entry mod = {0};
	uint64_t modlist = BOOT_PVH_INFO_ADDR + sizeof(si);
	uint64_t memmap_addr = modlist + sizeof(mod);
	bool found = false;
	unsigned n;
	int err;

	if ((!is64 && eh->e_ident[EI_CLASS] != ELFCLASS32) || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    (is64 && f->kernel_size < sizeof(Elf64_Ehdr))) {
		log_error("kernel: not a little-endian ELF32/ELF64 file");
		return -ENOEXEC;
	}
	phnum = is64 ? eh->e_phnum : ((const Elf32_Ehdr *)f->kernel)->e_phnum;
	for (unsigned i = 0; i < phnum; i++) {
		struct phdr p;

		if (get_phdr(f, is64, i, &p)) {
			log_error("kernel: ELF program header %u is malformed", i);
			return -ENOEXEC;
		}
		if (p.type == PT_NOTE && !found)
			found = find_pvh_entry(f, &p, &entry);
	}
	if (!found) {
		log_error("kernel: ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
		return -ENOEXEC;
	}
	for (unsigned i = 0; i < phnum; i++) {
		struct phdr p;
		uint8_t *dst;

		get_phdr(f, is64, i, &p);
		if (p.type != PT_LOAD || p.memsz == 0)
			continue;
		dst = gm_slice(m, p.paddr, p.memsz);
		if (!dst || p.paddr < LAYOUT_HIGH_MEM_START) {
			log_error(
			    "kernel: segment at %#llx (+%#llx) is outside guest RAM above 1 MiB",
			    (unsigned long long)p.paddr, (unsigned long long)p.memsz);
			return -ENOMEM;
		}
		memcpy(dst, f->kernel + p.offset, p.filesz);
		memset(dst + p.filesz, 0, p.memsz - p.filesz);
		if (p.paddr + p.memsz > kernel_end)
			kernel_end = p.paddr + p.memsz;
	}

	if (strlen(f->cmdline) >= BOOT_CMDLINE_MAX) {
		log_error("command line: longer than %u bytes", BOOT_CMDLINE_MAX - 1);
		return -E2BIG;
	}
	if (gm_write(m, BOOT_CMDLINE_ADDR, f->cmdline, strlen(f->cmdline) + 1))
		return -EFAULT;
	si.cmdline_paddr = BOOT_CMDLINE_ADDR;
	si.rsdp_paddr = f->rsdp;

	if (f->initrd_fd >= 0) {
		low_end = m->regions[0].size;
		err =
		    boot_load_initrd(m, f, (kernel_end + 0xfff) & ~0xfffULL, low_end, &initrd_addr);
		if (err)
			return err;
		mod.paddr = initrd_addr;
		mod.size = f->initrd_size;
		si.nr_modules = 1;
		si.modlist_paddr = modlist;
		if (gm_write(m, modlist, &mod, sizeof(mod)))
			return -EFAULT;
	}

	n = e820_build(m, e820, PVH_MEMMAP_MAX);
	for (unsigned i = 0; i < n; i++)
		memmap[i] =
		    (struct hvm_memmap_table_entry){e820[i].addr, e820[i].size, e820[i].type, 0};
	si.memmap_paddr = memmap_addr;
	si.memmap_entries = n;
	if (gm_write(m, memmap_addr, memmap, n * sizeof(memmap[0])) ||
	    gm_write(m, BOOT_PVH_INFO_ADDR, &si, sizeof(si)))
		return -EFAULT;

	/* A GDT matching the selectors the vCPU is given: 0x10 code, 0x18 data, 0x20 TSS. */
	static const uint64_t gdt[5] = {0, 0, 0x00cf9b000000ffffULL, 0x00cf93000000ffffULL,
					0x00008b0000000067ULL};
	if (gm_write(m, BOOT_GDT_ADDR, gdt, sizeof(gdt)))
		return -EFAULT;
	out->kind = BOOT_PVH;
	out->entry = entry;
	out->arg = BOOT_PVH_INFO_ADDR;
	return 0;
}
