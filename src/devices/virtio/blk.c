// SPDX-License-Identifier: MIT
#include "devices/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/event_loop.h"
#include "common/log.h"

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

/* A read, write or flush in flight on the ring. */
struct blk_req {
	uint16_t head;
	uint32_t type;
	uint8_t *status; /* the request's status byte, in guest memory */
	uint64_t off, len;
	unsigned nr;
	struct iovec iov[QUEUE_SIZE];
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
	/* The io_uring engine: requests in flight, completions signalled on an eventfd. */
	bool uring;
	struct io_uring ring;
	int ring_efd;
	struct event_loop *loop;
	struct blk_req *reqs, *free_reqs;
	unsigned inflight, unsubmitted;
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

/* Whole-request file I/O: loops over short transfers; a short read at EOF is an error. */
static int blk_rw(struct virtio_blk *b, bool write, struct iovec *iov, unsigned nr, off_t off)
{
	while (nr) {
		ssize_t n =
		    write ? pwritev(b->fd, iov, (int)nr, off) : preadv(b->fd, iov, (int)nr, off);

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
	static const uint8_t zeroes[64 * 1024];

	while (len) {
		size_t n = len < sizeof(zeroes) ? (size_t)len : sizeof(zeroes);
		ssize_t w = pwrite(b->fd, zeroes, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		off += (uint64_t)w;
		len -= (uint64_t)w;
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
		if (blk_rw(b, false, b->data, nr, (off_t)(hdr.sector * SECTOR_SIZE))) {
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
		if (blk_rw(b, true, b->data, nr, (off_t)(hdr.sector * SECTOR_SIZE))) {
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

/* Hand the kernel what blk_submit() queued on the ring. */
static void submit_queued(struct virtio_blk *b)
{
	if (b->unsubmitted) {
		io_uring_submit(&b->ring);
		b->unsubmitted = 0;
	}
}

/*
 * Put a valid read, write or flush on the ring. Returns false for anything else (an error to
 * answer, another type, more pieces than a request slot holds, every slot in use): the
 * synchronous path serves those.
 */
static bool blk_submit(struct virtio_blk *b, const struct virtq_chain *c)
{
	struct blk_header hdr;
	struct blk_req *r = b->free_reqs;
	struct io_uring_sqe *sqe;
	uint64_t len = 0;

	if (!b->uring || !r || !read_header(c, &hdr))
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
	sqe = io_uring_get_sqe(&b->ring);
	if (!sqe) {
		submit_queued(b);
		sqe = io_uring_get_sqe(&b->ring);
		if (!sqe)
			return false;
	}
	r->head = c->head;
	r->type = hdr.type;
	r->status = status_byte(c);
	r->off = hdr.sector * SECTOR_SIZE;
	r->len = len;
	if (hdr.type == VIRTIO_BLK_T_IN) {
		r->nr = data_iov(r->iov, c->in, c->nr_in, 0, 1);
		io_uring_prep_readv(sqe, b->fd, r->iov, r->nr, r->off);
	} else if (hdr.type == VIRTIO_BLK_T_OUT) {
		r->nr = data_iov(r->iov, c->out, c->nr_out, HEADER_BYTES, 0);
		io_uring_prep_writev(sqe, b->fd, r->iov, r->nr, r->off);
	} else {
		r->nr = 0;
		io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
	}
	io_uring_sqe_set_data(sqe, r);
	b->free_reqs = r->next_free;
	b->inflight++;
	b->unsubmitted++;
	return true;
}

/* A request the ring finished: its status, and its place in the used ring unless the
 * device was reset meanwhile (`answer` false: the guest gave those buffers up). */
static void blk_complete(struct virtio_blk *b, struct blk_req *r, int res, bool answer)
{
	uint8_t status = VIRTIO_BLK_S_OK;
	bool write = r->type == VIRTIO_BLK_T_OUT;

	if (res < 0) {
		status = VIRTIO_BLK_S_IOERR;
	} else if (r->type != VIRTIO_BLK_T_FLUSH && (uint64_t)res < r->len) {
		/* A short transfer: the rest synchronously (a read past EOF is an error). The
		 * iovecs are trimmed in place: data_iov() never writes ahead of what it reads. */
		unsigned nr = data_iov(r->iov, r->iov, r->nr, (uint64_t)res, 0);

		if (blk_rw(b, write, r->iov, nr, (off_t)(r->off + (uint64_t)res)))
			status = VIRTIO_BLK_S_IOERR;
	}
	if (status != VIRTIO_BLK_S_OK) {
		b->stats.errors++;
	} else if (r->type == VIRTIO_BLK_T_IN) {
		b->stats.reads++;
		b->stats.bytes_read += r->len;
	} else if (write) {
		b->stats.writes++;
		b->stats.bytes_written += r->len;
	} else {
		b->stats.flushes++;
	}
	if (answer) {
		*r->status = status;
		virtq_push(&b->vdev.vqs[0], r->head,
			   (uint32_t)((r->type == VIRTIO_BLK_T_IN && !status ? r->len : 0) + 1));
	}
	r->next_free = b->free_reqs;
	b->free_reqs = r;
	b->inflight--;
}

/* Take finished requests off the ring, waiting for all of them with `all`; under vdev.lock.
 * Returns how many were answered. */
static unsigned blk_reap(struct virtio_blk *b, bool all, bool answer)
{
	struct io_uring_cqe *cqe;
	unsigned done = 0;

	submit_queued(b);
	while (b->inflight) {
		int err =
		    all ? io_uring_wait_cqe(&b->ring, &cqe) : io_uring_peek_cqe(&b->ring, &cqe);

		if (err == -EINTR)
			continue;
		if (err < 0)
			break;
		struct blk_req *r = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&b->ring, cqe);
		blk_complete(b, r, res, answer);
		done++;
	}
	return answer ? done : 0;
}

/* The ring's eventfd: requests finished. */
static void on_completion(void *opaque, uint32_t events)
{
	struct virtio_blk *b = opaque;
	struct virtio_dev *d = &b->vdev;
	uint64_t v;

	if (read(b->ring_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
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
	if (b->uring && blk_reap(b, true, true))
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

	if (d->broken || !(d->status & VIRTIO_STATUS_DRIVER_OK) || !vq->ready)
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
	if (b->uring)
		blk_reap(b, true, false);
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

/* The io_uring engine: a ring as deep as the queue, completions on an eventfd on the loop. */
static int uring_setup(struct virtio_blk *b, struct event_loop *loop)
{
	int err = io_uring_queue_init(QUEUE_SIZE, &b->ring, 0);

	if (err < 0)
		return err;
	b->reqs = calloc(QUEUE_SIZE, sizeof(*b->reqs));
	b->ring_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!b->reqs || b->ring_efd < 0) {
		err = b->reqs ? -errno : -ENOMEM;
		goto err;
	}
	err = io_uring_register_eventfd(&b->ring, b->ring_efd);
	if (!err && loop)
		err = event_loop_add(loop, b->ring_efd, EPOLLIN, on_completion, b);
	if (err)
		goto err;
	for (unsigned i = 0; i < QUEUE_SIZE; i++) {
		b->reqs[i].next_free = b->free_reqs;
		b->free_reqs = &b->reqs[i];
	}
	b->loop = loop;
	b->uring = true;
	return 0;
err:
	if (b->ring_efd >= 0)
		close(b->ring_efd);
	b->ring_efd = -1;
	free(b->reqs);
	b->reqs = NULL;
	io_uring_queue_exit(&b->ring);
	return err;
}

int virtio_blk_create(const struct blk_config *cfg, const char *id, const struct guest_mem *mem,
		      struct event_loop *loop, struct virtio_blk **out)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	struct stat st;
	int err;

	if (!b)
		return -ENOMEM;
	b->ring_efd = -1;
	b->fd = open(cfg->path, (cfg->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
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
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->readonly = cfg->readonly;
	memset(b->serial, 0, sizeof(b->serial));
	memcpy(b->serial, cfg->serial, strnlen(cfg->serial, ID_BYTES));
	if (cfg->engine != BLK_ENGINE_SYNC) {
		err = uring_setup(b, loop);
		if (err && cfg->engine == BLK_ENGINE_IO_URING) {
			log_error("disk %s: io_uring: %s", cfg->path, strerror(-err));
			goto err;
		}
		if (err)
			log_warn("disk %s: io_uring unavailable (%s): requests are served "
				 "synchronously",
				 cfg->path, strerror(-err));
	}
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
	free(b);
	return err;
}

struct virtio_dev *virtio_blk_dev(struct virtio_blk *b)
{
	return &b->vdev;
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
	if (b->uring) {
		pthread_mutex_lock(&b->vdev.lock);
		blk_reap(b, true, false);
		pthread_mutex_unlock(&b->vdev.lock);
		if (b->loop)
			event_loop_del(b->loop, b->ring_efd);
		io_uring_queue_exit(&b->ring);
		close(b->ring_efd);
		free(b->reqs);
	}
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
