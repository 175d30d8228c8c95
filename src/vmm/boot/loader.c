// SPDX-License-Identifier: MIT
/* Pieces the two boot protocols share: format detection, the initrd, long-mode tables. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/boot/boot.h"
#include "vmm/layout.h"

enum kernel_format { KERNEL_UNKNOWN, KERNEL_BZIMAGE, KERNEL_ELF };

static enum kernel_format kernel_format(const uint8_t *k, size_t size)
{
	/* Linux boot protocol: "HdrS" at 0x202 and the 0xAA55 boot flag at 0x1FE. */
	if (size >= 0x1000 && !memcmp(k + 0x202, "HdrS", 4) && k[0x1fe] == 0x55 && k[0x1ff] == 0xaa)
		return KERNEL_BZIMAGE;
	if (size >= 52 && !memcmp(k, ELFMAG, SELFMAG))
		return KERNEL_ELF;
	return KERNEL_UNKNOWN;
}

int boot_check_kernel_file(const char *path)
{
	uint8_t head[0x1000];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = pread(fd, head, sizeof(head), 0);
	close(fd);
	if (n < 0)
		return -errno;
	return kernel_format(head, (size_t)n) == KERNEL_UNKNOWN ? -ENOEXEC : 0;
}

int boot_load(const struct guest_mem *m, const struct boot_files *f, struct boot_entry *out)
{
	switch (kernel_format(f->kernel, f->kernel_size)) {
	case KERNEL_BZIMAGE:
		return bzimage_load(m, f, out);
	case KERNEL_ELF:
		return pvh_load(m, f, out);
	default:
		log_error("kernel: neither a bzImage nor an ELF file");
		return -ENOEXEC;
	}
}

int boot_load_initrd(const struct guest_mem *m, const struct boot_files *f, uint64_t floor,
		     uint64_t limit, uint64_t *addr)
{
	uint64_t size = f->initrd_size, at, done = 0;
	uint8_t *dst;

	if (limit < floor || size > limit - floor) {
		log_error("initrd: %llu bytes do not fit in guest memory below %#llx",
			  (unsigned long long)size, (unsigned long long)limit);
		return -ENOMEM;
	}
	at = (limit - size) & ~0xfffULL;
	if (at < floor) {
		log_error("initrd: %llu bytes do not fit in guest memory",
			  (unsigned long long)size);
		return -ENOMEM;
	}
	dst = gm_slice(m, at, size);
	if (!dst)
		return -EFAULT;
	while (done < size) {
		ssize_t n = pread(f->initrd_fd, dst + done, size - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_error("initrd: read failed: %s",
				  n < 0 ? strerror(errno) : "short file");
			return n < 0 ? -errno : -EIO;
		}
		done += (uint64_t)n;
	}
	*addr = at;
	return 0;
}

int boot_setup_long_mode(const struct guest_mem *m)
{
	/* __BOOT_CS 0x10: 64-bit code; __BOOT_DS 0x18: data (Linux boot protocol). */
	static const uint64_t gdt[4] = {0, 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL};
	uint64_t *pml4 = gm_slice(m, BOOT_PML4_ADDR, 0x1000);
	uint64_t *pdpt = gm_slice(m, BOOT_PML4_ADDR + 0x1000, 0x1000);
	uint64_t *pd = gm_slice(m, BOOT_PML4_ADDR + 0x2000, 4 * 0x1000);

	if (!pml4 || !pdpt || !pd || gm_write(m, BOOT_GDT_ADDR, gdt, sizeof(gdt)))
		return -EFAULT;
	memset(pml4, 0, 0x1000);
	memset(pdpt, 0, 0x1000);
	pml4[0] = (BOOT_PML4_ADDR + 0x1000) | 0x3; /* present, writable */
	for (uint64_t i = 0; i < 4; i++)
		pdpt[i] = (BOOT_PML4_ADDR + 0x2000 + i * 0x1000) | 0x3;
	/* 2048 entries of 2 MiB: identity map of the first 4 GiB. */
	for (uint64_t i = 0; i < 2048; i++)
		pd[i] = (i << 21) | 0x83; /* present, writable, page size */
	return 0;
}
