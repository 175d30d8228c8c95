/* SPDX-License-Identifier: MIT */
/*
 * An I/O bus: the port-I/O space or the MMIO space of the machine. Devices register ranges;
 * vCPU threads dispatch their exits here. Ranges can move at run time (a guest reprograms a
 * PCI BAR), so lookups take a read lock and changes a write lock.
 */
#ifndef YUN_DEVICES_BUS_H
#define YUN_DEVICES_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct io_ops {
	/* offset is relative to the range's base; size is 1, 2, 4 or 8. */
	void (*read)(void *opaque, uint64_t offset, void *data, unsigned size);
	void (*write)(void *opaque, uint64_t offset, const void *data, unsigned size);
};

struct io_range {
	uint64_t base;
	uint64_t len;
	const struct io_ops *ops;
	void *opaque;
	const char *name;
};

struct io_bus {
	const char *name; /* "pio" or "mmio", for messages */
	pthread_rwlock_t lock;
	struct io_range *ranges; /* sorted by base, never overlapping */
	unsigned nr, cap;
};

int io_bus_init(struct io_bus *bus, const char *name);
void io_bus_destroy(struct io_bus *bus);
/* -EEXIST if [base, base+len) overlaps a registered range, -EINVAL for len 0 or overflow. */
int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t len, const struct io_ops *ops,
		    void *opaque, const char *name);
/* Remove the range that starts at base and belongs to opaque: -ENOENT if there is none. */
int io_bus_unregister(struct io_bus *bus, uint64_t base, void *opaque);
/*
 * Dispatch one access. An access that no range wholly contains reads as all ones and writes
 * are dropped, as on a PC; the return value says whether a device took it.
 */
bool io_bus_access(struct io_bus *bus, uint64_t addr, void *data, unsigned size, bool is_write);

#endif
