/* SPDX-License-Identifier: MIT */
/*
 * The ACPI tables of a yun machine (ACPI 6.4 §5): RSDP, XSDT, FADT, FACS, MADT and a DSDT
 * with the PCI host bridge, COM1 and \_S5. Linux finds CPUs only through the MADT (Debian's
 * cloud kernel has no MP-table parser) and powers off through the FADT's PM1 control block.
 */
#ifndef YUN_VMM_BOOT_ACPI_H
#define YUN_VMM_BOOT_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct acpi_config {
	unsigned ncpus; /* 1..255; APIC IDs 0..ncpus-1 */
	uint64_t pci_mmio32_base, pci_mmio32_size;
	uint64_t pci_mmio64_base, pci_mmio64_size;
	uint16_t pci_io_base, pci_io_size;
	unsigned pci_slots; /* slots of bus 0 given _PRT entries */
	bool com1;
};

/*
 * Build the tables into buf, to be copied to guest-physical `base` (16-byte aligned, in the
 * legacy RSDP search area). The RSDP is at offset 0. Returns the bytes used, -EINVAL for a
 * bad configuration, or -ENOSPC.
 */
int acpi_build(const struct acpi_config *cfg, uint64_t base, void *buf, size_t size);

#endif
