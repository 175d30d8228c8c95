// SPDX-License-Identifier: MIT
#include "vmm/memory.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/layout.h"

int gm_add_region(struct guest_mem *m, uint64_t gpa, uint64_t size, void *hva)
{
	if (m->nr_regions == GM_MAX_REGIONS || size == 0 || gpa + size - 1 < gpa)
		return -EINVAL;
	for (unsigned i = 0; i < m->nr_regions; i++) {
		const struct gm_region *r = &m->regions[i];

		if (gpa < r->gpa + r->size && r->gpa < gpa + size)
			return -EEXIST;
	}
	m->regions[m->nr_regions++] = (struct gm_region){gpa, size, hva, m->ram_size};
	m->ram_size += size;
	return 0;
}

/* Map fd (ram_size bytes) as the guest's RAM, laid out per layout.h; m->memfd takes fd. */
static int map_ram(struct guest_mem *m, uint64_t ram_size, int fd, int flags)
{
	uint64_t low = ram_size < LAYOUT_RAM_BELOW_4G ? ram_size : LAYOUT_RAM_BELOW_4G;
	uint64_t high = ram_size - low;
	uint8_t *base;
	int err;

	/* One mapping of the whole file; regions are windows into it. */
	base = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, flags | MAP_NORESERVE, fd, 0);
	if (base == MAP_FAILED) {
		err = -errno;
		close(fd);
		return err;
	}
	/* Guest RAM is not worth a core dump. */
	madvise(base, ram_size, MADV_DONTDUMP);
	m->memfd = fd;
	err = gm_add_region(m, 0, low, base);
	if (!err && high)
		err = gm_add_region(m, LAYOUT_4G, high, base + low);
	if (err) {
		munmap(base, ram_size);
		close(fd);
		memset(m, 0, sizeof(*m));
		m->memfd = -1;
	}
	return err;
}

int gm_init(struct guest_mem *m, uint64_t ram_size)
{
	int fd, err;

	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	if (ram_size == 0 || ram_size % (2 * MiB))
		return -EINVAL;
	fd = memfd_create("yun-guest-ram", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)ram_size) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return map_ram(m, ram_size, fd, MAP_SHARED);
}

int gm_init_file(struct guest_mem *m, uint64_t ram_size, int fd)
{
	struct stat st;

	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	if (ram_size == 0 || ram_size % (2 * MiB) || fstat(fd, &st) < 0 ||
	    (uint64_t)st.st_size != ram_size) {
		close(fd);
		return -EINVAL;
	}
	m->private_file = true;
	return map_ram(m, ram_size, fd, MAP_PRIVATE);
}

/* Write [off, off+len) of RAM to the same offsets of fd, leaving pages of zeros out. */
static int save_range(const struct guest_mem *m, int fd, uint64_t off, uint64_t len)
{
	static const uint8_t zero[4096];
	const uint8_t *base = m->regions[0].hva;

	for (uint64_t at = off; at < off + len;) {
		uint64_t n = off + len - at < 4096 ? off + len - at : 4096;
		ssize_t w;

		if (!memcmp(base + at, zero, n)) {
			at += n;
			continue;
		}
		/* Runs of data go out in one write, up to 1 MiB. */
		while (at + n < off + len && n < MiB) {
			uint64_t more = off + len - (at + n) < 4096 ? off + len - (at + n) : 4096;

			if (!memcmp(base + at + n, zero, more))
				break;
			n += more;
		}
		w = pwrite(fd, base + at, n, (off_t)at);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		at += (uint64_t)w;
	}
	return 0;
}

int gm_save(const struct guest_mem *m, int fd)
{
	uint64_t off = 0;
	int err;

	if (m->memfd < 0 || ftruncate(fd, (off_t)m->ram_size) < 0)
		return m->memfd < 0 ? -EINVAL : -errno;
	if (m->private_file)
		return save_range(m, fd, 0, m->ram_size);
	/* A memfd: pages the guest never touched are holes; reading them would fill them. */
	while (off < m->ram_size) {
		off_t data = lseek(m->memfd, (off_t)off, SEEK_DATA), hole;

		if (data < 0)
			return errno == ENXIO ? 0 : -errno;
		hole = lseek(m->memfd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		err = save_range(m, fd, (uint64_t)data, (uint64_t)(hole - data));
		if (err)
			return err;
		off = (uint64_t)hole;
	}
	return 0;
}

void gm_destroy(struct guest_mem *m)
{
	if (m->memfd >= 0) {
		munmap(m->regions[0].hva, m->ram_size);
		close(m->memfd);
	}
	memset(m, 0, sizeof(*m));
	m->memfd = -1;
}

const struct gm_region *gm_region_of(const struct guest_mem *m, uint64_t gpa)
{
	for (unsigned i = 0; i < m->nr_regions; i++) {
		const struct gm_region *r = &m->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r;
	}
	return NULL;
}

void *gm_slice(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nr_regions; i++) {
		const struct gm_region *r = &m->regions[i];

		/* As bhyve's libvmmapi: no sum that can overflow. */
		if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len)
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

int gm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *p = gm_slice(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gm_slice(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

/* Intel SDM vol. 3A §2.5 and §4: the control bits the walk depends on. */
#define CR0_PE	  (1ULL << 0)
#define CR0_WP	  (1ULL << 16)
#define CR0_PG	  (1ULL << 31)
#define CR4_PSE	  (1ULL << 4)
#define CR4_PAE	  (1ULL << 5)
#define CR4_LA57  (1ULL << 12)
#define CR4_SMEP  (1ULL << 20)
#define CR4_SMAP  (1ULL << 21)
#define EFER_LMA  (1ULL << 10)
#define EFER_NXE  (1ULL << 11)
#define PTE_P	  (1ULL << 0)
#define PTE_RW	  (1ULL << 1)
#define PTE_US	  (1ULL << 2)
#define PTE_PS	  (1ULL << 7)
#define PTE_NX	  (1ULL << 63)
#define PHYS_MASK 0x000ffffffffff000ULL /* 52-bit physical addresses */

static int walk_fault(struct gm_translation *t, unsigned access, uint32_t present_bits)
{
	t->result = GM_WALK_PAGE_FAULT;
	t->error_code = present_bits | (access & (GM_PF_WRITE | GM_PF_USER | GM_PF_FETCH));
	return 0;
}

/*
 * Check the accumulated rights of a present translation against the access
 * (Intel SDM vol. 3A §4.6). Returns true when the access is allowed.
 */
static bool access_allowed(const struct gm_paging *p, unsigned access, bool writable, bool user,
			   bool nx)
{
	bool is_user = access & GM_ACCESS_USER;

	if (is_user && !user)
		return false;
	if (access & GM_ACCESS_WRITE) {
		if (!writable && (is_user || (p->cr0 & CR0_WP)))
			return false;
	}
	if (access & GM_ACCESS_FETCH) {
		if (nx && (p->efer & EFER_NXE))
			return false;
		if (!is_user && user && (p->cr4 & CR4_SMEP))
			return false;
	}
	/* Supervisor data access to a user page under SMAP depends on RFLAGS.AC: not judged. */
	return true;
}

static bool read_entry(const struct guest_mem *m, struct gm_translation *t, unsigned level,
		       uint64_t gpa, unsigned size, uint64_t *entry)
{
	uint64_t v = 0;

	if (gm_read(m, gpa, &v, size) < 0) {
		t->result = GM_WALK_BAD_TABLE;
		return false;
	}
	if (t->nr_steps < 5)
		t->steps[t->nr_steps++] = (struct gm_walk_step){level, gpa, v};
	*entry = v;
	return true;
}

static int finish(const struct guest_mem *m, struct gm_translation *t, uint64_t gpa,
		  uint64_t page_size)
{
	t->gpa = gpa;
	t->page_size = page_size;
	t->hva = gm_slice(m, gpa, 1);
	t->result = t->hva ? GM_WALK_OK : GM_WALK_NOT_IN_RAM;
	return 0;
}

/* 32-bit paging without PAE: two levels of 4-byte entries, 4 MiB pages with CR4.PSE. */
static int walk_32(const struct guest_mem *m, const struct gm_paging *p, uint64_t gva,
		   unsigned access, struct gm_translation *t)
{
	uint64_t pde, pte, table = p->cr3 & 0xfffff000ULL;
	uint32_t va = (uint32_t)gva;

	if (!read_entry(m, t, 2, table + ((va >> 22) & 0x3ff) * 4, 4, &pde))
		return 0;
	if (!(pde & PTE_P))
		return walk_fault(t, access, 0);
	if ((pde & PTE_PS) && (p->cr4 & CR4_PSE)) {
		/* PSE-36: bits 13..20 of the PDE hold physical address bits 32..39. */
		uint64_t base = (pde & 0xffc00000ULL) | ((pde & 0x1fe000ULL) << 19);

		if (!access_allowed(p, access, pde & PTE_RW, pde & PTE_US, false))
			return walk_fault(t, access, GM_PF_PRESENT);
		return finish(m, t, base | (va & 0x3fffff), 4 * MiB);
	}
	if (!read_entry(m, t, 1, (pde & 0xfffff000ULL) + ((va >> 12) & 0x3ff) * 4, 4, &pte))
		return 0;
	if (!(pte & PTE_P))
		return walk_fault(t, access, 0);
	if (!access_allowed(p, access, (pde & pte) & PTE_RW, (pde & pte) & PTE_US, false))
		return walk_fault(t, access, GM_PF_PRESENT);
	return finish(m, t, (pte & 0xfffff000ULL) | (va & 0xfff), 4 * KiB);
}

/* PAE, 4-level and 5-level paging: 8-byte entries, 9 bits of address per level. */
static int walk_64(const struct guest_mem *m, const struct gm_paging *p, uint64_t gva,
		   unsigned access, struct gm_translation *t)
{
	bool long_mode = p->efer & EFER_LMA;
	unsigned levels = !long_mode ? 3 : (p->cr4 & CR4_LA57) ? 5 : 4;
	bool writable = true, user = true, nx = false;
	uint64_t table, entry;

	if (long_mode) {
		/* Canonical check: bits above the top level's must copy its top bit (#GP, not #PF). */
		unsigned bits = levels == 5 ? 57 : 48;
		int64_t s = (int64_t)(gva << (64 - bits)) >> (64 - bits);

		if ((uint64_t)s != gva) {
			t->result = GM_WALK_PAGE_FAULT;
			t->error_code = 0;
			return 0;
		}
		table = p->cr3 & PHYS_MASK;
	} else {
		/* PAE: a 4-entry PDPT, 32-byte aligned, whose entries carry only P. */
		uint32_t va = (uint32_t)gva;

		if (!read_entry(m, t, 3, (p->cr3 & 0xffffffe0ULL) + ((va >> 30) & 3) * 8, 8,
				&entry))
			return 0;
		if (!(entry & PTE_P))
			return walk_fault(t, access, 0);
		table = entry & PHYS_MASK;
		levels = 2;
		gva = va;
	}

	for (unsigned level = levels; level >= 1; level--) {
		unsigned shift = 12 + 9 * (level - 1);

		if (!read_entry(m, t, level, table + ((gva >> shift) & 0x1ff) * 8, 8, &entry))
			return 0;
		if (!(entry & PTE_P))
			return walk_fault(t, access, 0);
		writable = writable && (entry & PTE_RW);
		user = user && (entry & PTE_US);
		nx = nx || ((entry & PTE_NX) && (p->efer & EFER_NXE));
		/* Large pages: 1 GiB at level 3 (long mode only), 2 MiB at level 2. */
		if ((level == 2 || (level == 3 && long_mode)) && (entry & PTE_PS)) {
			uint64_t size = 1ULL << shift;

			if (!access_allowed(p, access, writable, user, nx))
				return walk_fault(t, access, GM_PF_PRESENT);
			return finish(m, t, (entry & PHYS_MASK & ~(size - 1)) | (gva & (size - 1)),
				      size);
		}
		if (level == 1) {
			if (!access_allowed(p, access, writable, user, nx))
				return walk_fault(t, access, GM_PF_PRESENT);
			return finish(m, t, (entry & PHYS_MASK) | (gva & 0xfff), 4 * KiB);
		}
		table = entry & PHYS_MASK;
	}
	return 0;
}

int gm_translate(const struct guest_mem *m, const struct gm_paging *p, uint64_t gva,
		 unsigned access, struct gm_translation *t)
{
	memset(t, 0, sizeof(*t));
	t->gva = gva;
	if (!(p->cr0 & CR0_PG)) {
		/* No paging: linear is physical (truncated to 32 bits outside long mode). */
		finish(m, t, gva & 0xffffffffULL, 0);
		return 0;
	}
	if (!(p->cr0 & CR0_PE))
		return -EINVAL;
	if ((p->efer & EFER_LMA) && !(p->cr4 & CR4_PAE))
		return -EINVAL;
	if (p->cr4 & CR4_PAE)
		walk_64(m, p, gva, access, t);
	else
		walk_32(m, p, gva, access, t);
	/* The I/D bit is set only where fetches can be refused: SMEP, or PAE paging with NX
	 * (SDM vol. 3A §4.7). */
	if (t->result == GM_WALK_PAGE_FAULT && !(p->cr4 & CR4_SMEP) &&
	    !((p->cr4 & CR4_PAE) && (p->efer & EFER_NXE)))
		t->error_code &= ~GM_PF_FETCH;
	return 0;
}
