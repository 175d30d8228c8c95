// SPDX-License-Identifier: MIT
#include "devices/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

int io_bus_init(struct io_bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
	return -pthread_rwlock_init(&bus->lock, NULL);
}

void io_bus_destroy(struct io_bus *bus)
{
	free(bus->ranges);
	pthread_rwlock_destroy(&bus->lock);
	memset(bus, 0, sizeof(*bus));
}

/* Index of the first range whose end lies above addr (binary search), under the lock. */
static unsigned first_ending_after(const struct io_bus *bus, uint64_t addr)
{
	unsigned lo = 0, hi = bus->nr;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct io_range *r = &bus->ranges[mid];

		if (r->base + r->len - 1 < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t len, const struct io_ops *ops,
		    void *opaque, const char *name)
{
	unsigned i;
	int ret = 0;

	if (len == 0 || base + len - 1 < base)
		return -EINVAL;
	pthread_rwlock_wrlock(&bus->lock);
	i = first_ending_after(bus, base);
	if (i < bus->nr && bus->ranges[i].base <= base + len - 1) {
		log_debug("%s: %s [%#llx, +%#llx) overlaps %s", bus->name, name,
			  (unsigned long long)base, (unsigned long long)len, bus->ranges[i].name);
		ret = -EEXIST;
		goto out;
	}
	if (bus->nr == bus->cap) {
		unsigned cap = bus->cap ? bus->cap * 2 : 16;
		struct io_range *r = realloc(bus->ranges, cap * sizeof(*r));

		if (!r) {
			ret = -ENOMEM;
			goto out;
		}
		bus->ranges = r;
		bus->cap = cap;
	}
	memmove(&bus->ranges[i + 1], &bus->ranges[i], (bus->nr - i) * sizeof(bus->ranges[0]));
	bus->ranges[i] = (struct io_range){base, len, ops, opaque, name};
	bus->nr++;
out:
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

int io_bus_unregister(struct io_bus *bus, uint64_t base, void *opaque)
{
	unsigned i;
	int ret = -ENOENT;

	pthread_rwlock_wrlock(&bus->lock);
	i = first_ending_after(bus, base);
	if (i < bus->nr && bus->ranges[i].base == base && bus->ranges[i].opaque == opaque) {
		memmove(&bus->ranges[i], &bus->ranges[i + 1],
			(bus->nr - i - 1) * sizeof(bus->ranges[0]));
		bus->nr--;
		ret = 0;
	}
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

bool io_bus_access(struct io_bus *bus, uint64_t addr, void *data, unsigned size, bool is_write)
{
	const struct io_range *r = NULL;
	struct io_range found;
	unsigned i;

	pthread_rwlock_rdlock(&bus->lock);
	i = first_ending_after(bus, addr);
	if (i < bus->nr && bus->ranges[i].base <= addr &&
	    addr - bus->ranges[i].base <= bus->ranges[i].len - size && size <= bus->ranges[i].len) {
		found = bus->ranges[i];
		r = &found;
	}
	/*
	 * The device is called under the read lock: a BAR move (write lock) waits for accesses in
	 * flight, so a device is never called on a range it has just given up.
	 */
	if (r) {
		if (is_write) {
			if (r->ops->write)
				r->ops->write(r->opaque, addr - r->base, data, size);
		} else if (r->ops->read) {
			r->ops->read(r->opaque, addr - r->base, data, size);
		} else {
			memset(data, 0xff, size);
		}
	}
	pthread_rwlock_unlock(&bus->lock);
	if (!r && !is_write)
		memset(data, 0xff, size);
	return r != NULL;
}
