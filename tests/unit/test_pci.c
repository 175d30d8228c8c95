// SPDX-License-Identifier: MIT
/* PCI bus 0 through configuration mechanism #1 (ports 0xCF8/0xCFC), and BAR mapping on MMIO. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices/bus.h"
#include "devices/pci.h"
#include "vmm/layout.h"

#define CONFIG_ADDR PORT_PCI_CONFIG
#define CONFIG_DATA (PORT_PCI_CONFIG + 4)
#define ENABLE	    0x80000000u

#define MMIO64_BASE (64 * GiB)
#define MMIO32_END  (LAYOUT_PCI_MMIO32_BASE + LAYOUT_PCI_MMIO32_SIZE)
#define MMIO64_END  (MMIO64_BASE + LAYOUT_PCI_MMIO64_SIZE)

#define BAR32_SIZE 0x1000u
#define BAR64_SIZE 0x4000u
#define DEV_VENDOR 0x1af4
#define DEV_DEVICE 0x10ff

/* What sits behind the test device's BARs: a register that reads back its BAR number. */
struct bar_backend {
	unsigned bar;
	unsigned reads, writes;
	uint32_t last_write;
};

static void bar_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct bar_backend *b = opaque;

	b->reads++;
	memset(data, 0, size);
	*(uint8_t *)data = (uint8_t)(0xb0 | b->bar);
	(void)offset;
}

static void bar_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct bar_backend *b = opaque;

	b->writes++;
	b->last_write = 0;
	memcpy(&b->last_write, data, size < 4 ? size : 4);
	(void)offset;
}

static const struct io_ops bar_ops = {.read = bar_read, .write = bar_write};

struct fixture {
	struct io_bus pio, mmio;
	struct pci_bus *bus;
	struct pci_dev dev;
	struct bar_backend be[PCI_NUM_BARS];
	/* bar_moved notifications */
	unsigned moves;
	unsigned moved_bar;
	uint64_t moved_addr;
	bool moved_mapped;
};

static struct fixture *the_fixture; /* for the bar_moved callback */

static void on_bar_moved(struct pci_dev *d, unsigned bar, uint64_t addr, bool mapped)
{
	struct fixture *f = the_fixture;

	assert_ptr_equal(d, &f->dev);
	f->moves++;
	f->moved_bar = bar;
	f->moved_addr = addr;
	f->moved_mapped = mapped;
}

static const struct pci_dev_ops dev_ops = {.bar_moved = on_bar_moved};

static int setup(void **state)
{
	static const uint8_t class_code[3] = {0xff, 0x00, 0x00};
	static const uint8_t vndr_cap[8] = {PCI_CAP_ID_VNDR, 0, 8, 1, 2, 3, 4, 5};
	static const uint8_t msix_cap[12] = {PCI_CAP_ID_MSIX};
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	the_fixture = f;
	assert_int_equal(io_bus_init(&f->pio, "pio"), 0);
	assert_int_equal(io_bus_init(&f->mmio, "mmio"), 0);
	assert_int_equal(
	    pci_bus_create(&f->pio, &f->mmio, MMIO64_BASE, LAYOUT_PCI_MMIO64_SIZE, &f->bus), 0);
	pci_dev_init(&f->dev, "test", DEV_VENDOR, DEV_DEVICE, class_code, 0x01, DEV_VENDOR, 0x0001);
	f->dev.ops = &dev_ops;
	for (unsigned i = 0; i < PCI_NUM_BARS; i++)
		f->be[i].bar = i;
	assert_int_equal(pci_dev_add_bar(&f->dev, 0, BAR32_SIZE, false, &bar_ops, &f->be[0]), 0);
	assert_int_equal(pci_dev_add_bar(&f->dev, 2, BAR64_SIZE, true, &bar_ops, &f->be[2]), 0);
	/* BAR3 is the upper half of the 64-bit BAR2, and BAR0 is taken. */
	assert_int_equal(pci_dev_add_bar(&f->dev, 3, BAR32_SIZE, false, &bar_ops, &f->be[3]),
			 -EINVAL);
	assert_int_equal(pci_dev_add_bar(&f->dev, 0, BAR32_SIZE, false, &bar_ops, &f->be[0]),
			 -EINVAL);
	assert_int_equal(pci_dev_add_cap(&f->dev, vndr_cap, sizeof(vndr_cap)), 0x40);
	assert_int_equal(pci_dev_add_cap(&f->dev, msix_cap, sizeof(msix_cap)), 0x48);
	assert_int_equal(pci_bus_add(f->bus, &f->dev), 0);
	assert_int_equal(f->dev.slot, 1);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	pci_bus_destroy(f->bus);
	/* Every BAR mapping went with the device. */
	assert_int_equal(f->mmio.nr, 0);
	assert_int_equal(f->pio.nr, 0);
	io_bus_destroy(&f->mmio);
	io_bus_destroy(&f->pio);
	free(f);
	the_fixture = NULL;
	return 0;
}

static void out32(struct fixture *f, uint16_t port, uint32_t v)
{
	assert_true(io_bus_access(&f->pio, port, &v, 4, true));
}

static uint32_t in32(struct fixture *f, uint16_t port)
{
	uint32_t v = 0;

	assert_true(io_bus_access(&f->pio, port, &v, 4, false));
	return v;
}

static uint32_t in(struct fixture *f, uint16_t port, unsigned size)
{
	uint32_t v = 0;

	assert_true(io_bus_access(&f->pio, port, &v, size, false));
	return v;
}

static void out(struct fixture *f, uint16_t port, unsigned size, uint32_t v)
{
	assert_true(io_bus_access(&f->pio, port, &v, size, true));
}

static uint32_t cfg_addr(unsigned bus, unsigned slot, unsigned fn, unsigned reg)
{
	return ENABLE | bus << 16 | slot << 11 | fn << 8 | (reg & 0xfc);
}

/* A configuration read of bus 0 through the ports, as Linux's pci_conf1_read() does it. */
static uint32_t cfg_read(struct fixture *f, unsigned slot, unsigned reg, unsigned size)
{
	out32(f, CONFIG_ADDR, cfg_addr(0, slot, 0, reg));
	return in(f, CONFIG_DATA + (reg & 3), size);
}

static void cfg_write(struct fixture *f, unsigned slot, unsigned reg, unsigned size, uint32_t v)
{
	out32(f, CONFIG_ADDR, cfg_addr(0, slot, 0, reg));
	out(f, CONFIG_DATA + (reg & 3), size, v);
}

/* Whether a device decodes addr on the MMIO bus (and which BAR's backend answered). */
static bool mmio_hits(struct fixture *f, uint64_t addr, unsigned bar)
{
	uint32_t v = 0;
	bool hit = io_bus_access(&f->mmio, addr, &v, 4, false);

	if (hit)
		assert_int_equal(v, 0xb0 | bar);
	else
		assert_int_equal(v, 0xffffffffu);
	return hit;
}

static uint64_t bar_addr(struct fixture *f, unsigned bar, bool is64)
{
	uint64_t a = cfg_read(f, 1, PCI_BAR0 + 4 * bar, 4) & ~0xfull;

	if (is64)
		a |= (uint64_t)cfg_read(f, 1, PCI_BAR0 + 4 * (bar + 1), 4) << 32;
	return a;
}

static void test_address_register(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(in32(f, CONFIG_ADDR), 0);
	out32(f, CONFIG_ADDR, 0x80001234u);
	assert_int_equal(in32(f, CONFIG_ADDR), 0x80001234u);
	out32(f, CONFIG_ADDR, cfg_addr(0, 31, 7, 0xfc));
	assert_int_equal(in32(f, CONFIG_ADDR), cfg_addr(0, 31, 7, 0xfc));
	/* Reserved bits 30-24 read as zero. */
	out32(f, CONFIG_ADDR, 0xff000010u);
	assert_int_equal(in32(f, CONFIG_ADDR), 0x80000010u);
	/* Byte and word writes do not touch the address register. */
	out(f, CONFIG_ADDR, 1, 0x00);
	out(f, CONFIG_ADDR, 2, 0x0000);
	assert_int_equal(in32(f, CONFIG_ADDR), 0x80000010u);
}

static void test_host_bridge_ids(void **state)
{
	struct fixture *f = *state;

	/* Red Hat's QEMU PCIe host bridge, 1b36:0008, class 06:00:00. */
	assert_int_equal(cfg_read(f, 0, PCI_VENDOR_ID, 4), 0x00081b36u);
	assert_int_equal(cfg_read(f, 0, PCI_REVISION, 4) >> 8, 0x060000u);
	assert_int_equal(cfg_read(f, 0, PCI_HEADER_TYPE, 1), 0x00);
	assert_int_equal(cfg_read(f, 0, PCI_SUBSYS_VENDOR, 2), 0x1b36);
	/* The direct accessor agrees with the ports. */
	assert_int_equal(pci_config_read(f->bus, 0, PCI_VENDOR_ID, 4), 0x00081b36u);
	/* Our test device in slot 1. */
	assert_int_equal(cfg_read(f, 1, PCI_VENDOR_ID, 2), DEV_VENDOR);
	assert_int_equal(cfg_read(f, 1, PCI_DEVICE_ID, 2), DEV_DEVICE);
	assert_int_equal(cfg_read(f, 1, PCI_REVISION, 4), 0xff000001u);
	assert_int_equal(cfg_read(f, 1, PCI_INTERRUPT_PIN, 1), 1);
	assert_int_equal(cfg_read(f, 1, PCI_INTERRUPT_LINE, 1), pci_slot_gsi(1));
	assert_int_equal(pci_bus_nr_devices(f->bus), 2);
}

static void test_absent_devices(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(cfg_read(f, 2, PCI_VENDOR_ID, 4), 0xffffffffu);
	assert_int_equal(cfg_read(f, 31, PCI_VENDOR_ID, 4), 0xffffffffu);
	assert_int_equal(cfg_read(f, 2, PCI_VENDOR_ID, 2), 0xffff);
	assert_int_equal(cfg_read(f, 2, PCI_HEADER_TYPE, 1), 0xff);
	/* Functions 1-7 of a present device, and other buses. */
	out32(f, CONFIG_ADDR, cfg_addr(0, 0, 1, 0));
	assert_int_equal(in32(f, CONFIG_DATA), 0xffffffffu);
	out32(f, CONFIG_ADDR, cfg_addr(0, 1, 7, 0));
	assert_int_equal(in32(f, CONFIG_DATA), 0xffffffffu);
	out32(f, CONFIG_ADDR, cfg_addr(1, 0, 0, 0));
	assert_int_equal(in32(f, CONFIG_DATA), 0xffffffffu);
	out32(f, CONFIG_ADDR, cfg_addr(255, 1, 0, 0));
	assert_int_equal(in32(f, CONFIG_DATA), 0xffffffffu);
	/* Writes there go nowhere and break nothing. */
	out32(f, CONFIG_DATA, 0);
	assert_int_equal(cfg_read(f, 1, PCI_VENDOR_ID, 2), DEV_VENDOR);
	assert_int_equal(pci_config_read(f->bus, 2 << 3, 0, 4), 0xffffffffu);
}

static void test_byte_and_word_access(void **state)
{
	struct fixture *f = *state;

	out32(f, CONFIG_ADDR, cfg_addr(0, 0, 0, PCI_VENDOR_ID));
	assert_int_equal(in(f, CONFIG_DATA + 0, 1), 0x36);
	assert_int_equal(in(f, CONFIG_DATA + 1, 1), 0x1b);
	assert_int_equal(in(f, CONFIG_DATA + 2, 1), 0x08);
	assert_int_equal(in(f, CONFIG_DATA + 3, 1), 0x00);
	assert_int_equal(in(f, CONFIG_DATA + 0, 2), 0x1b36);
	assert_int_equal(in(f, CONFIG_DATA + 2, 2), 0x0008);
	/* The class code's top byte through 0xCFF. */
	out32(f, CONFIG_ADDR, cfg_addr(0, 0, 0, PCI_REVISION));
	assert_int_equal(in(f, CONFIG_DATA + 3, 1), 0x06);
	assert_int_equal(in(f, CONFIG_DATA + 2, 2), 0x0600);
	/* A byte write lands on its byte only. */
	cfg_write(f, 1, PCI_INTERRUPT_LINE, 1, 0x5a);
	assert_int_equal(cfg_read(f, 1, PCI_INTERRUPT_LINE, 4), 0x0000015au);
	out32(f, CONFIG_ADDR, cfg_addr(0, 1, 0, PCI_INTERRUPT_LINE));
	out(f, CONFIG_DATA + 1, 1, 0x07); /* interrupt pin: read-only */
	assert_int_equal(in32(f, CONFIG_DATA), 0x0000015au);
	/* A dword access must start at 0xCFC: 0xCFE+4 runs past the data window. */
	uint32_t v = 0;
	assert_false(io_bus_access(&f->pio, CONFIG_DATA + 2, &v, 4, false));
	assert_int_equal(v, 0xffffffffu);
}

static void test_bar_sizing(void **state)
{
	struct fixture *f = *state;

	/* Unassigned BARs read as zero but for their type bits. */
	assert_int_equal(cfg_read(f, 1, PCI_BAR0, 4), 0x0);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 8, 4), 0x4); /* 64-bit */
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 12, 4), 0x0);
	/* Unused BARs are hard-wired to zero. */
	cfg_write(f, 1, PCI_BAR0 + 4, 4, 0xffffffffu);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 4, 4), 0);
	cfg_write(f, 1, PCI_BAR0 + 20, 4, 0xffffffffu);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 20, 4), 0);

	/* Sizing, as Linux's __pci_read_base() does it. */
	cfg_write(f, 1, PCI_BAR0, 4, 0xffffffffu);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0, 4), (uint32_t) ~(BAR32_SIZE - 1));
	cfg_write(f, 1, PCI_BAR0 + 8, 4, 0xffffffffu);
	cfg_write(f, 1, PCI_BAR0 + 12, 4, 0xffffffffu);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 8, 4), (uint32_t) ~(BAR64_SIZE - 1) | 0x4);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 12, 4), 0xffffffffu);

	/* The low bits are read-only: type and prefetch stay as they are. */
	cfg_write(f, 1, PCI_BAR0, 4, 0xc0000000u | 0xf);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0, 4), 0xc0000000u);
	cfg_write(f, 1, PCI_BAR0 + 8, 4, 0x0);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 8, 4), 0x4);
	/* Address bits below the size are read-only too. */
	cfg_write(f, 1, PCI_BAR0, 4, 0xc0000800u);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0, 4), 0xc0000000u);
	cfg_write(f, 1, PCI_BAR0 + 8, 4, 0x00003000u);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0 + 8, 4), 0x4);
	/* Byte-wise writes land the same way. */
	cfg_write(f, 1, PCI_BAR0 + 3, 1, 0xd0);
	assert_int_equal(cfg_read(f, 1, PCI_BAR0, 4), 0xd0000000u);
	/* Memory decode is off: nothing was mapped all along. */
	assert_int_equal(f->mmio.nr, 0);
	assert_int_equal(f->moves, 0);
}

static void test_read_only_registers(void **state)
{
	struct fixture *f = *state;

	cfg_write(f, 1, PCI_VENDOR_ID, 4, 0xdeadbeefu);
	assert_int_equal(cfg_read(f, 1, PCI_VENDOR_ID, 4), (uint32_t)DEV_DEVICE << 16 | DEV_VENDOR);
	cfg_write(f, 1, PCI_VENDOR_ID, 2, 0x1234);
	cfg_write(f, 1, PCI_DEVICE_ID, 1, 0x12);
	assert_int_equal(cfg_read(f, 1, PCI_VENDOR_ID, 4), (uint32_t)DEV_DEVICE << 16 | DEV_VENDOR);
	cfg_write(f, 1, PCI_REVISION, 4, 0);
	assert_int_equal(cfg_read(f, 1, PCI_REVISION, 4), 0xff000001u);
	cfg_write(f, 1, PCI_HEADER_TYPE, 1, 0x80);
	assert_int_equal(cfg_read(f, 1, PCI_HEADER_TYPE, 1), 0);
	cfg_write(f, 1, PCI_CAP_PTR, 1, 0x00);
	assert_int_equal(cfg_read(f, 1, PCI_CAP_PTR, 1), 0x40);
	cfg_write(f, 0, PCI_VENDOR_ID, 4, 0);
	assert_int_equal(cfg_read(f, 0, PCI_VENDOR_ID, 4), 0x00081b36u);
	/* The command register keeps only the bits the device implements. */
	cfg_write(f, 1, PCI_COMMAND, 2, 0xffff);
	assert_int_equal(cfg_read(f, 1, PCI_COMMAND, 2), 0x0407);
	cfg_write(f, 1, PCI_COMMAND, 2, 0);
	assert_int_equal(cfg_read(f, 1, PCI_COMMAND, 2), 0);
	/* Status: the capability-list bit cannot be cleared by writing one. */
	cfg_write(f, 1, PCI_STATUS, 2, 0xffff);
	assert_int_equal(cfg_read(f, 1, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, PCI_STATUS_CAP_LIST);
}

static void test_capability_walk(void **state)
{
	struct fixture *f = *state;
	uint8_t ids[64];
	unsigned n = 0, pos;

	assert_int_equal(cfg_read(f, 1, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, PCI_STATUS_CAP_LIST);
	/* Walk as Linux's __pci_find_next_cap_ttl() does, with its TTL of 48. */
	pos = cfg_read(f, 1, PCI_CAP_PTR, 1);
	while (pos && n < 48) {
		assert_true(pos >= 0x40 && pos < 0x100);
		assert_int_equal(pos & 3, 0);
		ids[n++] = (uint8_t)cfg_read(f, 1, pos, 1);
		pos = cfg_read(f, 1, pos + 1, 1);
	}
	assert_int_equal(pos, 0);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], PCI_CAP_ID_VNDR);
	assert_int_equal(ids[1], PCI_CAP_ID_MSIX);
	/* The capability bodies came through (vendor cap: length, then payload). */
	assert_int_equal(cfg_read(f, 1, 0x42, 1), 8);
	assert_int_equal(cfg_read(f, 1, 0x44, 4), 0x05040302u);
	/* Capability bytes are read-only unless the device says otherwise. */
	cfg_write(f, 1, 0x41, 1, 0x40);
	assert_int_equal(cfg_read(f, 1, 0x41, 1), 0x48);
	/* The host bridge has no capabilities. */
	assert_int_equal(cfg_read(f, 0, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, 0);
	assert_int_equal(cfg_read(f, 0, PCI_CAP_PTR, 1), 0);
}

static void test_decode_maps_bars(void **state)
{
	struct fixture *f = *state;
	uint64_t a0, a2;
	uint32_t v = 0x11223344;

	pci_bus_assign_bars(f->bus);
	a0 = bar_addr(f, 0, false);
	a2 = bar_addr(f, 2, true);
	/* Firmware put the 32-bit BAR in the 32-bit window, the 64-bit one in the 64-bit one. */
	assert_true(a0 >= LAYOUT_PCI_MMIO32_BASE && a0 + BAR32_SIZE <= MMIO32_END);
	assert_int_equal(a0 % BAR32_SIZE, 0);
	assert_true(a2 >= MMIO64_BASE && a2 + BAR64_SIZE <= MMIO64_END);
	assert_int_equal(a2 % BAR64_SIZE, 0);
	assert_int_equal(cfg_read(f, 1, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY, PCI_COMMAND_MEMORY);
	assert_true(mmio_hits(f, a0, 0));
	assert_true(mmio_hits(f, a0 + BAR32_SIZE - 4, 0));
	assert_false(mmio_hits(f, a0 + BAR32_SIZE, 0));
	assert_true(mmio_hits(f, a2, 2));
	assert_true(mmio_hits(f, a2 + BAR64_SIZE - 4, 2));
	assert_true(io_bus_access(&f->mmio, a0 + 8, &v, 4, true));
	assert_int_equal(f->be[0].last_write, 0x11223344);
	assert_int_equal(f->moves, 2);

	/* Memory decode off: both BARs leave the MMIO bus. */
	cfg_write(f, 1, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
	assert_false(mmio_hits(f, a0, 0));
	assert_false(mmio_hits(f, a2, 2));
	assert_int_equal(f->moves, 4);
	assert_false(f->moved_mapped);
	/* The registers keep their addresses. */
	assert_int_equal(bar_addr(f, 0, false), a0);
	assert_int_equal(bar_addr(f, 2, true), a2);
	/* ...and decode on maps them again. */
	cfg_write(f, 1, PCI_COMMAND, 2, PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY);
	assert_true(mmio_hits(f, a0, 0));
	assert_true(mmio_hits(f, a2, 2));
	assert_int_equal(f->moves, 6);
	assert_true(f->moved_mapped);
	/* A byte write of the command register's low byte works the same way. */
	cfg_write(f, 1, PCI_COMMAND, 1, 0);
	assert_false(mmio_hits(f, a0, 0));
	cfg_write(f, 1, PCI_COMMAND, 1, PCI_COMMAND_MEMORY);
	assert_true(mmio_hits(f, a0, 0));
}

static void test_guest_moves_bar(void **state)
{
	struct fixture *f = *state;
	const uint64_t a = LAYOUT_PCI_MMIO32_BASE + 0x100000;
	const uint64_t b = MMIO64_BASE + 0x200000;

	/* The guest programs the BARs itself, then turns decode on. */
	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)a);
	cfg_write(f, 1, PCI_BAR0 + 8, 4, (uint32_t)b);
	cfg_write(f, 1, PCI_BAR0 + 12, 4, (uint32_t)(b >> 32));
	assert_int_equal(f->mmio.nr, 0);
	cfg_write(f, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	assert_true(mmio_hits(f, a, 0));
	assert_true(mmio_hits(f, b, 2));
	/* Moving a BAR with decode on remaps it. */
	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)(a + BAR32_SIZE));
	assert_false(mmio_hits(f, a, 0));
	assert_true(mmio_hits(f, a + BAR32_SIZE, 0));
	assert_true(f->moved_mapped);
	assert_int_equal(f->moved_bar, 0);
	assert_int_equal(f->moved_addr, a + BAR32_SIZE);
	/* The last page of the 32-bit window is still inside it. */
	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)(MMIO32_END - BAR32_SIZE));
	assert_true(mmio_hits(f, MMIO32_END - BAR32_SIZE, 0));
	assert_int_equal(f->mmio.nr, 2);
}

static void test_bar_outside_windows(void **state)
{
	struct fixture *f = *state;
	const uint64_t a = LAYOUT_PCI_MMIO32_BASE;

	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)a);
	cfg_write(f, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	assert_true(mmio_hits(f, a, 0));
	/* Into RAM below the window: unmapped, and no crash. */
	cfg_write(f, 1, PCI_BAR0, 4, 0x80000000u);
	assert_false(mmio_hits(f, 0x80000000u, 0));
	assert_false(mmio_hits(f, a, 0));
	assert_false(f->moved_mapped);
	/* Into the ECAM hole and onto the LAPIC: not in a window either. */
	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)LAYOUT_PCI_ECAM_BASE);
	assert_false(mmio_hits(f, LAYOUT_PCI_ECAM_BASE, 0));
	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)LAYOUT_LAPIC_BASE);
	assert_false(mmio_hits(f, LAYOUT_LAPIC_BASE, 0));
	/* The 64-bit BAR: below the 64-bit window, at its last slot, past its end, far above. */
	cfg_write(f, 1, PCI_BAR0 + 8, 4, 0);
	cfg_write(f, 1, PCI_BAR0 + 12, 4, 0x1);
	assert_false(mmio_hits(f, 4 * GiB, 2));
	cfg_write(f, 1, PCI_BAR0 + 8, 4, (uint32_t)(MMIO64_END - BAR64_SIZE));
	cfg_write(f, 1, PCI_BAR0 + 12, 4, (uint32_t)((MMIO64_END - BAR64_SIZE) >> 32));
	assert_true(mmio_hits(f, MMIO64_END - BAR64_SIZE, 2));
	cfg_write(f, 1, PCI_BAR0 + 8, 4, (uint32_t)MMIO64_END);
	cfg_write(f, 1, PCI_BAR0 + 12, 4, (uint32_t)(MMIO64_END >> 32));
	assert_false(mmio_hits(f, MMIO64_END, 2));
	assert_false(mmio_hits(f, MMIO64_END - BAR64_SIZE, 2));
	cfg_write(f, 1, PCI_BAR0 + 12, 4, 0xffffffffu);
	assert_false(mmio_hits(f, 0xffffffff00000000ull | (uint32_t)MMIO64_END, 2));
	assert_int_equal(f->mmio.nr, 0);
	/* A 64-bit BAR below 4 GiB, in the 32-bit window, is fine. */
	cfg_write(f, 1, PCI_BAR0 + 12, 4, 0);
	cfg_write(f, 1, PCI_BAR0 + 8, 4, (uint32_t)(a + 0x10000));
	assert_true(mmio_hits(f, a + 0x10000, 2));
	/* Back into the window, BAR0 maps again. */
	cfg_write(f, 1, PCI_BAR0, 4, (uint32_t)a);
	assert_true(mmio_hits(f, a, 0));
	/* Two BARs on top of each other: the second is left unmapped, nothing crashes. */
	cfg_write(f, 1, PCI_BAR0 + 8, 4, (uint32_t)a);
	assert_true(mmio_hits(f, a, 0));
	assert_int_equal(f->mmio.nr, 1);
	cfg_write(f, 1, PCI_BAR0 + 8, 4, (uint32_t)(a + 0x10000));
	assert_true(mmio_hits(f, a + 0x10000, 2));
}

static void test_enable_bit_clear(void **state)
{
	struct fixture *f = *state;

	out32(f, CONFIG_ADDR, cfg_addr(0, 0, 0, 0) & ~ENABLE);
	assert_int_equal(in32(f, CONFIG_DATA), 0xffffffffu);
	assert_int_equal(in(f, CONFIG_DATA + 2, 2), 0xffff);
	assert_int_equal(in(f, CONFIG_DATA + 3, 1), 0xff);
	/* Writes with the bit clear go nowhere. */
	out32(f, CONFIG_ADDR, cfg_addr(0, 1, 0, PCI_INTERRUPT_LINE) & ~ENABLE);
	out(f, CONFIG_DATA, 1, 0x33);
	assert_int_equal(cfg_read(f, 1, PCI_INTERRUPT_LINE, 1), pci_slot_gsi(1));
	out32(f, CONFIG_ADDR, cfg_addr(0, 1, 0, PCI_COMMAND) & ~ENABLE);
	out(f, CONFIG_DATA, 2, PCI_COMMAND_MEMORY);
	assert_int_equal(cfg_read(f, 1, PCI_COMMAND, 2), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_address_register, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_bridge_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_absent_devices, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_byte_and_word_access, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_only_registers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_capability_walk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_decode_maps_bars, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_moves_bar, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bar_outside_windows, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enable_bit_clear, setup, teardown),
	};

	return cmocka_run_group_tests_name("pci", tests, NULL, NULL);
}
