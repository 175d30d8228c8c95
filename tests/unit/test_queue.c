// SPDX-License-Identifier: MIT
/*
 * Split virtqueues against a hostile driver: every rule of virtq_activate() and virtq_pop()
 * broken once, and the well-formed cases beside them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "vmm/layout.h"
#include "vring_driver.h"

#define RAM_SIZE (1 * MiB)
#define QSZ	 8

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver vd;
	struct virtq q;
	struct virtq_chain c;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	vd_init(&f->vd, f->ram, QSZ);
	f->q.max_size = 256;
	virtq_reset(&f->q);
	vd_setup_queue(&f->vd, &f->q);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->ram);
	free(f);
	return 0;
}

static void activate(struct fixture *f, uint64_t features)
{
	assert_int_equal(virtq_activate(&f->q, &f->m, features), 0);
}

static void test_activate_checks_layout(void **state)
{
	struct fixture *f = *state;
	static const uint16_t bad_sizes[] = {0, 3, 6, 512};

	for (unsigned i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		f->q.size = bad_sizes[i];
		assert_int_equal(virtq_activate(&f->q, &f->m, 0), -EINVAL);
		assert_false(f->q.ready);
	}
	vd_setup_queue(&f->vd, &f->q);
	f->q.desc_gpa = VD_DESC_GPA + 8; /* descriptors need 16-byte alignment */
	assert_int_equal(virtq_activate(&f->q, &f->m, 0), -EINVAL);
	vd_setup_queue(&f->vd, &f->q);
	f->q.avail_gpa = VD_AVAIL_GPA + 1;
	assert_int_equal(virtq_activate(&f->q, &f->m, 0), -EINVAL);
	vd_setup_queue(&f->vd, &f->q);
	f->q.used_gpa = VD_USED_GPA + 2;
	assert_int_equal(virtq_activate(&f->q, &f->m, 0), -EINVAL);
	/* A ring that runs off the end of RAM, or wraps the address space. */
	vd_setup_queue(&f->vd, &f->q);
	f->q.used_gpa = RAM_SIZE - 16;
	assert_int_equal(virtq_activate(&f->q, &f->m, 0), -EINVAL);
	vd_setup_queue(&f->vd, &f->q);
	f->q.desc_gpa = UINT64_MAX - 15;
	assert_int_equal(virtq_activate(&f->q, &f->m, 0), -EINVAL);
	assert_null(f->q.desc);
	vd_setup_queue(&f->vd, &f->q);
	activate(f, 0);
	assert_true(f->q.ready);
}

static void test_pop_empty_and_inactive(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(virtq_pop(&f->q, &f->c), 0); /* not activated */
	activate(f, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), 0);
}

static void test_pop_well_formed_chain(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	vd_desc(&f->vd, 3, VD_DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 5);
	vd_desc(&f->vd, 5, VD_DATA_GPA + 0x100, 512, VIRTQ_DESC_F_NEXT, 0);
	vd_desc(&f->vd, 0, VD_DATA_GPA + 0x400, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 3);
	assert_int_equal(virtq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.head, 3);
	assert_int_equal(f->c.nr_out, 2);
	assert_int_equal(f->c.nr_in, 1);
	assert_int_equal(f->c.out_len, 528);
	assert_int_equal(f->c.in_len, 1);
	assert_ptr_equal(f->c.out[0].iov_base, f->ram + VD_DATA_GPA);
	assert_ptr_equal(f->c.out[1].iov_base, f->ram + VD_DATA_GPA + 0x100);
	assert_ptr_equal(f->c.in[0].iov_base, f->ram + VD_DATA_GPA + 0x400);
	assert_int_equal(virtq_pop(&f->q, &f->c), 0);

	virtq_push(&f->q, 3, 1);
	assert_int_equal(vd_used_idx(&f->vd), 1);
	assert_int_equal(vd_used(&f->vd, 0).id, 3);
	assert_int_equal(vd_used(&f->vd, 0).len, 1);
}

static void test_pop_zero_length_buffer(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	/* An empty buffer maps nothing, even at an address outside RAM. */
	vd_desc(&f->vd, 0, UINT64_MAX, 0, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, VD_DATA_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.nr_out, 0);
	assert_int_equal(f->c.nr_in, 1);
}

static void test_pop_head_out_of_range(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	vd_publish(&f->vd, QSZ);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_pop_next_out_of_range(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	vd_desc(&f->vd, 0, VD_DATA_GPA, 16, VIRTQ_DESC_F_NEXT, QSZ);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_pop_loops(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	vd_desc(&f->vd, 0, VD_DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 0); /* itself */
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);

	/* A longer cycle through every descriptor. */
	for (uint16_t i = 0; i < QSZ; i++)
		vd_desc(&f->vd, i, VD_DATA_GPA, 16, VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % QSZ));
	vd_publish(&f->vd, 2);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_pop_longest_chain(void **state)
{
	struct fixture *f = *state;

	/* Exactly queue-size descriptors is a legal chain, not a loop. */
	activate(f, 0);
	for (uint16_t i = 0; i < QSZ - 1; i++)
		vd_desc(&f->vd, i, VD_DATA_GPA, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1));
	vd_desc(&f->vd, QSZ - 1, VD_DATA_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.nr_out, QSZ - 1);
}

static void test_pop_buffer_outside_ram(void **state)
{
	struct fixture *f = *state;
	static const struct {
		uint64_t addr;
		uint32_t len;
	} bad[] = {
	    {RAM_SIZE - 8, 16},		 /* runs off the end */
	    {RAM_SIZE, 1},		 /* just past it */
	    {UINT64_MAX - 7, 16},	 /* wraps around */
	    {LAYOUT_PCI_MMIO32_BASE, 4}, /* device memory, not RAM */
	};

	activate(f, 0);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vd_desc(&f->vd, 0, bad[i].addr, bad[i].len, 0, 0);
		vd_publish(&f->vd, 0);
		assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	}
}

static void test_pop_readable_after_writable(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	vd_desc(&f->vd, 0, VD_DATA_GPA, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, VD_DATA_GPA, 16, 0, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_pop_avail_index_jump(void **state)
{
	struct fixture *f = *state;
	struct virtq_avail *a = (struct virtq_avail *)(f->ram + VD_AVAIL_GPA);

	activate(f, 0);
	vd_desc(&f->vd, 0, VD_DATA_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	a->idx = QSZ + 1; /* more buffers than the queue holds */
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_pop_lengths_overflow(void **state)
{
	struct fixture *f = *state;
	const uint64_t big = 3 * GiB;
	void *reserve =
	    mmap(NULL, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	/* Two 3 GiB buffers: each inside RAM, together more than a 32-bit length. */
	assert_ptr_not_equal(reserve, MAP_FAILED);
	assert_int_equal(gm_add_region(&f->m, LAYOUT_4G, big, reserve), 0);
	activate(f, 0);
	vd_desc(&f->vd, 0, LAYOUT_4G, (uint32_t)(big / 2 + 1), VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->vd, 1, LAYOUT_4G, (uint32_t)(big / 2 + 1), VIRTQ_DESC_F_NEXT, 2);
	vd_desc(&f->vd, 2, LAYOUT_4G, (uint32_t)(big / 2 + 1), 0, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	munmap(reserve, big);
}

static void test_indirect(void **state)
{
	struct fixture *f = *state;
	const uint64_t table = VD_DATA_GPA + 0x1000;
	struct virtq_desc t[3] = {
	    {VD_DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1},
	    {VD_DATA_GPA + 0x100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2},
	    {VD_DATA_GPA + 0x400, 1, VIRTQ_DESC_F_WRITE, 0},
	};

	memcpy(f->ram + table, t, sizeof(t));
	activate(f, 1ULL << VIRTIO_F_INDIRECT_DESC);
	vd_desc(&f->vd, 0, table, sizeof(t), VIRTQ_DESC_F_INDIRECT, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.nr_out, 1);
	assert_int_equal(f->c.nr_in, 2);
	assert_int_equal(f->c.in_len, 513);

	/* A length that is not a whole number of descriptors. */
	vd_desc(&f->vd, 0, table, sizeof(t) - 1, VIRTQ_DESC_F_INDIRECT, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	/* INDIRECT together with NEXT. */
	vd_desc(&f->vd, 0, table, sizeof(t), VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	/* A table outside RAM. */
	vd_desc(&f->vd, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	/* A next index past the table's end. */
	t[2].flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
	t[2].next = 3;
	memcpy(f->ram + table, t, sizeof(t));
	vd_desc(&f->vd, 0, table, sizeof(t), VIRTQ_DESC_F_INDIRECT, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	/* A loop inside the table. */
	t[2].next = 1;
	memcpy(f->ram + table, t, sizeof(t));
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
	/* An indirect descriptor inside the table. */
	t[1].flags = VIRTQ_DESC_F_INDIRECT;
	memcpy(f->ram + table, t, sizeof(t));
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_indirect_needs_feature(void **state)
{
	struct fixture *f = *state;

	activate(f, 0);
	vd_desc(&f->vd, 0, VD_DATA_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vd_publish(&f->vd, 0);
	assert_int_equal(virtq_pop(&f->q, &f->c), -EINVAL);
}

static void test_notify_suppression(void **state)
{
	struct fixture *f = *state;
	struct virtq_avail *a = (struct virtq_avail *)(f->ram + VD_AVAIL_GPA);

	activate(f, 0);
	virtq_push(&f->q, 0, 0);
	assert_true(virtq_should_notify(&f->q));
	a->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	assert_false(virtq_should_notify(&f->q));

	/* EVENT_IDX: an interrupt only when used passes used_event. */
	vd_setup_queue(&f->vd, &f->q);
	activate(f, 1ULL << VIRTIO_F_EVENT_IDX);
	a->ring[QSZ] = 1; /* used_event: tell me after the second buffer */
	virtq_push(&f->q, 0, 0);
	assert_true(virtq_should_notify(&f->q)); /* the first ever is always sent */
	virtq_push(&f->q, 0, 0);
	assert_true(virtq_should_notify(&f->q)); /* used went 1 -> 2, past used_event 1 */
	virtq_push(&f->q, 0, 0);
	assert_false(virtq_should_notify(&f->q));
}

static void test_iov_copies_stop_at_end(void **state)
{
	uint8_t a[4] = {1, 2, 3, 4}, b[3] = {5, 6, 7}, out[16];
	struct iovec iov[2] = {{a, sizeof(a)}, {b, sizeof(b)}};

	(void)state;
	memset(out, 0, sizeof(out));
	assert_int_equal(iov_to_buf(iov, 2, 2, out, sizeof(out)), 5);
	assert_memory_equal(out, ((uint8_t[]){3, 4, 5, 6, 7}), 5);
	assert_int_equal(iov_to_buf(iov, 2, 7, out, sizeof(out)), 0);
	assert_int_equal(iov_from_buf(iov, 2, 3, "xyz", 3), 3);
	assert_int_equal(a[3], 'x');
	assert_int_equal(b[1], 'z');
	assert_int_equal(iov_from_buf(iov, 2, 6, "pq", 2), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_activate_checks_layout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_empty_and_inactive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_well_formed_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_zero_length_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_head_out_of_range, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_next_out_of_range, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_loops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_longest_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_buffer_outside_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_readable_after_writable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_avail_index_jump, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pop_lengths_overflow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_indirect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_indirect_needs_feature, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_notify_suppression, setup, teardown),
	    cmocka_unit_test(test_iov_copies_stop_at_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
