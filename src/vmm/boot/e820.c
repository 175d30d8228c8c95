// SPDX-License-Identifier: MIT
#include "vmm/boot/boot.h"
#include "vmm/layout.h"

static unsigned add(struct e820_entry *e, unsigned n, unsigned max, uint64_t addr, uint64_t size,
		    uint32_t type)
{
	if (n < max && size)
		e[n++] = (struct e820_entry){addr, size, type};
	return n;
}

/*
 * Conventional memory below 640 KiB, the BIOS area reserved (it holds the ACPI tables at
 * 0xE0000), RAM from 1 MiB to the PCI hole, and RAM above 4 GiB for large guests.
 */
unsigned e820_build(const struct guest_mem *m, struct e820_entry *e, unsigned max)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->nr_regions; i++) {
		const struct gm_region *r = &m->regions[i];

		if (r->gpa == 0) {
			uint64_t end = r->gpa + r->size;

			n = add(e, n, max, 0, end < LAYOUT_LOW_RAM_END ? end : LAYOUT_LOW_RAM_END,
				E820_RAM);
			n = add(e, n, max, LAYOUT_ACPI_START, LAYOUT_BIOS_END - LAYOUT_ACPI_START,
				E820_RESERVED);
			if (end > LAYOUT_HIGH_MEM_START)
				n = add(e, n, max, LAYOUT_HIGH_MEM_START,
					end - LAYOUT_HIGH_MEM_START, E820_RAM);
		} else {
			n = add(e, n, max, r->gpa, r->size, E820_RAM);
		}
	}
	return n;
}
