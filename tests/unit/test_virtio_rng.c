// SPDX-License-Identifier: MIT
/* virtio-rng through its queue: buffers filled, lengths reported, bad requests refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices/virtio/rng.h"
#include "vmm/layout.h"
#include "vring_driver.h"

#define RAM_SIZE (1 * MiB)
#define QSZ	 16
#define BUF_GPA	 (VD_DATA_GPA)

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver vd;
	struct virtio_rng *rng;
	struct virtio_dev *dev;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	assert_int_equal(virtio_rng_create("rng0", &f->m, &f->rng), 0);
	f->dev = virtio_rng_dev(f->rng);
	assert_int_equal(f->dev->ops->device_id, VIRTIO_ID_RNG);
	assert_int_equal(f->dev->config_size, 0);
	f->dev->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	f->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	vd_init(&f->vd, f->ram, QSZ);
	vd_setup_queue(&f->vd, &f->dev->vqs[0]);
	assert_int_equal(virtq_activate(&f->dev->vqs[0], &f->m, f->dev->driver_features), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_rng_destroy(f->rng);
	free(f->ram);
	free(f);
	return 0;
}

static unsigned kick(struct fixture *f)
{
	uint16_t before = vd_used_idx(&f->vd);

	f->dev->ops->queue_notify(f->dev, 0);
	return (uint16_t)(vd_used_idx(&f->vd) - before);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_fills_buffers(void **state)
{
	struct fixture *f = *state;
	uint8_t first[64];

	/* Two buffers in one chain: both filled, the used length is their sum. */
	vd_desc(&f->vd, 0, BUF_GPA, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, BUF_GPA + 0x100, 32, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 1);
	assert_int_equal(vd_used(&f->vd, 0).len, 96);
	assert_false(all_zero(f->ram + BUF_GPA, 64));
	assert_false(all_zero(f->ram + BUF_GPA + 0x100, 32));
	assert_true(all_zero(f->ram + BUF_GPA + 64, 0x100 - 64)); /* nothing between them */
	memcpy(first, f->ram + BUF_GPA, 64);

	/* A second request gets other bytes. */
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 1);
	assert_memory_not_equal(first, f->ram + BUF_GPA, 64);

	struct rng_stats st;
	virtio_rng_stats(f->rng, &st);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.bytes, 192);
}

static void test_large_request_is_capped(void **state)
{
	struct fixture *f = *state;

	vd_desc(&f->vd, 0, BUF_GPA, 512 * 1024, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 1);
	assert_int_equal(vd_used(&f->vd, 0).len, VIRTIO_RNG_MAX_REQUEST);
	assert_true(all_zero(f->ram + BUF_GPA + VIRTIO_RNG_MAX_REQUEST, 4096));
}

static void test_readable_buffer_is_refused(void **state)
{
	struct fixture *f = *state;

	vd_desc(&f->vd, 0, BUF_GPA, 64, 0, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	assert_true(f->dev->broken);
	assert_true(f->dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_true(all_zero(f->ram + BUF_GPA, 64));
}

static void test_buffer_outside_ram(void **state)
{
	struct fixture *f = *state;

	vd_desc(&f->vd, 0, RAM_SIZE - 16, 64, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(kick(f), 0);
	assert_true(f->dev->broken);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fills_buffers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_large_request_is_capped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readable_buffer_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_buffer_outside_ram, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
