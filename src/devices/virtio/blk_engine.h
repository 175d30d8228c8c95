/* SPDX-License-Identifier: MIT */
/*
 * How virtio-blk's reads, writes and flushes reach the image with many in flight: an engine
 * takes requests, does them on the image's file descriptor and hands each back finished.
 * blk.c, the device model, submits and reaps on the event loop's thread under the device's
 * lock, and only it touches the rings and the guest's status bytes; an engine signals
 * finished requests on its eventfd, which blk.c watches on the loop. The engine never
 * answers the guest itself, so a device reset can reap what is in flight and answer nothing.
 */
#ifndef YUN_DEVICES_VIRTIO_BLK_ENGINE_H
#define YUN_DEVICES_VIRTIO_BLK_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

enum blk_io_op { BLK_IO_READ, BLK_IO_WRITE, BLK_IO_FLUSH };

/* One request as an engine sees it: the file's bytes [off, off + len) and its buffers. */
struct blk_io {
	enum blk_io_op op;
	uint64_t off, len;
	struct iovec *iov; /* the engine may advance these in place */
	unsigned nr;
	int64_t res;	     /* set by the engine: bytes moved (possibly short), or -errno */
	struct blk_io *next; /* the engine's, while it holds the request */
};

struct blk_io_engine {
	const struct blk_io_engine_ops *ops;
	int efd; /* readable while finished requests wait to be reaped */
};

struct blk_io_engine_ops {
	const char *name;
	/* An engine on `fd` with room for `depth` requests in flight. */
	int (*create)(int fd, unsigned depth, struct blk_io_engine **out);
	/* Take a request; -EAGAIN when there is no room now. It may wait for kick() to start. */
	int (*submit)(struct blk_io_engine *e, struct blk_io *io);
	/* Start what submit() took. */
	void (*kick)(struct blk_io_engine *e);
	/* A finished request, or NULL when none is; with `wait`, block until one finishes
	 * (only while a request is in flight). */
	struct blk_io *(*reap)(struct blk_io_engine *e, bool wait);
	/* Only with nothing in flight. */
	void (*destroy)(struct blk_io_engine *e);
};

extern const struct blk_io_engine_ops blk_io_uring_ops, blk_threads_ops;

/* A whole read or write at `off`: loops over short transfers (advancing iov in place); a read
 * that meets the end of the file is -EIO. */
int blk_file_rw(int fd, bool write, struct iovec *iov, unsigned nr, off_t off);

#endif
