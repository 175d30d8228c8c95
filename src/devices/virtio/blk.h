/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk (virtio 1.2 §5.2) on a raw image file: a read is a file read, a write a file
 * write, a flush fdatasync(2), a discard a hole punched, write-zeroes a range zeroed in place.
 * One request queue. The image is locked: one writer, or any number of readers.
 */
#ifndef YUN_DEVICES_VIRTIO_BLK_H
#define YUN_DEVICES_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio/virtio.h"

struct blk_config {
	const char *path;
	bool readonly;
	char serial[21]; /* what VIRTIO_BLK_T_GET_ID returns: up to 20 bytes */
};

struct blk_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, errors;
	uint64_t bytes_read, bytes_written;
};

struct virtio_blk;

/* Open and lock the image; a size that is not a multiple of 512 is refused with -EINVAL, an
 * image another process holds (a writer, or any holder when we would write) with -EBUSY. */
int virtio_blk_create(const struct blk_config *cfg, const char *id, const struct guest_mem *mem,
		      struct virtio_blk **out);
struct virtio_dev *virtio_blk_dev(struct virtio_blk *b);
void virtio_blk_stats(struct virtio_blk *b, struct blk_stats *out);
void virtio_blk_destroy(struct virtio_blk *b);

#endif
