// SPDX-License-Identifier: MIT
/*
 * virtio-blk on a real file, driven through its queue as a guest driver would: reads, writes,
 * flush, GET_ID, read-only images, and every malformed request a hostile guest can send;
 * under each engine, and again with O_DIRECT where the file system allows it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/virtio/blk.h"
#include "vmm/layout.h"
#include "vring_driver.h"

#define RAM_SIZE (1 * MiB)
#define SECTORS	 64
#define QSZ	 16

#define T_IN	  0
#define T_OUT	  1
#define T_FLUSH	  4
#define T_GET_ID  8
#define T_DISCARD 11
#define T_WZEROES 13
#define S_OK	  0
#define S_IOERR	  1
#define S_UNSUPP  2

/* Where a request's pieces live in guest RAM. */
#define HDR_GPA	   (VD_DATA_GPA)
#define DATA_GPA   (VD_DATA_GPA + 0x1000)
#define STATUS_GPA (VD_DATA_GPA + 0x8000)

/* struct virtio_blk_discard_write_zeroes (§5.2.6), as the driver lays it out. */
struct blk_range_le {
	uint64_t sector;
	uint32_t num_sectors, flags;
};

/* Every test runs under each engine, with and without O_DIRECT (direct_align: 0 asks the file
 * system, 4096 makes most requests need a bounce buffer). */
static enum blk_engine engine;
static bool direct;
static uint32_t direct_align;

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver vd;
	char path[64];
	int fd;
	struct virtio_blk *blk;
	struct virtio_dev *dev;
};

static void sector_pattern(uint8_t *buf, unsigned sector)
{
	for (unsigned i = 0; i < 512; i++)
		buf[i] = (uint8_t)(sector * 7 + i);
}

static void open_device_with(struct fixture *f, const struct blk_config *cfg)
{
	assert_int_equal(virtio_blk_create(cfg, "disk0", &f->m, NULL, &f->blk), 0);
	f->dev = virtio_blk_dev(f->blk);
	/* What the transport does at DRIVER_OK. */
	f->dev->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	f->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	vd_init(&f->vd, f->ram, QSZ);
	vd_setup_queue(&f->vd, &f->dev->vqs[0]);
	assert_int_equal(virtq_activate(&f->dev->vqs[0], &f->m, f->dev->driver_features), 0);
}

static void open_device(struct fixture *f, bool readonly)
{
	struct blk_config cfg = {.path = f->path,
				 .readonly = readonly,
				 .serial = "unit-serial",
				 .engine = engine,
				 .direct = direct,
				 .direct_align = direct_align};

	open_device_with(f, &cfg);
}

static int setup_common(void **state, bool readonly)
{
	struct fixture *f = calloc(1, sizeof(*f));
	uint8_t sector[512];

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	snprintf(f->path, sizeof(f->path), "/tmp/yun-test-blk-XXXXXX");
	f->fd = mkstemp(f->path);
	assert_true(f->fd >= 0);
	for (unsigned s = 0; s < SECTORS; s++) {
		sector_pattern(sector, s);
		assert_int_equal(write(f->fd, sector, 512), 512);
	}
	open_device(f, readonly);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_common(state, false);
}

static int setup_readonly(void **state)
{
	return setup_common(state, true);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_blk_destroy(f->blk);
	close(f->fd);
	unlink(f->path);
	free(f->ram);
	free(f);
	return 0;
}

static void put_header(struct fixture *f, uint32_t type, uint64_t sector)
{
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} h = {type, 0, sector};

	memcpy(f->ram + HDR_GPA, &h, sizeof(h));
}

/* Kick the queue; returns how many requests completed. */
static unsigned kick(struct fixture *f)
{
	uint16_t before = vd_used_idx(&f->vd);

	f->dev->ops->queue_notify(f->dev, 0);
	virtio_blk_drain(f->blk);
	return (uint16_t)(vd_used_idx(&f->vd) - before);
}

/* A three-part request (header, data of len bytes, status); returns the status byte. */
static uint8_t request(struct fixture *f, uint32_t type, uint64_t sector, uint32_t len,
		       bool dev_writes)
{
	put_header(f, type, sector);
	f->ram[STATUS_GPA] = 0xee;
	vd_desc(&f->vd, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, DATA_GPA, len,
		(uint16_t)(VIRTQ_DESC_F_NEXT | (dev_writes ? VIRTQ_DESC_F_WRITE : 0)), 2);
	vd_desc(&f->vd, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 1);
	return f->ram[STATUS_GPA];
}

static void file_sector(struct fixture *f, unsigned s, uint8_t *buf)
{
	assert_int_equal(pread(f->fd, buf, 512, (off_t)s * 512), 512);
}

static void test_read(void **state)
{
	struct fixture *f = *state;
	uint8_t want[1024];

	assert_int_equal(request(f, T_IN, 5, 1024, true), S_OK);
	sector_pattern(want, 5);
	sector_pattern(want + 512, 6);
	assert_memory_equal(f->ram + DATA_GPA, want, 1024);
	assert_int_equal(vd_used(&f->vd, 0).id, 0);
	assert_int_equal(vd_used(&f->vd, 0).len, 1025); /* data and status */
}

static void test_read_scattered(void **state)
{
	struct fixture *f = *state;
	uint8_t want[512];

	/* One sector in three pieces, header and status in their own buffers. */
	put_header(f, T_IN, 9);
	vd_desc(&f->vd, 4, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 7);
	vd_desc(&f->vd, 7, DATA_GPA, 100, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	vd_desc(&f->vd, 2, DATA_GPA + 0x800, 400, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
	vd_desc(&f->vd, 3, DATA_GPA + 0x1000, 13, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 4);
	assert_int_equal(kick(f), 1);
	sector_pattern(want, 9);
	assert_memory_equal(f->ram + DATA_GPA, want, 100);
	assert_memory_equal(f->ram + DATA_GPA + 0x800, want + 100, 400);
	assert_memory_equal(f->ram + DATA_GPA + 0x1000, want + 500, 12);
	assert_int_equal(f->ram[DATA_GPA + 0x1000 + 12], S_OK);
}

static void test_write_and_flush(void **state)
{
	struct fixture *f = *state;
	uint8_t got[512], want[512];

	memset(f->ram + DATA_GPA, 0xab, 512);
	assert_int_equal(request(f, T_OUT, 2, 512, false), S_OK);
	assert_int_equal(vd_used(&f->vd, 0).len, 1); /* only the status was written */
	file_sector(f, 2, got);
	memset(want, 0xab, 512);
	assert_memory_equal(got, want, 512);
	file_sector(f, 3, got);
	sector_pattern(want, 3);
	assert_memory_equal(got, want, 512);
	assert_int_equal(request(f, T_FLUSH, 0, 0, false), S_OK);

	struct blk_stats st;
	virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.writes, 1);
	assert_int_equal(st.bytes_written, 512);
	assert_int_equal(st.flushes, 1);
}

static void test_write_in_header_buffer(void **state)
{
	struct fixture *f = *state;
	uint8_t got[512], want[512];

	/* Header and data in one device-readable buffer, as some drivers send them. */
	put_header(f, T_OUT, 4);
	memset(f->ram + HDR_GPA + 16, 0x5a, 512);
	vd_desc(&f->vd, 0, HDR_GPA, 16 + 512, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 1);
	assert_int_equal(f->ram[STATUS_GPA], S_OK);
	file_sector(f, 4, got);
	memset(want, 0x5a, 512);
	assert_memory_equal(got, want, 512);
}

static void test_get_id(void **state)
{
	struct fixture *f = *state;

	memset(f->ram + DATA_GPA, 0xff, 20);
	assert_int_equal(request(f, T_GET_ID, 0, 20, true), S_OK);
	assert_memory_equal(f->ram + DATA_GPA, "unit-serial\0\0\0\0\0\0\0\0\0", 20);
	/* A buffer shorter than 20 bytes gets what fits. */
	memset(f->ram + DATA_GPA, 0xff, 20);
	assert_int_equal(request(f, T_GET_ID, 0, 4, true), S_OK);
	assert_memory_equal(f->ram + DATA_GPA, "unit", 4);
	assert_int_equal(f->ram[DATA_GPA + 4], 0xff);
}

static void test_out_of_range(void **state)
{
	struct fixture *f = *state;
	uint8_t got[512], want[512];

	assert_int_equal(request(f, T_IN, SECTORS, 512, true), S_IOERR);
	assert_int_equal(request(f, T_IN, SECTORS - 1, 1024, true), S_IOERR);
	assert_int_equal(request(f, T_IN, UINT64_MAX, 512, true), S_IOERR);
	assert_int_equal(request(f, T_IN, UINT64_MAX / 512 + 1, 512, true), S_IOERR);
	assert_int_equal(request(f, T_OUT, SECTORS, 512, false), S_IOERR);
	/* Not a whole number of sectors. */
	assert_int_equal(request(f, T_IN, 0, 100, true), S_IOERR);
	assert_int_equal(request(f, T_OUT, 0, 100, false), S_IOERR);
	file_sector(f, 0, got);
	sector_pattern(want, 0);
	assert_memory_equal(got, want, 512);
	/* The last sector itself is fine. */
	assert_int_equal(request(f, T_IN, SECTORS - 1, 512, true), S_OK);
	assert_false(f->dev->broken);
}

static void test_unsupported(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(request(f, 0x7f, 0, 512, true), S_UNSUPP);
	assert_int_equal(request(f, 10 /* GET_LIFETIME, not offered */, 0, 512, true), S_UNSUPP);
	assert_false(f->dev->broken);
}

static void test_readonly(void **state)
{
	struct fixture *f = *state;
	uint8_t got[512], want[512];

	assert_true(f->dev->device_features & (1ULL << 5)); /* VIRTIO_BLK_F_RO */
	memset(f->ram + DATA_GPA, 0xcd, 512);
	assert_int_equal(request(f, T_OUT, 1, 512, false), S_IOERR);
	file_sector(f, 1, got);
	sector_pattern(want, 1);
	assert_memory_equal(got, want, 512);
	assert_int_equal(request(f, T_IN, 1, 512, true), S_OK);
	assert_int_equal(request(f, T_FLUSH, 0, 0, false), S_OK);
}

/* A request too broken to answer marks the device as needing a reset; nothing more is served. */
static void expect_broken(struct fixture *f)
{
	assert_true(f->dev->broken);
	assert_true(f->dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	/* A good request after it is not served. */
	put_header(f, T_IN, 0);
	vd_desc(&f->vd, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
}

static void test_short_header(void **state)
{
	struct fixture *f = *state;

	put_header(f, T_IN, 0);
	vd_desc(&f->vd, 0, HDR_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	expect_broken(f);
}

static void test_no_status_byte(void **state)
{
	struct fixture *f = *state;

	put_header(f, T_FLUSH, 0);
	vd_desc(&f->vd, 0, HDR_GPA, 16, 0, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	expect_broken(f);
}

static void test_malformed_chain(void **state)
{
	struct fixture *f = *state;

	vd_desc(&f->vd, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 0); /* a loop */
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	expect_broken(f);
}

static void test_buffer_outside_ram(void **state)
{
	struct fixture *f = *state;

	put_header(f, T_IN, 0);
	vd_desc(&f->vd, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, RAM_SIZE - 256, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	vd_desc(&f->vd, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	expect_broken(f);
}

static void test_not_ready(void **state)
{
	struct fixture *f = *state;

	/* Before DRIVER_OK nothing is served. */
	f->dev->status &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
	put_header(f, T_IN, 0);
	vd_desc(&f->vd, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	assert_false(f->dev->broken);
}

/* A discard or write-zeroes request of `n` ranges laid out at DATA_GPA; returns the status. */
static uint8_t range_request(struct fixture *f, uint32_t type, const struct blk_range_le *r,
			     unsigned n)
{
	memcpy(f->ram + DATA_GPA, r, n * sizeof(*r));
	return request(f, type, 0, (uint32_t)(n * sizeof(*r)), false);
}

static bool file_is_zero(struct fixture *f, unsigned first, unsigned count)
{
	uint8_t got[512], zero[512] = {0};

	for (unsigned s = first; s < first + count; s++) {
		file_sector(f, s, got);
		if (memcmp(got, zero, 512))
			return false;
	}
	return true;
}

static bool file_has_pattern(struct fixture *f, unsigned first, unsigned count)
{
	uint8_t got[512], want[512];

	for (unsigned s = first; s < first + count; s++) {
		file_sector(f, s, got);
		sector_pattern(want, s);
		if (memcmp(got, want, 512))
			return false;
	}
	return true;
}

static void test_discard_and_write_zeroes(void **state)
{
	struct fixture *f = *state;
	struct virtio_blk_config_le {
		uint64_t capacity;
		uint8_t skip[28];
		uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
		uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
		uint8_t write_zeroes_may_unmap;
	} __attribute__((packed)) cfg;
	struct blk_range_le r[2] = {{8, 8, 0}, {40, 3, 0}};

	assert_true(f->dev->device_features & (1ULL << 13)); /* DISCARD */
	assert_true(f->dev->device_features & (1ULL << 14)); /* WRITE_ZEROES */
	f->dev->ops->config_read(f->dev, 0, &cfg, sizeof(cfg));
	assert_int_equal(cfg.capacity, SECTORS);
	assert_true(cfg.max_discard_sectors >= 8 && cfg.max_discard_seg >= 2);
	assert_true(cfg.max_write_zeroes_sectors >= 8 && cfg.max_write_zeroes_seg >= 2);
	assert_int_equal(cfg.write_zeroes_may_unmap, 1);

	/* Two ranges zeroed in place; the sectors around them keep their data. */
	assert_int_equal(range_request(f, T_WZEROES, r, 2), S_OK);
	assert_true(file_is_zero(f, 8, 8) && file_is_zero(f, 40, 3));
	assert_true(file_has_pattern(f, 0, 8) && file_has_pattern(f, 16, 24));
	assert_true(file_has_pattern(f, 43, SECTORS - 43));
	/* With unmap allowed: a hole, which reads back as zeroes too. */
	r[0] = (struct blk_range_le){20, 4, 1};
	assert_int_equal(range_request(f, T_WZEROES, r, 1), S_OK);
	assert_true(file_is_zero(f, 20, 4) && file_has_pattern(f, 24, 16));
	/* A discard: afterwards the range holds zeroes or its old data, never anything else;
	 * the file keeps its size. */
	r[0] = (struct blk_range_le){48, 8, 0};
	assert_int_equal(range_request(f, T_DISCARD, r, 1), S_OK);
	assert_true(file_is_zero(f, 48, 8) || file_has_pattern(f, 48, 8));
	assert_true(file_has_pattern(f, 56, 8));
	assert_int_equal(lseek(f->fd, 0, SEEK_END), SECTORS * 512);

	struct blk_stats st;
	virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.write_zeroes, 3);
	assert_int_equal(st.discards, 1);
	assert_false(f->dev->broken);
}

static void test_bad_ranges(void **state)
{
	struct fixture *f = *state;
	struct blk_range_le r[40] = {{0}};

	/* Unmap on a discard and unknown flags are unsupported (§5.2.6.2). */
	r[0] = (struct blk_range_le){0, 8, 1};
	assert_int_equal(range_request(f, T_DISCARD, r, 1), S_UNSUPP);
	r[0].flags = 2;
	assert_int_equal(range_request(f, T_WZEROES, r, 1), S_UNSUPP);
	/* A good range before a bad one: nothing is done at all. */
	r[0] = (struct blk_range_le){0, 8, 0};
	r[1] = (struct blk_range_le){SECTORS - 2, 4, 0};
	assert_int_equal(range_request(f, T_WZEROES, r, 2), S_IOERR);
	r[1] = (struct blk_range_le){UINT64_MAX / 512 + 1, 1, 0};
	assert_int_equal(range_request(f, T_WZEROES, r, 2), S_IOERR);
	r[1] = (struct blk_range_le){0, UINT32_MAX, 0};
	assert_int_equal(range_request(f, T_DISCARD, r, 2), S_IOERR);
	assert_true(file_has_pattern(f, 0, SECTORS));
	/* More segments than offered, none at all, or a length that is not whole ranges. */
	for (unsigned i = 0; i < 40; i++)
		r[i] = (struct blk_range_le){0, 1, 0};
	assert_int_equal(range_request(f, T_WZEROES, r, 40), S_IOERR);
	assert_int_equal(request(f, T_WZEROES, 0, 0, false), S_IOERR);
	assert_int_equal(request(f, T_DISCARD, 0, 20, false), S_IOERR);
	/* The ranges in a device-writable buffer. */
	assert_int_equal(request(f, T_WZEROES, 0, 16, true), S_IOERR);
	assert_true(file_has_pattern(f, 0, SECTORS));
	assert_false(f->dev->broken);
}

static void test_readonly_no_discard(void **state)
{
	struct fixture *f = *state;
	struct blk_range_le r = {0, 8, 0};

	assert_false(f->dev->device_features & (1ULL << 13));
	assert_false(f->dev->device_features & (1ULL << 14));
	assert_int_equal(range_request(f, T_DISCARD, &r, 1), S_IOERR);
	assert_int_equal(range_request(f, T_WZEROES, &r, 1), S_IOERR);
	assert_true(file_has_pattern(f, 0, SECTORS));
}

/* One writer or many readers, across open files (the fixture's device holds one). */
static void test_image_lock(void **state)
{
	struct fixture *f = *state;
	struct blk_config rw = {.path = f->path}, ro = {.path = f->path, .readonly = true};
	struct virtio_blk *b = NULL;

	assert_int_equal(virtio_blk_create(&rw, "disk1", &f->m, NULL, &b), -EBUSY);
	assert_null(b);
	assert_int_equal(virtio_blk_create(&ro, "disk1", &f->m, NULL, &b), -EBUSY);
	/* Once the writer is gone, readers share the image, and keep a writer out. */
	virtio_blk_destroy(f->blk);
	f->blk = NULL;
	assert_int_equal(virtio_blk_create(&ro, "disk1", &f->m, NULL, &b), 0);
	assert_int_equal(virtio_blk_create(&ro, "disk2", &f->m, NULL, &f->blk), 0);
	struct virtio_blk *w = NULL;
	assert_int_equal(virtio_blk_create(&rw, "disk3", &f->m, NULL, &w), -EBUSY);
	virtio_blk_destroy(b);
}

/* Five reads and writes published at once, served together, each answered in its own place. */
static void test_many_in_flight(void **state)
{
	struct fixture *f = *state;
	uint8_t want[512];

	for (uint16_t i = 0; i < 5; i++) {
		uint64_t hdr = HDR_GPA + 32u * i, data = DATA_GPA + 512u * i;
		uint64_t status = STATUS_GPA + i;
		struct {
			uint32_t type, reserved;
			uint64_t sector;
		} h = {i % 2 ? T_OUT : T_IN, 0, 10u + i};

		memcpy(f->ram + hdr, &h, sizeof(h));
		memset(f->ram + data, 0x40 + i, 512);
		f->ram[status] = 0xee;
		vd_desc(&f->vd, (uint16_t)(3 * i), hdr, 16, VIRTQ_DESC_F_NEXT,
			(uint16_t)(3 * i + 1));
		vd_desc(&f->vd, (uint16_t)(3 * i + 1), data, 512,
			(uint16_t)(VIRTQ_DESC_F_NEXT | (i % 2 ? 0 : VIRTQ_DESC_F_WRITE)),
			(uint16_t)(3 * i + 2));
		vd_desc(&f->vd, (uint16_t)(3 * i + 2), status, 1, VIRTQ_DESC_F_WRITE, 0);
		vd_publish(&f->vd, (uint16_t)(3 * i));
	}
	assert_int_equal(kick(f), 5);
	for (unsigned i = 0; i < 5; i++) {
		uint8_t got[512];

		assert_int_equal(f->ram[STATUS_GPA + i], S_OK);
		if (i % 2) {
			memset(want, 0x40 + (int)i, 512);
			file_sector(f, 10 + i, got);
			assert_memory_equal(got, want, 512);
		} else {
			sector_pattern(want, 10 + i);
			assert_memory_equal(f->ram + DATA_GPA + 512 * i, want, 512);
		}
	}
	/* Every head came back once, reads with their data length. */
	unsigned seen = 0;
	for (uint16_t u = 0; u < 5; u++) {
		struct virtq_used_elem e = vd_used(&f->vd, u);

		assert_int_equal(e.id % 3, 0);
		seen |= 1u << (e.id / 3);
		assert_int_equal(e.len, (e.id / 3) % 2 ? 1 : 513);
	}
	assert_int_equal(seen, 0x1f);
}

static void publish_read(struct fixture *f, uint16_t i, uint64_t sector);

/*
 * A reset while requests may be in flight: what was answered before the reset stays
 * answered; nothing is written to the guest after it, not the used ring, not a status byte,
 * not data. (The synchronous engine, and io_uring when the page cache answers at once, have
 * answered before the notification returns.)
 */
static void test_reset_in_flight(void **state)
{
	struct fixture *f = *state;
	uint16_t before = vd_used_idx(&f->vd), answered;
	uint8_t *snapshot = malloc(RAM_SIZE);

	for (uint16_t i = 0; i < 4; i++)
		publish_read(f, i, 3u + i);
	f->dev->ops->queue_notify(f->dev, 0);
	answered = (uint16_t)(vd_used_idx(&f->vd) - before);
	assert_true(answered <= 4);
	if (engine == BLK_ENGINE_SYNC)
		assert_int_equal(answered, 4);
	f->dev->ops->reset(f->dev);
	memcpy(snapshot, f->ram, RAM_SIZE);
	usleep(20000);
	virtio_blk_drain(f->blk);
	assert_memory_equal(f->ram, snapshot, RAM_SIZE);
	assert_int_equal(vd_used_idx(&f->vd), (uint16_t)(before + answered));
	for (uint16_t u = 0; u < answered; u++)
		assert_int_equal(
		    f->ram[STATUS_GPA + vd_used(&f->vd, (uint16_t)(before + u)).id / 3], S_OK);
	free(snapshot);
}

/* A one-segment request with its data at `data`; returns the status byte. */
static uint8_t request_at(struct fixture *f, uint32_t type, uint64_t sector, uint64_t data,
			  uint32_t len)
{
	put_header(f, type, sector);
	f->ram[STATUS_GPA] = 0xee;
	vd_desc(&f->vd, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, data, len,
		(uint16_t)(VIRTQ_DESC_F_NEXT | (type == T_IN ? VIRTQ_DESC_F_WRITE : 0)), 2);
	vd_desc(&f->vd, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 1);
	return f->ram[STATUS_GPA];
}

/*
 * Requests whatever their alignment: guest buffers at odd addresses and (with a 4 KiB O_DIRECT
 * alignment) sectors inside a block. With O_DIRECT the ones it cannot take go through a bounce
 * buffer and the rest do not; the data is right either way.
 */
static void test_alignment(void **state)
{
	struct fixture *f = *state;
	uint8_t want[4096], got[512];
	struct blk_stats st;

	assert_int_equal(request_at(f, T_IN, 8, DATA_GPA, 4096), S_OK);
	for (unsigned i = 0; i < 8; i++)
		sector_pattern(want + 512 * i, 8 + i);
	assert_memory_equal(f->ram + DATA_GPA, want, 4096);
	virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.bounced, 0);

	assert_int_equal(request_at(f, T_IN, 17, DATA_GPA + 3, 1024), S_OK);
	sector_pattern(want, 17);
	sector_pattern(want + 512, 18);
	assert_memory_equal(f->ram + DATA_GPA + 3, want, 1024);

	memset(f->ram + DATA_GPA + 5, 0x3c, 512);
	assert_int_equal(request_at(f, T_OUT, 25, DATA_GPA + 5, 512), S_OK);
	file_sector(f, 25, got);
	memset(want, 0x3c, 512);
	assert_memory_equal(got, want, 512);
	assert_true(file_has_pattern(f, 24, 1) && file_has_pattern(f, 26, 6));

	virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.bounced, direct ? 2 : 0);
	assert_int_equal(st.errors, 0);
}

/*
 * A whole-block write and, published after it, a write of one sector of the same block. Under
 * O_DIRECT with a 4 KiB alignment the second is read, patched and written back after the first
 * has landed; it must not write back the block as it was before.
 */
static void test_partial_block_after_write(void **state)
{
	struct fixture *f = *state;
	uint8_t got[512], want[512];

	for (uint16_t i = 0; i < 2; i++) {
		uint64_t hdr = HDR_GPA + 32u * i, data = DATA_GPA + 0x2000u * i;
		struct {
			uint32_t type, reserved;
			uint64_t sector;
		} h = {T_OUT, 0, i ? 33 : 32};

		memcpy(f->ram + hdr, &h, sizeof(h));
		memset(f->ram + data, i ? 0x22 : 0x11, 4096);
		f->ram[STATUS_GPA + i] = 0xee;
		vd_desc(&f->vd, (uint16_t)(3 * i), hdr, 16, VIRTQ_DESC_F_NEXT,
			(uint16_t)(3 * i + 1));
		vd_desc(&f->vd, (uint16_t)(3 * i + 1), data, i ? 512 : 4096, VIRTQ_DESC_F_NEXT,
			(uint16_t)(3 * i + 2));
		vd_desc(&f->vd, (uint16_t)(3 * i + 2), STATUS_GPA + i, 1, VIRTQ_DESC_F_WRITE, 0);
		vd_publish(&f->vd, (uint16_t)(3 * i));
	}
	assert_int_equal(kick(f), 2);
	assert_int_equal(f->ram[STATUS_GPA], S_OK);
	assert_int_equal(f->ram[STATUS_GPA + 1], S_OK);
	/* Elsewhere the two may land in either order: sector 33 holds one of them. */
	file_sector(f, 33, got);
	memset(want, direct_align == 4096 || got[0] == 0x22 ? 0x22 : 0x11, 512);
	assert_memory_equal(got, want, 512);
	for (unsigned s = 32; s < 40; s++) {
		file_sector(f, s, got);
		memset(want, s == 33 ? got[0] : 0x11, 512);
		assert_memory_equal(got, want, 512);
	}
}

static bool direct_io_works(void);

/* With O_DIRECT the image's size must be a multiple of the alignment too. */
static void test_direct_size(void **state)
{
	struct fixture *f = *state;
	char path[] = "/tmp/yun-test-blk-XXXXXX";
	int fd = mkstemp(path);
	struct blk_config cfg = {.path = path, .engine = engine, .direct = true};
	struct virtio_blk *b = NULL;

	if (!direct_io_works())
		skip();
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4096 + 512), 0);
	cfg.direct_align = 4096;
	assert_int_equal(virtio_blk_create(&cfg, "disk1", &f->m, NULL, &b), -EINVAL);
	assert_null(b);
	cfg.direct_align = 512;
	assert_int_equal(virtio_blk_create(&cfg, "disk1", &f->m, NULL, &b), 0);
	virtio_blk_destroy(b);
	close(fd);
	unlink(path);
}

static void test_size_not_multiple_of_512(void **state)
{
	char path[] = "/tmp/yun-test-blk-XXXXXX";
	int fd = mkstemp(path);
	struct blk_config cfg = {.path = path};
	struct virtio_blk *b = NULL;
	struct guest_mem m = {.memfd = -1};

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1000), 0);
	assert_int_equal(virtio_blk_create(&cfg, "disk0", &m, NULL, &b), -EINVAL);
	assert_null(b);
	unlink(path);
	close(fd);
	cfg.path = "/nonexistent/disk.img";
	assert_int_equal(virtio_blk_create(&cfg, "disk0", &m, NULL, &b), -ENOENT);
}

/* The rate limiter's clock, moved by the tests. */
static uint64_t fake_now;

static uint64_t fake_clock(void)
{
	return fake_now;
}

/* Publish a one-sector read of `sector` as request i (descriptors 3i..3i+2). */
static void publish_read(struct fixture *f, uint16_t i, uint64_t sector)
{
	uint64_t hdr = HDR_GPA + 32u * i, data = DATA_GPA + 512u * i, status = STATUS_GPA + i;
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} h = {T_IN, 0, sector};

	memcpy(f->ram + hdr, &h, sizeof(h));
	memset(f->ram + data, 0, 512);
	f->ram[status] = 0xee;
	vd_desc(&f->vd, (uint16_t)(3 * i), hdr, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * i + 1));
	vd_desc(&f->vd, (uint16_t)(3 * i + 1), data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
		(uint16_t)(3 * i + 2));
	vd_desc(&f->vd, (uint16_t)(3 * i + 2), status, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, (uint16_t)(3 * i));
}

/* The limiter's timer fires at fake time t; returns how many requests completed. */
static unsigned fire_at(struct fixture *f, uint64_t t)
{
	uint16_t before = vd_used_idx(&f->vd);

	fake_now = t;
	rate_limiter_timer(virtio_blk_rate_limiter(f->blk));
	virtio_blk_drain(f->blk);
	return (uint16_t)(vd_used_idx(&f->vd) - before);
}

/* One request a second, burst 1: the first is served, the second waits in the avail ring
 * (not dropped, not answered) until the limiter's timer, a second later, brings it. */
static void test_rate_limited_ops(void **state)
{
	struct fixture *f = *state;
	struct blk_config cfg = {.path = f->path,
				 .serial = "unit-serial",
				 .engine = engine,
				 .direct = direct,
				 .direct_align = direct_align,
				 .rate = {.ops = 1, .ops_burst = 1, .clock = fake_clock}};
	uint8_t want[512];
	struct blk_stats st;

	virtio_blk_destroy(f->blk);
	fake_now = 1000;
	open_device_with(f, &cfg);
	publish_read(f, 0, 20);
	publish_read(f, 1, 21);
	assert_int_equal(kick(f), 1);
	assert_int_equal(f->ram[STATUS_GPA], S_OK);
	assert_int_equal(f->ram[STATUS_GPA + 1], 0xee);
	assert_int_equal(f->dev->vqs[0].last_avail_idx, 1);
	/* The guest kicks again: still too early. */
	fake_now += 500000000;
	assert_int_equal(kick(f), 0);
	assert_int_equal(fire_at(f, 1000 + 999999999), 0);
	assert_int_equal(fire_at(f, 1000 + 1000000000), 1);
	assert_int_equal(f->ram[STATUS_GPA + 1], S_OK);
	assert_int_equal(vd_used(&f->vd, 1).id, 3);
	sector_pattern(want, 21);
	assert_memory_equal(f->ram + DATA_GPA + 512, want, 512);
	virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.reads, 2);
	assert_int_equal(st.throttled, 1);
	assert_int_equal(st.throttled_ns, 1000000000);
	assert_false(f->dev->broken);
}

/* 512 bytes a second: a 1024-byte read (over the burst) passes from the full bucket and
 * leaves a debt of a second, so the next 512-byte read waits two. */
static void test_rate_limited_bytes(void **state)
{
	struct fixture *f = *state;
	struct blk_config cfg = {.path = f->path,
				 .serial = "unit-serial",
				 .engine = engine,
				 .direct = direct,
				 .direct_align = direct_align,
				 .rate = {.bw = 512, .clock = fake_clock}};

	virtio_blk_destroy(f->blk);
	fake_now = 0;
	open_device_with(f, &cfg);
	assert_int_equal(request(f, T_IN, 0, 1024, true), S_OK);
	publish_read(f, 1, 5);
	assert_int_equal(kick(f), 0);
	assert_int_equal(fire_at(f, 1999999999), 0);
	assert_int_equal(fire_at(f, 2000000000), 1);
	assert_int_equal(f->ram[STATUS_GPA + 1], S_OK);
	/* The bytes are spent: a flush, which costs none, passes; a read waits. */
	assert_int_equal(request(f, T_FLUSH, 0, 0, false), S_OK);
	publish_read(f, 2, 6);
	assert_int_equal(kick(f), 0);
	assert_int_equal(fire_at(f, 3000000000), 1);
	assert_int_equal(f->ram[STATUS_GPA + 2], S_OK);
}

/*
 * Where io_uring is refused (here by a seccomp filter, as a sandbox or an old kernel would),
 * the default engine is the thread pool, and it serves requests. In a child process: the
 * filter cannot be taken off again.
 */
static void test_auto_without_io_uring(void **state)
{
	struct fixture *f = *state;
	pid_t pid;
	int status;

	virtio_blk_destroy(f->blk);
	f->blk = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_filter insns[] = {
		    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = 4, .filter = insns};
		struct blk_config cfg = {.path = f->path, .engine = BLK_ENGINE_AUTO};
		uint8_t want[512];

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
		    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
			_exit(2);
		open_device_with(f, &cfg);
		if (strcmp(virtio_blk_engine_name(f->blk), "threads"))
			_exit(3);
		if (request(f, T_IN, 7, 512, true) != S_OK)
			_exit(4);
		sector_pattern(want, 7);
		_exit(memcmp(f->ram + DATA_GPA, want, 512) ? 5 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Each engine asked for by name is the one that serves. */
static void test_engine_names(void **state)
{
	struct fixture *f = *state;
	static const struct {
		enum blk_engine engine;
		const char *name;
	} want[] = {{BLK_ENGINE_IO_URING, "io_uring"},
		    {BLK_ENGINE_THREADS, "threads"},
		    {BLK_ENGINE_SYNC, "sync"}};

	for (unsigned i = 0; i < 3; i++) {
		struct blk_config cfg = {.path = f->path, .engine = want[i].engine};

		virtio_blk_destroy(f->blk);
		open_device_with(f, &cfg);
		assert_string_equal(virtio_blk_engine_name(f->blk), want[i].name);
		assert_int_equal(request(f, T_IN, 1, 512, true), S_OK);
	}
}

static void test_direct_refused(void **state)
{
	(void)state;
	skip();
}

/* Whether the file system of the test images takes O_DIRECT (tmpfs before Linux 6.6 does not). */
static bool direct_io_works(void)
{
	char path[] = "/tmp/yun-test-blk-XXXXXX";
	int fd = mkstemp(path), dfd;

	assert_true(fd >= 0);
	dfd = open(path, O_RDWR | O_DIRECT);
	if (dfd >= 0)
		close(dfd);
	close(fd);
	unlink(path);
	return dfd >= 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_scattered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_and_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_in_header_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_get_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_out_of_range, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unsupported, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readonly, setup_readonly, teardown),
	    cmocka_unit_test_setup_teardown(test_short_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_status_byte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_buffer_outside_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_ready, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_discard_and_write_zeroes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_ranges, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readonly_no_discard, setup_readonly, teardown),
	    cmocka_unit_test_setup_teardown(test_image_lock, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reset_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alignment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partial_block_after_write, setup, teardown),
	    cmocka_unit_test(test_size_not_multiple_of_512),
	    cmocka_unit_test_setup_teardown(test_rate_limited_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rate_limited_bytes, setup, teardown),
	};
	const struct CMUnitTest choice_tests[] = {
	    cmocka_unit_test_setup_teardown(test_auto_without_io_uring, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_engine_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_direct_size, setup, teardown),
	};
	const struct CMUnitTest refused[] = {cmocka_unit_test(test_direct_refused)};
	static const struct {
		const char *name;
		enum blk_engine engine;
		bool direct;
		uint32_t align;
	} groups[] = {
	    {"virtio-blk, synchronous engine", BLK_ENGINE_SYNC, false, 0},
	    {"virtio-blk, io_uring engine", BLK_ENGINE_IO_URING, false, 0},
	    {"virtio-blk, thread-pool engine", BLK_ENGINE_THREADS, false, 0},
	    {"virtio-blk, synchronous engine, O_DIRECT", BLK_ENGINE_SYNC, true, 0},
	    {"virtio-blk, io_uring engine, O_DIRECT", BLK_ENGINE_IO_URING, true, 0},
	    {"virtio-blk, thread-pool engine, O_DIRECT", BLK_ENGINE_THREADS, true, 0},
	    {"virtio-blk, synchronous engine, O_DIRECT by 4 KiB", BLK_ENGINE_SYNC, true, 4096},
	    {"virtio-blk, io_uring engine, O_DIRECT by 4 KiB", BLK_ENGINE_IO_URING, true, 4096},
	    {"virtio-blk, thread-pool engine, O_DIRECT by 4 KiB", BLK_ENGINE_THREADS, true, 4096},
	};
	bool dio = direct_io_works();
	int failed = 0;

	for (unsigned i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		if (groups[i].direct && !dio)
			continue;
		engine = groups[i].engine;
		direct = groups[i].direct;
		direct_align = groups[i].align;
		failed += cmocka_run_group_tests_name(groups[i].name, tests, NULL, NULL);
	}
	if (!dio) {
		printf("# O_DIRECT is refused where the test images live (/tmp): its cases are "
		       "skipped\n");
		failed += cmocka_run_group_tests_name("virtio-blk, O_DIRECT", refused, NULL, NULL);
	}
	engine = BLK_ENGINE_AUTO;
	direct = false;
	failed += cmocka_run_group_tests_name("virtio-blk, engine choice and O_DIRECT set-up",
					      choice_tests, NULL, NULL);
	return failed;
}
