/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk (virtio 1.2 §5.2) on a raw image file: a read is a file read, a write a file
 * write, a flush fdatasync(2) (many at once through an engine: io_uring, or a thread pool
 * where io_uring is missing), a discard a hole punched, write-zeroes a range zeroed in place.
 * One request queue. The image is locked: one writer, or any number of readers. With
 * direct=on the image is opened with O_DIRECT (no host page cache); requests whose buffers,
 * offset or length O_DIRECT cannot take go through an aligned bounce buffer.
 *
 * Optionally rate-limited (common/token_bucket.h): a request costs one operation and the bytes
 * of its data buffers (a read's or write's data; none for a flush). A request over the limit
 * stays in the avail ring until the tokens are there.
 */
#ifndef YUN_DEVICES_VIRTIO_BLK_H
#define YUN_DEVICES_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/token_bucket.h"
#include "devices/virtio/virtio.h"

/* How requests reach the image: io_uring or a thread pool with many in flight (AUTO: io_uring
 * where the kernel lets us have it, else the pool), or one at a time on the event loop's
 * thread. */
enum blk_engine { BLK_ENGINE_AUTO, BLK_ENGINE_IO_URING, BLK_ENGINE_THREADS, BLK_ENGINE_SYNC };

struct blk_config {
	const char *path;
	bool readonly;
	enum blk_engine engine;
	bool direct;	       /* O_DIRECT */
	uint32_t direct_align; /* the O_DIRECT alignment to assume (tests); 0: ask the file */
	char serial[21];       /* what VIRTIO_BLK_T_GET_ID returns: up to 20 bytes */
	struct rate_limit_config rate;
};

struct blk_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, errors;
	uint64_t bytes_read, bytes_written;
	uint64_t bounced;		  /* O_DIRECT requests that went through a bounce buffer */
	uint64_t throttled, throttled_ns; /* held back by the rate limiter: times, time */
};

struct virtio_blk;
struct event_loop;

/* Open and lock the image; a size that is not a multiple of 512 (with direct, of the O_DIRECT
 * alignment) or a file system that refuses O_DIRECT is -EINVAL, an image another process
 * holds (a writer, or any holder when we would write) -EBUSY. */
int virtio_blk_create(const struct blk_config *cfg, const char *id, const struct guest_mem *mem,
		      struct event_loop *loop, struct virtio_blk **out);
/* Wait for every request in flight and answer it (completions otherwise arrive on the loop). */
void virtio_blk_drain(struct virtio_blk *b);
struct virtio_dev *virtio_blk_dev(struct virtio_blk *b);
/* The engine serving the disk: "io_uring", "threads" or "sync". */
const char *virtio_blk_engine_name(struct virtio_blk *b);
void virtio_blk_stats(struct virtio_blk *b, struct blk_stats *out);
/* The disk's rate limiter (tests drive its timer). */
struct rate_limiter *virtio_blk_rate_limiter(struct virtio_blk *b);
void virtio_blk_destroy(struct virtio_blk *b);

#endif
