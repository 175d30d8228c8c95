// SPDX-License-Identifier: MIT
#include "devices/pci.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/snapshot_file.h"
#include "vmm/layout.h"

/*
 * The host bridge is Red Hat's "QEMU PCIe host bridge" ID (1b36:0008), as QEMU's generic
 * host bridge and Cloud Hypervisor present it: a neutral ID that Linux binds to nothing.
 */
#define HOST_BRIDGE_VENDOR 0x1b36
#define HOST_BRIDGE_DEVICE 0x0008

#define CONFIG_ENABLE 0x80000000u

unsigned pci_slot_gsi(unsigned slot)
{
	return GSI_PCI_INTX_BASE + slot % 8;
}

void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
		  const uint8_t class_code[3], uint8_t revision, uint16_t subsys_vendor,
		  uint16_t subsys_id)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	pci_set(d->cfg + PCI_VENDOR_ID, 2, vendor);
	pci_set(d->cfg + PCI_DEVICE_ID, 2, device);
	d->cfg[PCI_REVISION] = revision;
	d->cfg[PCI_CLASS_PROG] = class_code[2];
	d->cfg[PCI_CLASS_PROG + 1] = class_code[1];
	d->cfg[PCI_CLASS_PROG + 2] = class_code[0];
	pci_set(d->cfg + PCI_SUBSYS_VENDOR, 2, subsys_vendor);
	pci_set(d->cfg + PCI_SUBSYS_ID, 2, subsys_id);
	/* Command: I/O and memory space, bus master, INTx disable. */
	pci_set(d->wmask + PCI_COMMAND, 2, 0x0407);
	/* Status: the error bits are write-one-to-clear. */
	pci_set(d->w1cmask + PCI_STATUS, 2, 0xf900);
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
	d->cap_end = 0x40;
}

int pci_dev_add_bar(struct pci_dev *d, unsigned bar, uint64_t size, bool is64,
		    const struct io_ops *ops, void *opaque)
{
	uint64_t mask = ~(size - 1);

	if (bar >= PCI_NUM_BARS || (is64 && bar == PCI_NUM_BARS - 1) || size < 4096 ||
	    (size & (size - 1)) || d->bars[bar].size || (is64 && d->bars[bar + 1].size))
		return -EINVAL;
	/* Nor the upper half of a 64-bit BAR below it. */
	if (bar > 0 && d->bars[bar - 1].size && d->bars[bar - 1].is64)
		return -EINVAL;
	d->bars[bar] = (struct pci_bar){.size = size, .is64 = is64, .ops = ops, .opaque = opaque};
	/* Memory BAR: bits 0-3 read-only type (bit 2 set for 64-bit), the rest size-aligned. */
	d->cfg[PCI_BAR0 + 4 * bar] = is64 ? 0x04 : 0x00;
	pci_set(d->wmask + PCI_BAR0 + 4 * bar, 4, (uint32_t)mask & 0xfffffff0u);
	if (is64) {
		pci_set(d->wmask + PCI_BAR0 + 4 * (bar + 1), 4, (uint32_t)(mask >> 32));
		d->bars[bar + 1].size = 0; /* the upper half belongs to this BAR */
	}
	return 0;
}

int pci_dev_add_cap(struct pci_dev *d, const void *cap, unsigned len)
{
	unsigned at = (d->cap_end + 3) & ~3u;

	if (len < 2 || at + len > 256)
		return -ENOSPC;
	memcpy(d->cfg + at, cap, len);
	d->cfg[at + 1] = 0;
	if (d->last_cap)
		d->cfg[d->last_cap + 1] = (uint8_t)at;
	else
		d->cfg[PCI_CAP_PTR] = (uint8_t)at;
	pci_set(d->cfg + PCI_STATUS, 2, pci_get(d->cfg + PCI_STATUS, 2) | PCI_STATUS_CAP_LIST);
	d->last_cap = (uint8_t)at;
	d->cap_end = (uint8_t)(at + len);
	return (int)at;
}

static uint64_t bar_address(const struct pci_dev *d, unsigned bar)
{
	uint64_t addr = pci_get(d->cfg + PCI_BAR0 + 4 * bar, 4) & 0xfffffff0u;

	if (d->bars[bar].is64)
		addr |= (uint64_t)pci_get(d->cfg + PCI_BAR0 + 4 * (bar + 1), 4) << 32;
	return addr;
}

static bool in_window(const struct pci_bus *bus, uint64_t addr, uint64_t size)
{
	return (addr >= bus->mmio32_base && addr <= bus->mmio32_end - size &&
		size <= bus->mmio32_end - bus->mmio32_base) ||
	       (addr >= bus->mmio64_base && addr <= bus->mmio64_end - size &&
		size <= bus->mmio64_end - bus->mmio64_base);
}

/*
 * Bring every BAR's MMIO mapping in line with its register and the command register's memory
 * enable. Called under the bus lock, from a port access: the MMIO bus is a different bus, so
 * taking its write lock here cannot deadlock with this access.
 */
static void update_bars(struct pci_dev *d)
{
	bool decode = pci_get(d->cfg + PCI_COMMAND, 2) & PCI_COMMAND_MEMORY;

	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &d->bars[i];
		uint64_t addr;
		bool want;

		if (!b->size)
			continue;
		addr = bar_address(d, i);
		want = decode && addr && in_window(d->bus, addr, b->size);
		if (b->mapped && (!want || addr != b->addr)) {
			io_bus_unregister(d->bus->mmio, b->addr, b->opaque);
			b->mapped = false;
			if (d->ops && d->ops->bar_moved)
				d->ops->bar_moved(d, i, b->addr, false);
		}
		if (want && !b->mapped) {
			if (io_bus_register(d->bus->mmio, addr, b->size, b->ops, b->opaque,
					    d->name)) {
				log_guest_error(
				    "pci %s: BAR%u at %#llx overlaps another range; left "
				    "unmapped",
				    d->name, i, (unsigned long long)addr);
				continue;
			}
			b->mapped = true;
			b->addr = addr;
			if (d->ops && d->ops->bar_moved)
				d->ops->bar_moved(d, i, addr, true);
		} else if (decode && addr && !want && !b->mapped) {
			log_guest_error(
			    "pci %s: BAR%u at %#llx is outside the host bridge's windows; "
			    "left unmapped",
			    d->name, i, (unsigned long long)addr);
		}
	}
}

static struct pci_dev *dev_at(struct pci_bus *bus, unsigned devfn)
{
	/* One function per slot: functions 1-7 are absent. */
	if ((devfn & 7) || (devfn >> 3) >= PCI_MAX_SLOTS)
		return NULL;
	return bus->slots[devfn >> 3];
}

static bool access_ok(unsigned offset, unsigned size)
{
	return (size == 1 || size == 2 || size == 4) && offset < 256 && offset % size == 0;
}

static uint32_t config_read_locked(struct pci_bus *bus, unsigned devfn, unsigned offset,
				   unsigned size)
{
	struct pci_dev *d = dev_at(bus, devfn);

	if (!d || !access_ok(offset, size))
		return 0xffffffffu >> (32 - 8 * size);
	if (d->ops && d->ops->config_read)
		d->ops->config_read(d, offset, size);
	return pci_get(d->cfg + offset, size);
}

static void config_write_locked(struct pci_bus *bus, unsigned devfn, unsigned offset, unsigned size,
				uint32_t value)
{
	struct pci_dev *d = dev_at(bus, devfn);

	if (!d || !access_ok(offset, size))
		return;
	for (unsigned i = 0; i < size; i++) {
		uint8_t v = (uint8_t)(value >> (8 * i)), at = (uint8_t)(offset + i);

		d->cfg[at] = (uint8_t)((d->cfg[at] & ~d->wmask[at]) | (v & d->wmask[at]));
		d->cfg[at] &= (uint8_t) ~(v & d->w1cmask[at]);
	}
	if (offset < PCI_BAR0 + 4 * PCI_NUM_BARS && offset + size > PCI_COMMAND)
		update_bars(d);
	if (d->ops && d->ops->config_written)
		d->ops->config_written(d, offset, size);
}

uint32_t pci_config_read(struct pci_bus *bus, unsigned devfn, unsigned offset, unsigned size)
{
	uint32_t v;

	pthread_mutex_lock(&bus->lock);
	v = config_read_locked(bus, devfn, offset, size);
	pthread_mutex_unlock(&bus->lock);
	return v;
}

void pci_config_write(struct pci_bus *bus, unsigned devfn, unsigned offset, unsigned size,
		      uint32_t value)
{
	pthread_mutex_lock(&bus->lock);
	config_write_locked(bus, devfn, offset, size, value);
	pthread_mutex_unlock(&bus->lock);
}

/* Port 0xCF8: the address register (32-bit accesses only; others pass through to
 * whatever else decodes the port, here nothing). */
static void addr_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct pci_bus *bus = opaque;
	uint32_t v;

	pthread_mutex_lock(&bus->lock);
	v = size == 4 ? bus->config_address : 0xffffffffu;
	pthread_mutex_unlock(&bus->lock);
	pci_set(data, size, v);
}

static void addr_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct pci_bus *bus = opaque;

	if (size != 4)
		return;
	pthread_mutex_lock(&bus->lock);
	bus->config_address = pci_get(data, 4) & 0x80fffffcu;
	pthread_mutex_unlock(&bus->lock);
}

/* Ports 0xCFC-0xCFF: the data window into the addressed register. */
static bool data_target(struct pci_bus *bus, uint64_t offset, unsigned *devfn, unsigned *reg)
{
	uint32_t a = bus->config_address;

	if (!(a & CONFIG_ENABLE) || ((a >> 16) & 0xff) != 0)
		return false;
	*devfn = (a >> 8) & 0xff;
	*reg = (a & 0xfc) + (unsigned)offset;
	return true;
}

static void data_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct pci_bus *bus = opaque;
	unsigned devfn, reg;
	uint32_t v = 0xffffffffu;

	pthread_mutex_lock(&bus->lock);
	if (data_target(bus, offset, &devfn, &reg))
		v = config_read_locked(bus, devfn, reg, size);
	pthread_mutex_unlock(&bus->lock);
	pci_set(data, size, v);
}

static void data_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct pci_bus *bus = opaque;
	unsigned devfn, reg;

	pthread_mutex_lock(&bus->lock);
	if (data_target(bus, offset, &devfn, &reg))
		config_write_locked(bus, devfn, reg, size, pci_get(data, size));
	pthread_mutex_unlock(&bus->lock);
}

static const struct io_ops addr_ops = {.read = addr_read, .write = addr_write};
static const struct io_ops data_ops = {.read = data_read, .write = data_write};

int pci_bus_create(struct io_bus *pio, struct io_bus *mmio, uint64_t mmio64_base,
		   uint64_t mmio64_size, struct pci_bus **out)
{
	static const uint8_t host_class[3] = {0x06, 0x00, 0x00};
	struct pci_bus *bus = calloc(1, sizeof(*bus));
	int err;

	if (!bus)
		return -ENOMEM;
	pthread_mutex_init(&bus->lock, NULL);
	bus->pio = pio;
	bus->mmio = mmio;
	bus->mmio32_base = bus->mmio32_next = LAYOUT_PCI_MMIO32_BASE;
	bus->mmio32_end = LAYOUT_PCI_MMIO32_BASE + LAYOUT_PCI_MMIO32_SIZE;
	bus->mmio64_base = bus->mmio64_next = mmio64_base;
	bus->mmio64_end = mmio64_base + mmio64_size;
	pci_dev_init(&bus->host_bridge, "host bridge", HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE,
		     host_class, 0, HOST_BRIDGE_VENDOR, 0x1100);
	bus->host_bridge.bus = bus;
	bus->slots[0] = &bus->host_bridge;
	err = io_bus_register(pio, PORT_PCI_CONFIG, 4, &addr_ops, bus, "pci address");
	if (!err)
		err = io_bus_register(pio, PORT_PCI_CONFIG + 4, 4, &data_ops, bus, "pci data");
	if (err) {
		pci_bus_destroy(bus);
		return err;
	}
	*out = bus;
	return 0;
}

void pci_bus_destroy(struct pci_bus *bus)
{
	if (!bus)
		return;
	io_bus_unregister(bus->pio, PORT_PCI_CONFIG, bus);
	io_bus_unregister(bus->pio, PORT_PCI_CONFIG + 4, bus);
	for (unsigned s = 1; s < PCI_MAX_SLOTS; s++) {
		if (bus->slots[s])
			pci_bus_remove(bus, bus->slots[s]);
	}
	pthread_mutex_destroy(&bus->lock);
	free(bus);
}

int pci_bus_add(struct pci_bus *bus, struct pci_dev *d)
{
	pthread_mutex_lock(&bus->lock);
	for (unsigned s = 1; s < PCI_MAX_SLOTS; s++) {
		if (bus->slots[s])
			continue;
		d->slot = s;
		d->bus = bus;
		d->gsi = pci_slot_gsi(s);
		d->cfg[PCI_INTERRUPT_PIN] = 1; /* INTA */
		d->cfg[PCI_INTERRUPT_LINE] = (uint8_t)d->gsi;
		bus->slots[s] = d;
		pthread_mutex_unlock(&bus->lock);
		return 0;
	}
	pthread_mutex_unlock(&bus->lock);
	return -ENOSPC;
}

void pci_bus_remove(struct pci_bus *bus, struct pci_dev *d)
{
	pthread_mutex_lock(&bus->lock);
	if (d->slot < PCI_MAX_SLOTS && bus->slots[d->slot] == d) {
		for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
			if (d->bars[i].mapped) {
				io_bus_unregister(bus->mmio, d->bars[i].addr, d->bars[i].opaque);
				d->bars[i].mapped = false;
			}
		}
		bus->slots[d->slot] = NULL;
	}
	pthread_mutex_unlock(&bus->lock);
}

unsigned pci_bus_nr_devices(const struct pci_bus *bus)
{
	unsigned n = 0;

	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++)
		n += bus->slots[s] != NULL;
	return n;
}

void pci_bus_assign_bars(struct pci_bus *bus)
{
	pthread_mutex_lock(&bus->lock);
	for (unsigned s = 1; s < PCI_MAX_SLOTS; s++) {
		struct pci_dev *d = bus->slots[s];

		if (!d)
			continue;
		for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
			struct pci_bar *b = &d->bars[i];
			uint64_t *next = b->is64 ? &bus->mmio64_next : &bus->mmio32_next;
			uint64_t end = b->is64 ? bus->mmio64_end : bus->mmio32_end;
			uint64_t addr;

			if (!b->size)
				continue;
			addr = (*next + b->size - 1) & ~(b->size - 1);
			if (addr > end || b->size > end - addr) {
				log_error("pci %s: no room for BAR%u (%llu bytes)", d->name, i,
					  (unsigned long long)b->size);
				continue;
			}
			*next = addr + b->size;
			pci_set(d->cfg + PCI_BAR0 + 4 * i, 4,
				(uint32_t)addr | (d->cfg[PCI_BAR0 + 4 * i] & 0xf));
			if (b->is64)
				pci_set(d->cfg + PCI_BAR0 + 4 * (i + 1), 4, (uint32_t)(addr >> 32));
		}
		pci_set(d->cfg + PCI_COMMAND, 2,
			pci_get(d->cfg + PCI_COMMAND, 2) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
		update_bars(d);
	}
	pthread_mutex_unlock(&bus->lock);
}

/* Snapshots: the address register and every function's configuration space. */
struct pci_bus_state {
	uint32_t config_address;
	uint32_t present; /* slots with a function */
	uint8_t cfg[PCI_MAX_SLOTS][256];
};

static uint32_t present_slots(const struct pci_bus *bus)
{
	uint32_t mask = 0;

	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		if (bus->slots[s])
			mask |= 1u << s;
	}
	return mask;
}

int pci_bus_save(struct pci_bus *bus, struct snap_writer *w)
{
	struct pci_bus_state *st = calloc(1, sizeof(*st));

	if (!st)
		return -ENOMEM;
	pthread_mutex_lock(&bus->lock);
	st->config_address = bus->config_address;
	st->present = present_slots(bus);
	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		if (bus->slots[s])
			memcpy(st->cfg[s], bus->slots[s]->cfg, 256);
	}
	pthread_mutex_unlock(&bus->lock);
	snap_put(w, "pci", st, sizeof(*st));
	free(st);
	return 0;
}

int pci_bus_load(struct pci_bus *bus, const struct snap_reader *r)
{
	struct pci_bus_state *st = calloc(1, sizeof(*st));
	int err;

	if (!st)
		return -ENOMEM;
	err = snap_get(r, "pci", st, sizeof(*st));
	if (!err && st->present != present_slots(bus)) {
		log_error("%s: PCI slots %#x in the snapshot, %#x configured", r->path, st->present,
			  present_slots(bus));
		err = -EINVAL;
	}
	if (err) {
		free(st);
		return err;
	}
	pthread_mutex_lock(&bus->lock);
	bus->config_address = st->config_address;
	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		struct pci_dev *d = bus->slots[s];

		if (!d)
			continue;
		/* What the guest could write, and nothing else: the device stays what it is. */
		for (unsigned i = 0; i < 256; i++) {
			uint8_t keep = (uint8_t) ~(d->wmask[i] | d->w1cmask[i]);

			d->cfg[i] = (uint8_t)((d->cfg[i] & keep) | (st->cfg[s][i] & ~keep));
		}
		update_bars(d);
	}
	pthread_mutex_unlock(&bus->lock);
	free(st);
	return 0;
}
