/* SPDX-License-Identifier: MIT */
/*
 * The guest-physical and I/O-port map of a yun machine. Every piece that describes the machine
 * to the guest (e820, ACPI, PCI BAR assignment) takes its addresses from here.
 *
 *   0x0000_0000 .. 0x0009_FFFF   RAM (low; real-mode area, zero page, boot structures)
 *   0x000A_0000 .. 0x000F_FFFF   reserved (VGA hole, BIOS area; ACPI tables at 0xE0000)
 *   0x0010_0000 .. min(RAM, 3G)  RAM
 *   0xC000_0000 .. 0xDFFF_FFFF   PCI 32-bit MMIO window (BARs)
 *   0xE000_0000 .. 0xEFFF_FFFF   PCI ECAM (reserved for MCFG, not yet decoded)
 *   0xFEC0_0000                  IOAPIC (in-kernel)
 *   0xFEE0_0000                  LAPIC (in-kernel)
 *   0x1_0000_0000 ..             RAM above 4 GiB, for guests with more than 3 GiB
 *   after high RAM (1 GiB aligned), 64 GiB   PCI 64-bit MMIO window
 */
#ifndef YUN_VMM_LAYOUT_H
#define YUN_VMM_LAYOUT_H

#define GiB (1ULL << 30)
#define MiB (1ULL << 20)
#define KiB (1ULL << 10)

#define LAYOUT_LOW_RAM_END     0xA0000ULL /* end of conventional memory */
#define LAYOUT_BIOS_START      0xA0000ULL
#define LAYOUT_BIOS_END	       0x100000ULL
#define LAYOUT_HIGH_MEM_START  0x100000ULL /* 1 MiB: where kernels load */
#define LAYOUT_ACPI_START      0xE0000ULL  /* RSDP and tables; the legacy RSDP search area */
#define LAYOUT_ACPI_SIZE       0x20000ULL
#define LAYOUT_RAM_BELOW_4G    (3 * GiB) /* most RAM kept below the 32-bit PCI hole */
#define LAYOUT_PCI_MMIO32_BASE 0xC0000000ULL
#define LAYOUT_PCI_MMIO32_SIZE 0x20000000ULL
#define LAYOUT_PCI_ECAM_BASE   0xE0000000ULL
#define LAYOUT_PCI_ECAM_SIZE   0x10000000ULL
#define LAYOUT_IOAPIC_BASE     0xFEC00000ULL
#define LAYOUT_LAPIC_BASE      0xFEE00000ULL
#define LAYOUT_4G	       (4 * GiB)
#define LAYOUT_PCI_MMIO64_SIZE (64 * GiB)

/* I/O ports. */
#define PORT_COM1	  0x3F8
#define PORT_COM1_IRQ	  4
#define PORT_I8042_DATA	  0x60
#define PORT_I8042_CMD	  0x64
#define PORT_RTC	  0x70	/* index 0x70, data 0x71 */
#define PORT_PCI_CONFIG	  0xCF8 /* address 0xCF8, data 0xCFC..0xCFF */
#define PORT_ACPI_PM_BASE 0x600 /* PM1a event block (status, enable) */
#define PORT_ACPI_PM1_EVT 0x600
#define PORT_ACPI_PM1_CNT 0x604
#define PORT_ACPI_PM_TMR  0x608
#define ACPI_SCI_IRQ	  9
#define PORT_PCI_IO_BASE  0x1000 /* PCI I/O window for I/O BARs */
#define PORT_PCI_IO_SIZE  0xF000

/* ACPI \_S5 sleep type value written to PM1_CNT.SLP_TYP for power-off. */
#define ACPI_S5_SLP_TYP 5

/* GSIs: legacy ISA IRQs 0-15 on the IOAPIC; PCI INTx from 16. */
#define GSI_PCI_INTX_BASE 16
#define IOAPIC_NUM_PINS	  24

#endif
