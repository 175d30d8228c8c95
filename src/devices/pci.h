/* SPDX-License-Identifier: MIT */
/*
 * PCI bus 0 behind a host bridge, reached through configuration mechanism #1 (ports 0xCF8 and
 * 0xCFC-0xCFF; PCI Local Bus spec 3.0 §3.2.2.3.2). Each function has a 256-byte
 * configuration space with write masks, memory BARs that the bus assigns before boot (as
 * firmware would) and moves on the MMIO bus when the guest reprograms them, and a capability
 * list.
 */
#ifndef YUN_DEVICES_PCI_H
#define YUN_DEVICES_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/bus.h"

#define PCI_MAX_SLOTS 32
#define PCI_NUM_BARS  6

/* Standard header offsets. */
#define PCI_VENDOR_ID	     0x00
#define PCI_DEVICE_ID	     0x02
#define PCI_COMMAND	     0x04
#define PCI_STATUS	     0x06
#define PCI_REVISION	     0x08
#define PCI_CLASS_PROG	     0x09
#define PCI_HEADER_TYPE	     0x0e
#define PCI_BAR0	     0x10
#define PCI_SUBSYS_VENDOR    0x2c
#define PCI_SUBSYS_ID	     0x2e
#define PCI_CAP_PTR	     0x34
#define PCI_INTERRUPT_LINE   0x3c
#define PCI_INTERRUPT_PIN    0x3d
#define PCI_COMMAND_MEMORY   0x0002
#define PCI_COMMAND_MASTER   0x0004
#define PCI_COMMAND_INTX_OFF 0x0400
#define PCI_STATUS_CAP_LIST  0x0010
#define PCI_CAP_ID_VNDR	     0x09
#define PCI_CAP_ID_MSIX	     0x11

struct pci_dev;
struct pci_bus;
struct snap_writer;
struct snap_reader;

struct pci_dev_ops {
	/* After a configuration write has been applied (masks and all), for side effects. */
	void (*config_written)(struct pci_dev *d, unsigned offset, unsigned size);
	/* Before a configuration read returns, to supply live values. */
	void (*config_read)(struct pci_dev *d, unsigned offset, unsigned size);
	/* A memory BAR was mapped at addr, or unmapped (mapped false). */
	void (*bar_moved)(struct pci_dev *d, unsigned bar, uint64_t addr, bool mapped);
};

struct pci_bar {
	uint64_t size; /* a power of two, 0 when the BAR is unused */
	bool is64;
	const struct io_ops *ops;
	void *opaque;
	bool mapped;
	uint64_t addr; /* where it is mapped on the MMIO bus */
};

struct pci_dev {
	const char *name;
	uint8_t cfg[256];
	uint8_t wmask[256];   /* bits the guest may write */
	uint8_t w1cmask[256]; /* bits the guest clears by writing one */
	struct pci_bar bars[PCI_NUM_BARS];
	unsigned slot;
	unsigned gsi; /* INTA's GSI, per the DSDT's _PRT */
	struct pci_bus *bus;
	const struct pci_dev_ops *ops;
	void *opaque;
	uint8_t cap_end;  /* where the next capability goes */
	uint8_t last_cap; /* the last capability, whose next pointer links the new one */
};

struct pci_bus {
	pthread_mutex_t lock; /* the address register and every configuration space */
	struct io_bus *pio;
	struct io_bus *mmio;
	uint32_t config_address;
	struct pci_dev *slots[PCI_MAX_SLOTS];
	struct pci_dev host_bridge;
	uint64_t mmio32_base, mmio32_end, mmio32_next;
	uint64_t mmio64_base, mmio64_end, mmio64_next;
};

int pci_bus_create(struct io_bus *pio, struct io_bus *mmio, uint64_t mmio64_base,
		   uint64_t mmio64_size, struct pci_bus **out);
void pci_bus_destroy(struct pci_bus *bus);
/* The GSI of INTA for a device in `slot` (the DSDT's _PRT says the same). */
unsigned pci_slot_gsi(unsigned slot);

void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
		  const uint8_t class_code[3], uint8_t revision, uint16_t subsys_vendor,
		  uint16_t subsys_id);
/* A memory BAR of `size` bytes (a power of two, at least 4 KiB) served by ops. */
int pci_dev_add_bar(struct pci_dev *d, unsigned bar, uint64_t size, bool is64,
		    const struct io_ops *ops, void *opaque);
/* Append a capability (cap[0] is its ID; cap[1] is filled in); returns its offset or -ENOSPC. */
int pci_dev_add_cap(struct pci_dev *d, const void *cap, unsigned len);
/* Put the device in the first free slot. */
int pci_bus_add(struct pci_bus *bus, struct pci_dev *d);
void pci_bus_remove(struct pci_bus *bus, struct pci_dev *d);
/* Give every BAR an address in the windows and turn memory decoding on, as firmware would. */
void pci_bus_assign_bars(struct pci_bus *bus);
unsigned pci_bus_nr_devices(const struct pci_bus *bus);

/* Configuration access without the ports (tests, and the ports' own handlers). */
uint32_t pci_config_read(struct pci_bus *bus, unsigned devfn, unsigned offset, unsigned size);
void pci_config_write(struct pci_bus *bus, unsigned devfn, unsigned offset, unsigned size,
		      uint32_t value);

/* Little-endian accessors of a configuration space. */
static inline uint32_t pci_get(const uint8_t *p, unsigned size)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < size; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static inline void pci_set(uint8_t *p, unsigned size, uint32_t v)
{
	for (unsigned i = 0; i < size; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Snapshots (section "pci"): restoring maps the BARs where the guest had them. */
int pci_bus_save(struct pci_bus *bus, struct snap_writer *w);
int pci_bus_load(struct pci_bus *bus, const struct snap_reader *r);

#endif
