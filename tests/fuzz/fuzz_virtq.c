// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the virtqueue walker and the virtio-blk request path behind it.
 *
 * The input is a guest: its first bytes choose the queue's size, features and ring addresses,
 * and the rest is the guest's RAM, descriptors, rings and buffers included. The device is
 * kicked as a guest would kick it. Guest RAM is a heap buffer of exactly its size, so
 * AddressSanitizer stops the run at the first byte read or written outside it; the queue's
 * invariants are checked after each kick.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/queue.h"

#define RAM_SIZE (64 * 1024)
#define SECTORS	 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A disk behind each engine: data[1] bits 3-4 pick it (io_uring, sync, threads, and threads
 * with O_DIRECT by 4 KiB where memfds take O_DIRECT, from Linux 6.6). */
static struct virtio_blk *blk[4];
static struct guest_mem mem;
static uint8_t *ram;

/* A writable disk of its own (the image lock allows one writer) behind each engine; NULL
 * where O_DIRECT is refused. */
static struct virtio_blk *make_disk(const char *id, enum blk_engine engine, bool direct)
{
	char path[64];
	int fd = memfd_create(id, 0);
	struct blk_config cfg = {.path = path,
				 .serial = "fuzz",
				 .engine = engine,
				 .direct = direct,
				 .direct_align = direct ? 4096 : 0};
	struct virtio_blk *b;

	if (fd < 0 || ftruncate(fd, SECTORS * 512) < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (virtio_blk_create(&cfg, id, &mem, NULL, &b)) {
		if (direct)
			return NULL;
		abort();
	}
	return b;
}

static void init(void)
{
	log_set_level(LOG_ERROR);
	ram = malloc(RAM_SIZE);
	mem.memfd = -1;
	if (!ram || gm_add_region(&mem, 0, RAM_SIZE, ram))
		abort();
	blk[0] = make_disk("fuzz-uring", BLK_ENGINE_IO_URING, false);
	blk[1] = make_disk("fuzz-sync", BLK_ENGINE_SYNC, false);
	blk[2] = make_disk("fuzz-threads", BLK_ENGINE_THREADS, false);
	blk[3] = make_disk("fuzz-direct", BLK_ENGINE_THREADS, true);
	if (!blk[3])
		blk[3] = blk[2];
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct virtio_dev *d;
	struct virtq *q;
	uint64_t features;

	if (!blk[0])
		init();
	if (size < 8)
		return 0;
	struct virtio_blk *b = blk[(data[1] >> 3) & 3];
	d = virtio_blk_dev(b);
	q = &d->vqs[0];

	/* The layout: size (a power of 2 or not), features, ring addresses (aligned or not). */
	features = 1ULL << VIRTIO_F_VERSION_1;
	if (data[1] & 1)
		features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	if (data[1] & 2)
		features |= 1ULL << VIRTIO_F_EVENT_IDX;
	memset(ram, 0, RAM_SIZE);
	memcpy(ram, data + 8, size - 8 < RAM_SIZE ? size - 8 : RAM_SIZE);

	virtq_reset(q);
	q->size = (data[0] & 0x80) ? data[0] & 0x7f : (uint16_t)(1u << (data[0] % 9));
	q->desc_gpa = get16(data + 2);
	q->avail_gpa = get16(data + 4);
	q->used_gpa = get16(data + 6) + (data[1] & 4 ? 0x10000ULL : 0);
	d->driver_features = features;
	d->broken = false;
	d->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
		    VIRTIO_STATUS_DRIVER_OK;
	if (virtq_activate(q, &mem, features))
		return 0;

	/* Kick a few times: the device takes what the guest's avail ring offers. */
	for (int kick = 0; kick < 3 && !d->broken; kick++) {
		uint16_t before = q->used_idx;

		d->ops->queue_notify(d, 0);
		virtio_blk_drain(b);
		/* Never more completions than the ring has room for in one pass. */
		if ((uint16_t)(q->used_idx - before) > q->size)
			abort();
	}
	return 0;
}
