// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for restoring a snapshot's state file: a file is input like any other, and
 * a restore must refuse a bad one or load it without reaching outside the VM's memory.
 *
 * At start-up a machine (COM1, i8042, RTC, ACPI PM, a PCI bus with a virtio-rng on it, 64 KiB of
 * guest RAM in a heap buffer of exactly that size) writes its state file. Each input then either
 * is a state file itself (first byte odd), or is laid over the data of that file's sections, so
 * that names and sizes stay right and the values are the fuzzer's: queue layouts and positions,
 * MSI-X tables, BAR addresses, FIFO indices. The file is loaded into the same devices, as
 * vm_snapshot_load() does, and the guest's side is then exercised: port reads, a BAR read, a
 * queue notification that serves the restored queue from guest RAM.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/event_loop.h"
#include "common/log.h"
#include "common/snapshot_file.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "devices/pci.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/virtio/pci.h"
#include "devices/virtio/rng.h"
#include "vmm/layout.h"

#define RAM_SIZE (64 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int set_level(void *ctx, unsigned gsi, int level)
{
	return 0;
}

static int send_msi(void *ctx, uint64_t addr, uint32_t msi_data)
{
	return 0;
}

static int msi_route(void *ctx, int *gsi, uint64_t addr, uint32_t msi_data)
{
	if (*gsi < 0)
		*gsi = 100;
	return 0;
}

static int msi_route_free(void *ctx, int gsi)
{
	return 0;
}

static int irqfd(void *ctx, unsigned gsi, int fd, bool assign)
{
	return 0;
}

static int ioeventfd(void *ctx, uint64_t addr, unsigned len, int fd, bool pio, bool assign)
{
	return 0;
}

static const struct irq_host_ops irq_ops = {set_level,	    send_msi, msi_route,
					    msi_route_free, irqfd,    ioeventfd};

static struct machine {
	struct io_bus pio, mmio;
	struct irq_host irq;
	struct event_loop loop;
	struct guest_mem mem;
	uint8_t *ram;
	struct serial *serial;
	struct i8042 *i8042;
	struct rtc *rtc;
	struct acpi_pm *pm;
	struct pci_bus *pci;
	struct virtio_rng *rng;
	struct virtio_pci *rng_pci;
	uint8_t *state; /* the machine's own state file */
	size_t state_len;
} m;

static void poweroff(void *ctx)
{
}

static void setup(void)
{
	struct snap_writer w;

	log_set_level(LOG_ERROR);
	io_bus_init(&m.pio, "pio");
	io_bus_init(&m.mmio, "mmio");
	m.irq = (struct irq_host){&irq_ops, NULL};
	m.ram = malloc(RAM_SIZE);
	if (!m.ram || event_loop_init(&m.loop) || gm_add_region(&m.mem, 0, RAM_SIZE, m.ram) ||
	    serial_create(&m.pio, PORT_COM1, PORT_COM1_IRQ, &m.irq, -1, &m.serial) ||
	    i8042_create(&m.pio, &m.irq, poweroff, NULL, &m.i8042) || rtc_create(&m.pio, &m.rtc) ||
	    acpi_pm_create(&m.pio, &m.irq, poweroff, NULL, &m.pm) ||
	    pci_bus_create(&m.pio, &m.mmio, 1ULL << 36, 1ULL << 30, &m.pci) ||
	    virtio_rng_create("rng0", &m.mem, &m.rng) ||
	    virtio_pci_create(m.pci, virtio_rng_dev(m.rng), &m.irq, &m.loop, &m.rng_pci))
		abort();
	pci_bus_assign_bars(m.pci);
	snap_writer_init(&w);
	serial_save(m.serial, &w);
	i8042_save(m.i8042, &w);
	rtc_save(m.rtc, &w);
	acpi_pm_save(m.pm, &w);
	if (pci_bus_save(m.pci, &w) || virtio_pci_save(m.rng_pci, &w) || w.err)
		abort();
	m.state = w.buf;
	m.state_len = w.len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct snap_reader r;
	uint8_t *file;
	size_t len;
	uint64_t v;

	if (!ready) {
		setup();
		ready = true;
	}
	if (size && (data[0] & 1)) {
		len = size - 1;
		file = malloc(len ? len : 1);
		memcpy(file, data + 1, len);
	} else {
		/* The machine's file with the input over its sections' data, in order. */
		len = m.state_len;
		file = malloc(len);
		memcpy(file, m.state, len);
		if (snap_reader_parse(&r, file, len, "fuzz"))
			abort();
		for (unsigned i = 0; i < r.nr && size > 1; i++) {
			size_t n = r.sections[i].len < size - 1 ? r.sections[i].len : size - 1;

			memcpy((uint8_t *)r.sections[i].data, data + 1, n);
			data += n;
			size -= n;
		}
		snap_reader_close(&r);
	}
	memset(m.ram, 0, RAM_SIZE);
	if (snap_reader_parse(&r, file, len, "fuzz") == 0) {
		serial_load(m.serial, &r);
		i8042_load(m.i8042, &r);
		rtc_load(m.rtc, &r);
		acpi_pm_load(m.pm, &r);
		if (pci_bus_load(m.pci, &r) == 0)
			virtio_pci_load(m.rng_pci, &r);
		snap_reader_close(&r);
	}
	for (unsigned port = 0; port < 8; port++)
		io_bus_access(&m.pio, PORT_COM1 + port, &v, 1, false);
	io_bus_access(&m.pio, 0x60, &v, 1, false);
	io_bus_access(&m.pio, 0x64, &v, 1, false);
	/* Every BAR, wherever the file put it: the rng's common configuration and notify area. */
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		const struct pci_dev *d = m.pci->slots[1];

		if (d && d->bars[i].mapped) {
			io_bus_access(&m.mmio, d->bars[i].addr, &v, 4, false);
			io_bus_access(&m.mmio, d->bars[i].addr + VIRTIO_PCI_NOTIFY_OFF, &v, 2,
				      true);
		}
	}
	free(file);
	return 0;
}
