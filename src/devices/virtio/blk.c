// SPDX-License-Identifier: MIT
#include "devices/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/event_loop.h"
#include "common/log.h"
#include "common/snapshot_file.h"
#include "devices/virtio/blk_engine.h"

/* virtio 1.2 §5.2.3 feature bits. */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO	      5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9
#define VIRTIO_BLK_F_DISCARD  13
#define VIRTIO_BLK_F_WZEROES  14

/* §5.2.6 request types and status values. */
#define VIRTIO_BLK_T_IN	     0
#define VIRTIO_BLK_T_OUT     1
#define VIRTIO_BLK_T_FLUSH   4
#define VIRTIO_BLK_T_GET_ID  8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WZEROES 13
#define VIRTIO_BLK_S_OK	     0
#define VIRTIO_BLK_S_IOERR   1
#define VIRTIO_BLK_S_UNSUPP  2

#define SECTOR_SIZE  512
#define QUEUE_SIZE   256
#define ID_BYTES     20
#define HEADER_BYTES 16

/* O_DIRECT: the most a bounce buffer holds at once, and the alignment assumed where the file
 * system does not say (it covers every logical block size in use). */
#define BOUNCE_MAX	   (1u << 20)
#define DIO_ALIGN_FALLBACK 4096

/* Discard and write-zeroes: segments per request, sectors per segment, and the granularity
 * Linux aligns discards to (4 KiB, the host filesystem's block). */
#define MAX_RANGE_SEGS	  32
#define MAX_RANGE_SECTORS (1u << 22) /* 2 GiB */
#define DISCARD_ALIGN	  8
#define RANGE_F_UNMAP	  1u

/* §5.2.4, up to the write-zeroes fields; fields past them are for features not offered. */
struct virtio_blk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp;
	uint8_t alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback;
	uint8_t unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
} __attribute__((packed));

/* One range of a discard or write-zeroes request (§5.2.6). */
struct blk_range {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* A read, write or flush in an engine. */
struct blk_req {
	struct blk_io io; /* first: the engine hands back &io */
	uint16_t head;
	uint32_t type;
	uint8_t *status; /* the request's status byte, in guest memory */
	uint64_t len;	 /* the guest's data bytes */
	unsigned nr;
	struct iovec iov[QUEUE_SIZE]; /* the guest's data buffers */
	/* O_DIRECT through a bounce buffer: the guest's bytes start `skip` bytes into it. */
	uint8_t *bounce;
	uint64_t skip;
	struct iovec bounce_iov;
	struct blk_req *next_free;
};

struct virtio_blk {
	struct virtio_dev vdev;
	char id[16];
	int fd;
	bool readonly;
	char serial[ID_BYTES];
	uint64_t capacity; /* in sectors */
	struct virtio_blk_config config;
	struct blk_stats stats;
	/* The engine with requests in flight; NULL: each is served on the loop's thread. */
	struct blk_io_engine *engine;
	struct event_loop *loop;
	struct blk_req *reqs, *free_reqs;
	unsigned inflight, unsubmitted;
	/* O_DIRECT: what offsets and lengths (dio_align) and buffers (dio_mem_align) must be
	 * multiples of; other requests go through a bounce buffer (`bounce`: the synchronous
	 * path's, BOUNCE_MAX bytes). */
	bool direct;
	uint32_t dio_align, dio_mem_align;
	uint8_t *bounce;
	struct rate_limiter limiter;
	/* Scratch for one request, kept here rather than on the stack. */
	struct virtq_chain chain;
	struct iovec data[VIRTQ_MAX_SIZE];
};

static void blk_config_read(struct virtio_dev *d, uint32_t offset, void *data, unsigned size)
{
	struct virtio_blk *b = d->priv;

	memset(data, 0, size);
	if (offset < sizeof(b->config))
		memcpy(data, (uint8_t *)&b->config + offset,
		       size < sizeof(b->config) - offset ? size : sizeof(b->config) - offset);
}

static void blk_config_write(struct virtio_dev *d, uint32_t offset, const void *data, unsigned size)
{
	/* Only `writeback` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, not offered. */
	log_guest_error("%s: write to read-only configuration at %u ignored", d->id, offset);
}

/* The data buffers of a request: iov[] minus `skip_front` bytes and `skip_back` bytes. */
static unsigned data_iov(struct iovec *dst, const struct iovec *src, unsigned nr,
			 uint64_t skip_front, uint64_t skip_back)
{
	unsigned n = 0;
	uint64_t total = 0, want;

	for (unsigned i = 0; i < nr; i++)
		total += src[i].iov_len;
	want = total - skip_front - skip_back;
	for (unsigned i = 0; i < nr && want; i++) {
		uint64_t len = src[i].iov_len;
		uint8_t *base = src[i].iov_base;

		if (skip_front >= len) {
			skip_front -= len;
			continue;
		}
		base += skip_front;
		len -= skip_front;
		skip_front = 0;
		if (len > want)
			len = want;
		dst[n++] = (struct iovec){base, len};
		want -= len;
	}
	return n;
}

int blk_file_rw(int fd, bool write, struct iovec *iov, unsigned nr, off_t off)
{
	while (nr) {
		ssize_t n = write ? pwritev(fd, iov, (int)nr, off) : preadv(fd, iov, (int)nr, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		off += n;
		while (nr && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			nr--;
		}
		if (nr) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Check that [sector, sector + len) lies on the disk, without overflow. */
static bool in_range(const struct virtio_blk *b, uint64_t sector, uint64_t len)
{
	return len % SECTOR_SIZE == 0 && sector <= b->capacity &&
	       len / SECTOR_SIZE <= b->capacity - sector;
}

/* Whether O_DIRECT takes this transfer as it is (a zero-length one moves nothing). */
static bool dio_aligned(const struct virtio_blk *b, const struct iovec *iov, unsigned nr,
			uint64_t off, uint64_t len)
{
	uint64_t mask = b->dio_align - 1, mem_mask = b->dio_mem_align - 1;

	if (!len)
		return true;
	if ((off | len) & mask)
		return false;
	for (unsigned i = 0; i < nr; i++)
		if (((uintptr_t)iov[i].iov_base & mem_mask) || (iov[i].iov_len & mask))
			return false;
	return true;
}

static unsigned blk_reap(struct virtio_blk *b, bool all, bool answer);

/*
 * An O_DIRECT transfer whose buffers, offset or length are not aligned, on the loop's thread:
 * the enclosing aligned range through the bounce buffer, BOUNCE_MAX bytes at a time. A write
 * of part of a block reads the block first; the engine's requests finish before that, so
 * that none of their writes to the same block is lost.
 */
static int bounce_rw(struct virtio_blk *b, bool write, const struct iovec *iov, unsigned nr,
		     uint64_t off, uint64_t len)
{
	uint64_t mask = b->dio_align - 1, end = off + len, done = 0;

	b->stats.bounced++;
	if (write && ((off | len) & mask))
		blk_reap(b, true, true);
	while (done < len) {
		uint64_t pos = off + done, start = pos & ~mask, stop = (end + mask) & ~mask;
		uint64_t n;
		struct iovec v;
		int err = 0;

		if (stop - start > BOUNCE_MAX)
			stop = start + BOUNCE_MAX;
		n = (stop < end ? stop : end) - pos;
		v = (struct iovec){b->bounce, stop - start};
		if (!write || pos > start || pos + n < stop)
			err = blk_file_rw(b->fd, false, &v, 1, (off_t)start);
		if (err)
			return err;
		if (write) {
			iov_to_buf(iov, nr, done, b->bounce + (pos - start), n);
			v = (struct iovec){b->bounce, stop - start};
			err = blk_file_rw(b->fd, true, &v, 1, (off_t)start);
			if (err)
				return err;
		} else {
			iov_from_buf(iov, nr, done, b->bounce + (pos - start), n);
		}
		done += n;
	}
	return 0;
}

/* A read or write of the guest's buffers on the loop's thread; `len` is their total. */
static int file_rw(struct virtio_blk *b, bool write, struct iovec *iov, unsigned nr, uint64_t off,
		   uint64_t len)
{
	if (b->direct && !dio_aligned(b, iov, nr, off, len))
		return bounce_rw(b, write, iov, nr, off, len);
	return blk_file_rw(b->fd, write, iov, nr, (off_t)off);
}

static int punch(struct virtio_blk *b, int mode, uint64_t off, uint64_t len)
{
	int r;

	do
		r = fallocate(b->fd, mode | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

/* Zeroes by writing them, for files whose filesystem cannot zero a range itself. */
static int write_zeroes_slowly(struct virtio_blk *b, uint64_t off, uint64_t len)
{
	static const uint8_t zeroes[64 * 1024] __attribute__((aligned(4096)));

	while (len) {
		size_t n = len < sizeof(zeroes) ? (size_t)len : sizeof(zeroes);
		struct iovec v = {(void *)zeroes, n};
		int err = file_rw(b, true, &v, 1, off, n);

		if (err)
			return err;
		off += n;
		len -= n;
	}
	return 0;
}

/*
 * DISCARD and WRITE_ZEROES: the data is an array of ranges. A discard punches a hole (it is a
 * hint: a filesystem without holes makes it a no-op); write-zeroes zeroes the range in place,
 * punching a hole when the driver allows unmapping, writing zeroes when nothing else works.
 */
static uint8_t blk_ranges(struct virtio_blk *b, const struct virtq_chain *c, bool discard)
{
	struct blk_range r[MAX_RANGE_SEGS];
	uint64_t bytes = c->out_len - HEADER_BYTES;
	unsigned n = (unsigned)(bytes / sizeof(r[0]));

	if (b->readonly || c->in_len != 1 || bytes % sizeof(r[0]) || n == 0 || n > MAX_RANGE_SEGS)
		return VIRTIO_BLK_S_IOERR;
	iov_to_buf(c->out, c->nr_out, HEADER_BYTES, r, bytes);
	/* Check every range before touching the file: a bad request changes nothing. */
	for (unsigned i = 0; i < n; i++) {
		/* §5.2.6.2: unmap on a discard, or any unknown flag, is unsupported. */
		if (r[i].flags & ~(discard ? 0 : RANGE_F_UNMAP))
			return VIRTIO_BLK_S_UNSUPP;
		if (r[i].num_sectors > MAX_RANGE_SECTORS ||
		    !in_range(b, r[i].sector, (uint64_t)r[i].num_sectors * SECTOR_SIZE))
			return VIRTIO_BLK_S_IOERR;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = r[i].sector * SECTOR_SIZE,
			 len = (uint64_t)r[i].num_sectors * SECTOR_SIZE;
		int err;

		if (!len)
			continue;
		if (discard) {
			err = punch(b, FALLOC_FL_PUNCH_HOLE, off, len);
			if (err == -EOPNOTSUPP)
				err = 0;
			b->stats.discards++;
		} else {
			err = punch(b,
				    (r[i].flags & RANGE_F_UNMAP) ? FALLOC_FL_PUNCH_HOLE
								 : FALLOC_FL_ZERO_RANGE,
				    off, len);
			if (err == -EOPNOTSUPP)
				err = punch(b, FALLOC_FL_ZERO_RANGE, off, len);
			if (err == -EOPNOTSUPP)
				err = write_zeroes_slowly(b, off, len);
			b->stats.write_zeroes++;
		}
		if (err)
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

/* §5.2.6: the request header, at the start of the device-readable buffers. */
struct blk_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* Read a request's header; false for a chain without one or without a status byte. */
static bool read_header(const struct virtq_chain *c, struct blk_header *hdr)
{
	if (c->out_len < HEADER_BYTES || c->in_len < 1)
		return false;
	iov_to_buf(c->out, c->nr_out, 0, hdr, sizeof(*hdr));
	return true;
}

/* The checks a read or write must pass before any I/O; *len is its data length. */
static uint8_t rw_check(const struct virtio_blk *b, const struct virtq_chain *c, uint32_t type,
			uint64_t sector, uint64_t *len)
{
	if (type == VIRTIO_BLK_T_IN) {
		*len = c->in_len - 1;
		return c->out_len == HEADER_BYTES && in_range(b, sector, *len) ? VIRTIO_BLK_S_OK
									       : VIRTIO_BLK_S_IOERR;
	}
	*len = c->out_len - HEADER_BYTES;
	/* §5.2.6.2: with VIRTIO_BLK_F_RO a write fails with IOERR and writes nothing. */
	return !b->readonly && c->in_len == 1 && in_range(b, sector, *len) ? VIRTIO_BLK_S_OK
									   : VIRTIO_BLK_S_IOERR;
}

/* Serve one request; returns the bytes written into device-writable buffers, or -1 for a
 * chain too malformed to answer (no header or no status byte). */
static int64_t blk_handle_request(struct virtio_blk *b, struct virtq_chain *c)
{
	struct blk_header hdr;
	uint8_t status = VIRTIO_BLK_S_OK;
	uint64_t written = 0, len;
	unsigned nr;

	if (!read_header(c, &hdr))
		return -1;

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		status = rw_check(b, c, hdr.type, hdr.sector, &len);
		if (status != VIRTIO_BLK_S_OK)
			break;
		nr = data_iov(b->data, c->in, c->nr_in, 0, 1);
		if (file_rw(b, false, b->data, nr, hdr.sector * SECTOR_SIZE, len)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		written = len;
		b->stats.reads++;
		b->stats.bytes_read += len;
		break;
	case VIRTIO_BLK_T_OUT:
		status = rw_check(b, c, hdr.type, hdr.sector, &len);
		if (status != VIRTIO_BLK_S_OK)
			break;
		nr = data_iov(b->data, c->out, c->nr_out, HEADER_BYTES, 0);
		if (file_rw(b, true, b->data, nr, hdr.sector * SECTOR_SIZE, len)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		b->stats.writes++;
		b->stats.bytes_written += len;
		break;
	case VIRTIO_BLK_T_FLUSH:
		if (!b->readonly && fdatasync(b->fd) < 0)
			status = VIRTIO_BLK_S_IOERR;
		b->stats.flushes++;
		break;
	case VIRTIO_BLK_T_GET_ID: {
		char id[ID_BYTES];

		len = c->in_len - 1;
		memcpy(id, b->serial, ID_BYTES);
		written = iov_from_buf(c->in, c->nr_in, 0, id, len < ID_BYTES ? len : ID_BYTES);
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WZEROES:
		status = blk_ranges(b, c, hdr.type == VIRTIO_BLK_T_DISCARD);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	if (status == VIRTIO_BLK_S_IOERR)
		b->stats.errors++;
	/* The status is the last byte of the last device-writable buffer. */
	iov_from_buf(c->in, c->nr_in, c->in_len - 1, &status, 1);
	return (int64_t)written + 1;
}

/* The status byte: the last byte of the last non-empty device-writable buffer. */
static uint8_t *status_byte(const struct virtq_chain *c)
{
	for (unsigned i = c->nr_in; i-- > 0;)
		if (c->in[i].iov_len)
			return (uint8_t *)c->in[i].iov_base + c->in[i].iov_len - 1;
	return NULL;
}

/*
 * An engine's request that O_DIRECT cannot take as it is: through a bounce buffer of its own
 * over the enclosing aligned range. False where the synchronous path must serve it instead: a
 * write of part of a block (which reads the block first), or a request over BOUNCE_MAX.
 */
static bool bounce_setup(struct virtio_blk *b, struct blk_req *r)
{
	uint64_t mask = b->dio_align - 1, off = r->io.off;
	uint64_t start = off & ~mask, stop = (off + r->len + mask) & ~mask;
	size_t align = b->dio_mem_align < 4096 ? 4096 : b->dio_mem_align;

	if (stop - start > BOUNCE_MAX ||
	    (r->io.op == BLK_IO_WRITE && (start != off || stop != off + r->len)))
		return false;
	if (posix_memalign((void **)&r->bounce, align, stop - start)) {
		r->bounce = NULL;
		return false;
	}
	if (r->io.op == BLK_IO_WRITE)
		iov_to_buf(r->iov, r->nr, 0, r->bounce, r->len);
	r->skip = off - start;
	r->bounce_iov = (struct iovec){r->bounce, stop - start};
	r->io.iov = &r->bounce_iov;
	r->io.nr = 1;
	r->io.off = start;
	r->io.len = stop - start;
	b->stats.bounced++;
	return true;
}

/*
 * Hand a valid read, write or flush to the engine. Returns false for anything else (an error
 * to answer, another type, more pieces than a request slot holds, every slot in use): the
 * synchronous path serves those.
 */
static bool blk_submit(struct virtio_blk *b, const struct virtq_chain *c)
{
	struct blk_header hdr;
	struct blk_req *r = b->free_reqs;
	uint64_t len = 0;

	if (!b->engine || !r || !read_header(c, &hdr))
		return false;
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (rw_check(b, c, hdr.type, hdr.sector, &len) != VIRTIO_BLK_S_OK ||
		    (hdr.type == VIRTIO_BLK_T_IN ? c->nr_in : c->nr_out) > QUEUE_SIZE)
			return false;
		break;
	case VIRTIO_BLK_T_FLUSH:
		if (b->readonly)
			return false;
		break;
	default:
		return false;
	}
	r->head = c->head;
	r->type = hdr.type;
	r->status = status_byte(c);
	r->len = len;
	r->bounce = NULL;
	if (hdr.type == VIRTIO_BLK_T_IN) {
		r->io.op = BLK_IO_READ;
		r->nr = data_iov(r->iov, c->in, c->nr_in, 0, 1);
	} else if (hdr.type == VIRTIO_BLK_T_OUT) {
		r->io.op = BLK_IO_WRITE;
		r->nr = data_iov(r->iov, c->out, c->nr_out, HEADER_BYTES, 0);
	} else {
		r->io.op = BLK_IO_FLUSH;
		r->nr = 0;
	}
	r->io.off = hdr.sector * SECTOR_SIZE;
	r->io.len = len;
	r->io.iov = r->iov;
	r->io.nr = r->nr;
	if (b->direct && r->io.op != BLK_IO_FLUSH &&
	    !dio_aligned(b, r->iov, r->nr, r->io.off, len) && !bounce_setup(b, r))
		return false;
	if (b->engine->ops->submit(b->engine, &r->io)) {
		free(r->bounce);
		r->bounce = NULL;
		return false;
	}
	b->free_reqs = r->next_free;
	b->inflight++;
	b->unsubmitted++;
	return true;
}

/* A request the engine finished: its status, and its place in the used ring unless the
 * device was reset meanwhile (`answer` false: the guest gave those buffers up). */
static void blk_complete(struct virtio_blk *b, struct blk_req *r, bool answer)
{
	struct blk_io *io = &r->io;
	uint8_t status = VIRTIO_BLK_S_OK;

	if (io->res < 0) {
		status = VIRTIO_BLK_S_IOERR;
	} else if (io->op != BLK_IO_FLUSH && (uint64_t)io->res < io->len) {
		/* A short transfer: the rest synchronously (a read past EOF is an error). The
		 * iovecs are trimmed in place: data_iov() never writes ahead of what it reads. */
		unsigned nr = data_iov(io->iov, io->iov, io->nr, (uint64_t)io->res, 0);

		if (blk_file_rw(b->fd, io->op == BLK_IO_WRITE, io->iov, nr,
				(off_t)(io->off + (uint64_t)io->res)))
			status = VIRTIO_BLK_S_IOERR;
	}
	if (status != VIRTIO_BLK_S_OK) {
		b->stats.errors++;
	} else if (io->op == BLK_IO_READ) {
		b->stats.reads++;
		b->stats.bytes_read += r->len;
	} else if (io->op == BLK_IO_WRITE) {
		b->stats.writes++;
		b->stats.bytes_written += r->len;
	} else {
		b->stats.flushes++;
	}
	if (answer) {
		if (r->bounce && io->op == BLK_IO_READ && status == VIRTIO_BLK_S_OK)
			iov_from_buf(r->iov, r->nr, 0, r->bounce + r->skip, r->len);
		*r->status = status;
		virtq_push(&b->vdev.vqs[0], r->head,
			   (uint32_t)((io->op == BLK_IO_READ && !status ? r->len : 0) + 1));
	}
	free(r->bounce);
	r->bounce = NULL;
	r->next_free = b->free_reqs;
	b->free_reqs = r;
	b->inflight--;
}

/* Start what was submitted and take finished requests from the engine, waiting for all of
 * them with `all`; under vdev.lock. Returns how many were answered. */
static unsigned blk_reap(struct virtio_blk *b, bool all, bool answer)
{
	unsigned done = 0;

	if (!b->engine)
		return 0;
	if (b->unsubmitted) {
		b->engine->ops->kick(b->engine);
		b->unsubmitted = 0;
	}
	while (b->inflight) {
		struct blk_io *io = b->engine->ops->reap(b->engine, all);

		if (!io)
			break;
		blk_complete(b, (struct blk_req *)io, answer);
		done++;
	}
	return answer ? done : 0;
}

/* The engine's eventfd: requests finished. */
static void on_completion(void *opaque, uint32_t events)
{
	struct virtio_blk *b = opaque;
	struct virtio_dev *d = &b->vdev;
	uint64_t v;

	if (read(b->engine->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("%s: completion eventfd: %s", b->id, strerror(errno));
	pthread_mutex_lock(&d->lock);
	if (blk_reap(b, false, true))
		virtio_queue_notify_driver(d, 0);
	pthread_mutex_unlock(&d->lock);
}

void virtio_blk_drain(struct virtio_blk *b)
{
	struct virtio_dev *d = &b->vdev;

	pthread_mutex_lock(&d->lock);
	if (blk_reap(b, true, true))
		virtio_queue_notify_driver(d, 0);
	pthread_mutex_unlock(&d->lock);
}

/*
 * What a request costs the rate limiter in bytes: its data buffers, all but the header and the
 * status byte. That is a read's or write's data and nothing for a flush; GET_ID, discard and
 * write-zeroes cost their few bytes too, since the cost is counted from the chain's lengths,
 * never from the header's type, which the guest could change between this check and the I/O.
 */
static uint64_t request_bytes(const struct virtq_chain *c)
{
	if (c->out_len < HEADER_BYTES || c->in_len < 1)
		return 0; /* answered with an error, or breaks the device */
	return c->out_len - HEADER_BYTES + c->in_len - 1;
}

/* Serve what the driver made available, under vdev.lock; both engines start here. */
static void blk_serve(struct virtio_blk *b)
{
	struct virtio_dev *d = &b->vdev;
	struct virtq *vq = &d->vqs[0];
	bool served = false, throttled = false;
	int r;

	if (!virtio_queue_live(d, 0))
		return;
	for (;;) {
		while ((r = virtq_pop(vq, &b->chain)) == 1) {
			if (!rate_limiter_consume(&b->limiter, request_bytes(&b->chain), 1)) {
				/* Over the limit: the request stays in the avail ring until the
				 * limiter's timer brings the device back. */
				vq->last_avail_idx--;
				throttled = true;
				break;
			}
			if (blk_submit(b, &b->chain))
				continue;
			int64_t written = blk_handle_request(b, &b->chain);

			if (written < 0) {
				virtio_dev_error(d, "request without a header or status byte");
				r = -EINVAL;
				break;
			}
			virtq_push(vq, b->chain.head, (uint32_t)written);
			served = true;
		}
		if (r < 0) {
			if (!d->broken)
				virtio_dev_error(d, "malformed descriptor chain");
			break;
		}
		if (throttled)
			break;
		/* Re-enable notifications, then look again for buffers that raced with it. */
		virtq_set_notification(vq, true);
		if (vq->avail->idx == vq->last_avail_idx)
			break;
	}
	/* Submit what was queued; what the page cache answered during the submission is done
	 * already: answer it now rather than after a trip through the eventfd. */
	if (b->unsubmitted && blk_reap(b, false, true))
		served = true;
	if (served)
		virtio_queue_notify_driver(d, 0);
}

static void blk_queue_notify(struct virtio_dev *d, unsigned q)
{
	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (q == 0)
		blk_serve(d->priv);
	pthread_mutex_unlock(&d->lock);
}

/* The rate limiter's timer: the tokens a request waited for are there (under vdev.lock). */
static void blk_unthrottled(void *opaque)
{
	blk_serve(opaque);
}

static int blk_activate(struct virtio_dev *d)
{
	return 0;
}

static void blk_reset(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;

	/* Requests in flight finish first (I/O cannot be recalled), unanswered: after a reset
	 * their buffers are no longer the device's to write. */
	blk_reap(b, true, false);
}

/* Snapshots: requests in flight finish and are answered before the queue is saved. */
static void blk_quiesce(struct virtio_dev *d)
{
	if (blk_reap(d->priv, true, true))
		virtio_queue_notify_driver(d, 0);
}

/* The disk's contents are the image's, not the snapshot's; its size must not have changed. */
static void blk_save(struct virtio_dev *d, struct snap_writer *w)
{
	struct virtio_blk *b = d->priv;

	snap_put(w, d->id, &b->capacity, sizeof(b->capacity));
}

static int blk_load(struct virtio_dev *d, const struct snap_reader *r)
{
	struct virtio_blk *b = d->priv;
	uint64_t capacity;
	int err = snap_get(r, d->id, &capacity, sizeof(capacity));

	if (!err && capacity != b->capacity) {
		log_error("%s: the image has %llu sectors, the snapshot's guest saw %llu", d->id,
			  (unsigned long long)b->capacity, (unsigned long long)capacity);
		err = -EINVAL;
	}
	return err;
}

static const struct virtio_dev_ops blk_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .pci_class = {0x01, 0x00, 0x00}, /* mass storage, SCSI: what QEMU and Linux expect */
    .config_read = blk_config_read,
    .config_write = blk_config_write,
    .activate = blk_activate,
    .queue_notify = blk_queue_notify,
    .reset = blk_reset,
    .quiesce = blk_quiesce,
    .save = blk_save,
    .load = blk_load,
};

/*
 * One writer or many readers per image, across processes: an open file description lock
 * (fcntl F_OFD_SETLK, released when the fd closes), the kind QEMU takes too.
 */
static int lock_image(int fd, const struct blk_config *cfg)
{
	struct flock l = {.l_type = cfg->readonly ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET};

	if (fcntl(fd, F_OFD_SETLK, &l) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		log_error("disk %s: in use: %s holds a lock on the image (another VM, or another "
			  "--disk of this one)",
			  cfg->path, cfg->readonly ? "a writer" : "a reader or a writer");
	else
		log_error("disk %s: lock: %s", cfg->path, strerror(errno));
	return -1;
}

/* Start engine `ops` with its eventfd on the loop, and the requests it can hold. */
static int engine_start(struct virtio_blk *b, const struct blk_io_engine_ops *ops,
			struct event_loop *loop)
{
	int err = ops->create(b->fd, QUEUE_SIZE, &b->engine);

	if (err)
		return err;
	if (loop)
		err = event_loop_add(loop, b->engine->efd, EPOLLIN, on_completion, b);
	if (!err && !b->reqs) {
		b->reqs = calloc(QUEUE_SIZE, sizeof(*b->reqs));
		err = b->reqs ? 0 : -ENOMEM;
		if (err && loop)
			event_loop_del(loop, b->engine->efd);
	}
	if (err) {
		ops->destroy(b->engine);
		b->engine = NULL;
		return err;
	}
	for (unsigned i = 0; i < QUEUE_SIZE; i++) {
		b->reqs[i].next_free = b->free_reqs;
		b->free_reqs = &b->reqs[i];
	}
	b->loop = loop;
	return 0;
}

/*
 * The engine asked for; by default io_uring where the kernel lets us have it and the thread
 * pool where it does not (an old kernel, a seccomp filter). One line says which, and why.
 */
static int engine_setup(struct virtio_blk *b, const struct blk_config *cfg, struct event_loop *loop)
{
	const struct blk_io_engine_ops *ops =
	    cfg->engine == BLK_ENGINE_THREADS ? &blk_threads_ops : &blk_io_uring_ops;
	char direct[64] = "";
	int err, uring_err;

	if (b->direct)
		snprintf(direct, sizeof(direct), ", O_DIRECT by %u (buffers by %u)", b->dio_align,
			 b->dio_mem_align);

	if (cfg->engine == BLK_ENGINE_SYNC) {
		log_info("%s: %s: engine sync%s", b->id, cfg->path, direct);
		return 0;
	}
	err = engine_start(b, ops, loop);
	if (err && cfg->engine != BLK_ENGINE_AUTO) {
		log_error("disk %s: engine %s: %s", cfg->path, ops->name, strerror(-err));
		return err;
	}
	if (!err) {
		log_info("%s: %s: engine %s%s", b->id, cfg->path, ops->name, direct);
		return 0;
	}
	uring_err = err;
	err = engine_start(b, &blk_threads_ops, loop);
	if (err)
		log_warn("%s: %s: io_uring unavailable (%s), no thread pool (%s): engine sync%s",
			 b->id, cfg->path, strerror(-uring_err), strerror(-err), direct);
	else
		log_warn("%s: %s: io_uring unavailable (%s): engine threads%s", b->id, cfg->path,
			 strerror(-uring_err), direct);
	return 0;
}

/*
 * What O_DIRECT wants of offsets, lengths and buffers: the file system's word where it gives
 * it (statx STATX_DIOALIGN, Linux 6.1), a block device's logical block size, else
 * DIO_ALIGN_FALLBACK; and a bounce buffer for the requests that do not fit.
 */
static int dio_setup(struct virtio_blk *b, const struct blk_config *cfg, const struct stat *st)
{
	uint32_t align = DIO_ALIGN_FALLBACK, mem_align = 0;
	struct statx sx;
	int ssz;

	if (cfg->direct_align) {
		align = cfg->direct_align;
	} else if (statx(b->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
		   (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
		align = sx.stx_dio_offset_align;
		mem_align = sx.stx_dio_mem_align;
	} else if (S_ISBLK(st->st_mode) && ioctl(b->fd, BLKSSZGET, &ssz) == 0 && ssz > 0) {
		align = (uint32_t)ssz;
	}
	if (!mem_align || mem_align & (mem_align - 1))
		mem_align = align;
	if (align & (align - 1) || align > BOUNCE_MAX || mem_align > BOUNCE_MAX) {
		log_error("disk %s: direct=on: O_DIRECT alignment %u (buffers %u) is not supported",
			  cfg->path, align, mem_align);
		return -EINVAL;
	}
	/* A request at the end of the disk then never needs a block past the end. */
	if ((uint64_t)st->st_size % align) {
		log_error("disk %s: direct=on: size %lld is not a multiple of %u, the O_DIRECT "
			  "alignment of its file system",
			  cfg->path, (long long)st->st_size, align);
		return -EINVAL;
	}
	if (posix_memalign((void **)&b->bounce, mem_align < 4096 ? 4096 : mem_align, BOUNCE_MAX))
		return -ENOMEM;
	b->direct = true;
	b->dio_align = align;
	b->dio_mem_align = mem_align;
	return 0;
}

int virtio_blk_create(const struct blk_config *cfg, const char *id, const struct guest_mem *mem,
		      struct event_loop *loop, struct virtio_blk **out)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	struct stat st;
	int err;

	if (!b)
		return -ENOMEM;
	b->fd = open(cfg->path, (cfg->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
				    (cfg->direct ? O_DIRECT : 0));
	if (b->fd < 0 && cfg->direct && errno == EINVAL) {
		log_error("disk %s: direct=on: its file system refuses O_DIRECT", cfg->path);
		err = -EINVAL;
		goto err;
	}
	if (b->fd < 0 || fstat(b->fd, &st) < 0) {
		err = -errno;
		log_error("disk %s: %s", cfg->path, strerror(errno));
		goto err;
	}
	if (lock_image(b->fd, cfg) < 0) {
		err = -EBUSY;
		goto err;
	}
	if (st.st_size % SECTOR_SIZE) {
		log_error("disk %s: size %lld is not a multiple of %d", cfg->path,
			  (long long)st.st_size, SECTOR_SIZE);
		err = -EINVAL;
		goto err;
	}
	if (cfg->direct && (err = dio_setup(b, cfg, &st)))
		goto err;
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->readonly = cfg->readonly;
	memset(b->serial, 0, sizeof(b->serial));
	memcpy(b->serial, cfg->serial, strnlen(cfg->serial, ID_BYTES));
	err = engine_setup(b, cfg, loop);
	if (err)
		goto err;
	b->capacity = (uint64_t)st.st_size / SECTOR_SIZE;
	b->config.capacity = b->capacity;
	b->config.seg_max = QUEUE_SIZE - 2;
	b->config.blk_size = SECTOR_SIZE;
	b->config.num_queues = 1;
	b->config.max_discard_sectors = b->config.max_write_zeroes_sectors = MAX_RANGE_SECTORS;
	b->config.max_discard_seg = b->config.max_write_zeroes_seg = MAX_RANGE_SEGS;
	b->config.discard_sector_alignment = DISCARD_ALIGN;
	b->config.write_zeroes_may_unmap = 1;

	virtio_dev_init(&b->vdev, &blk_ops, b, b->id, mem, 1, QUEUE_SIZE);
	b->vdev.config_size = sizeof(b->config);
	err = rate_limiter_init(&b->limiter, &cfg->rate, loop, &b->vdev.lock, blk_unthrottled, b);
	if (err) {
		log_error("disk %s: rate limiter: %s", cfg->path, strerror(-err));
		virtio_blk_destroy(b);
		return err;
	}
	b->vdev.device_features =
	    (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
	    (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_F_INDIRECT_DESC) |
	    (1ULL << VIRTIO_F_EVENT_IDX) |
	    (cfg->readonly ? 1ULL << VIRTIO_BLK_F_RO
			   : (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WZEROES));
	*out = b;
	return 0;
err:
	if (b->fd >= 0)
		close(b->fd);
	free(b->reqs);
	free(b->bounce);
	free(b);
	return err;
}

struct virtio_dev *virtio_blk_dev(struct virtio_blk *b)
{
	return &b->vdev;
}

const char *virtio_blk_engine_name(struct virtio_blk *b)
{
	return b->engine ? b->engine->ops->name : "sync";
}

void virtio_blk_stats(struct virtio_blk *b, struct blk_stats *out)
{
	pthread_mutex_lock(&b->vdev.lock);
	*out = b->stats;
	out->throttled = b->limiter.throttled;
	out->throttled_ns = b->limiter.throttled_ns;
	pthread_mutex_unlock(&b->vdev.lock);
}

struct rate_limiter *virtio_blk_rate_limiter(struct virtio_blk *b)
{
	return &b->limiter;
}

void virtio_blk_destroy(struct virtio_blk *b)
{
	if (!b)
		return;
	if (b->engine) {
		pthread_mutex_lock(&b->vdev.lock);
		blk_reap(b, true, false);
		pthread_mutex_unlock(&b->vdev.lock);
		if (b->loop)
			event_loop_del(b->loop, b->engine->efd);
		b->engine->ops->destroy(b->engine);
	}
	free(b->reqs);
	free(b->bounce);
	rate_limiter_destroy(&b->limiter);
	if (b->stats.reads || b->stats.writes || b->stats.flushes || b->stats.discards ||
	    b->stats.write_zeroes || b->stats.errors)
		log_info(
		    "%s: %llu reads %llu bytes; %llu writes %llu bytes; %llu flushes, %llu "
		    "discards, %llu write-zeroes, %llu errors",
		    b->id, (unsigned long long)b->stats.reads,
		    (unsigned long long)b->stats.bytes_read, (unsigned long long)b->stats.writes,
		    (unsigned long long)b->stats.bytes_written,
		    (unsigned long long)b->stats.flushes, (unsigned long long)b->stats.discards,
		    (unsigned long long)b->stats.write_zeroes, (unsigned long long)b->stats.errors);
	if (b->limiter.throttled)
		log_info("%s: held back by the rate limiter %llu times, %llu ms in all", b->id,
			 (unsigned long long)b->limiter.throttled,
			 (unsigned long long)(b->limiter.throttled_ns / 1000000));
	close(b->fd);
	pthread_mutex_destroy(&b->vdev.lock);
	free(b);
}
