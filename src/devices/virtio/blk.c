// SPDX-License-Identifier: MIT
#include "devices/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

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

struct virtio_blk {
	struct virtio_dev vdev;
	char id[16];
	int fd;
	bool readonly;
	char serial[ID_BYTES];
	uint64_t capacity; /* in sectors */
	struct virtio_blk_config config;
	struct blk_stats stats;
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

/* Serve one request; returns the bytes written into device-writable buffers, or -1 for a
 * chain too malformed to answer (no header or no status byte). */
static int64_t blk_handle_request(struct virtio_blk *b, struct virtq_chain *c)
{
	struct {
		uint32_t type;
		uint32_t reserved;
		uint64_t sector;
	} hdr;
	uint8_t status = VIRTIO_BLK_S_OK;
	uint64_t written = 0, len;
	unsigned nr;

	if (c->out_len < HEADER_BYTES || c->in_len < 1)
		return -1;
	iov_to_buf(c->out, c->nr_out, 0, &hdr, sizeof(hdr));

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		len = c->in_len - 1;
		if (c->out_len != HEADER_BYTES || !in_range(b, hdr.sector, len)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
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
		len = c->out_len - HEADER_BYTES;
		/* §5.2.6.2: with VIRTIO_BLK_F_RO a write fails with IOERR and writes nothing. */
		if (b->readonly || c->in_len != 1 || !in_range(b, hdr.sector, len)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
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

static void blk_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_blk *b = d->priv;
	struct virtq *vq = &d->vqs[0];
	bool served = false;
	int r;

	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (q != 0 || d->broken || !(d->status & VIRTIO_STATUS_DRIVER_OK) || !vq->ready) {
		pthread_mutex_unlock(&d->lock);
		return;
	}
	for (;;) {
		while ((r = virtq_pop(vq, &b->chain)) == 1) {
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
		/* Re-enable notifications, then look again for buffers that raced with it. */
		virtq_set_notification(vq, true);
		if (vq->avail->idx == vq->last_avail_idx)
			break;
	}
	if (served)
		virtio_queue_notify_driver(d, 0);
	pthread_mutex_unlock(&d->lock);
}

static int blk_activate(struct virtio_dev *d)
{
	return 0;
}

static void blk_reset(struct virtio_dev *d)
{
	/* Requests complete synchronously: nothing is in flight to cancel. */
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

int virtio_blk_create(const struct blk_config *cfg, const char *id, const struct guest_mem *mem,
		      struct virtio_blk **out)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	struct stat st;
	int err;

	if (!b)
		return -ENOMEM;
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
	pthread_mutex_unlock(&b->vdev.lock);
}

void virtio_blk_destroy(struct virtio_blk *b)
{
	if (!b)
		return;
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
	close(b->fd);
	pthread_mutex_destroy(&b->vdev.lock);
	free(b);
}
