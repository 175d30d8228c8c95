// SPDX-License-Identifier: MIT
/*
 * virtio-console through its queues, its output on a pipe: transmit reaches the output, host
 * input reaches the guest's receive buffers (and waits, bounded, while there are none), the
 * configuration space and emergency write, and the chains a hostile guest can send.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/virtio/console.h"
#include "vmm/layout.h"
#include "vring_driver.h"

#define RAM_SIZE (1 * MiB)
#define QSZ	 16
#define RXQ	 0
#define TXQ	 1

#define F_SIZE	      0
#define F_MULTIPORT   1
#define F_EMERG_WRITE 2

/* Each queue's rings at their own place; buffers from BUF_GPA. */
#define TX_RINGS 0x40000u
#define BUF_GPA	 0x80000u

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver rx, tx;
	int out[2]; /* the output pipe: the device writes out[1], the test reads out[0] */
	struct virtio_console *vc;
	struct virtio_dev *dev;
};

static void start(struct fixture *f)
{
	struct virtq *tx = &f->dev->vqs[TXQ];

	f->dev->driver_features = 1ULL << VIRTIO_F_VERSION_1 | 1ULL << F_EMERG_WRITE;
	f->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	vd_init(&f->rx, f->ram, QSZ);
	vd_setup_queue(&f->rx, &f->dev->vqs[RXQ]);
	/* The transmit queue's rings sit higher up in RAM. */
	vd_init_at(&f->tx, f->ram, TX_RINGS, QSZ);
	vd_setup_queue(&f->tx, tx);
	for (unsigned q = 0; q < 2; q++)
		assert_int_equal(virtq_activate(&f->dev->vqs[q], &f->m, f->dev->driver_features),
				 0);
	assert_int_equal(f->dev->ops->activate(f->dev), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	assert_int_equal(pipe2(f->out, O_CLOEXEC), 0);
	assert_int_equal(fcntl(f->out[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(virtio_console_create("console0", &f->m, f->out[1], &f->vc), 0);
	f->dev = virtio_console_dev(f->vc);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_console_destroy(f->vc);
	close(f->out[0]);
	if (f->out[1] >= 0)
		close(f->out[1]);
	free(f->ram);
	free(f);
	return 0;
}

/* What the device wrote to its output so far. */
static size_t output(struct fixture *f, char *buf, size_t len)
{
	ssize_t n = read(f->out[0], buf, len);

	return n < 0 ? 0 : (size_t)n;
}

static unsigned kick(struct fixture *f, unsigned q)
{
	struct vring_driver *vd = q == RXQ ? &f->rx : &f->tx;
	uint16_t before = vd_used_idx(vd);

	f->dev->ops->queue_notify(f->dev, q);
	return (uint16_t)(vd_used_idx(vd) - before);
}

/* A receive chain of one device-writable buffer at gpa, made available. */
static void post_rx(struct fixture *f, uint16_t i, uint64_t gpa, uint32_t len)
{
	vd_desc(&f->rx, i, gpa, len, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx, i);
}

static void pattern(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

static void test_config(void **state)
{
	struct fixture *f = *state;
	uint8_t cfg[12];
	uint32_t v;

	assert_int_equal(f->dev->ops->device_id, VIRTIO_ID_CONSOLE);
	assert_memory_equal(f->dev->ops->pci_class, ((uint8_t[]){0x07, 0x80, 0x00}), 3);
	assert_int_equal(f->dev->num_queues, 2);
	assert_int_equal(f->dev->config_size, 12);
	memset(cfg, 0xaa, sizeof(cfg));
	f->dev->ops->config_read(f->dev, 0, cfg, sizeof(cfg));
	assert_int_equal(cfg[0] | cfg[1] << 8, 0); /* cols: no VIRTIO_CONSOLE_F_SIZE */
	assert_int_equal(cfg[2] | cfg[3] << 8, 0); /* rows */
	memcpy(&v, cfg + 4, 4);
	assert_int_equal(v, 1); /* max_nr_ports */
	memcpy(&v, cfg + 8, 4);
	assert_int_equal(v, 0); /* emerg_wr reads as 0 */
	/* A 4-byte read of max_nr_ports alone, as the transport passes it. */
	f->dev->ops->config_read(f->dev, 4, &v, 4);
	assert_int_equal(v, 1);
	assert_true(f->dev->device_features & (1ULL << F_EMERG_WRITE));
	assert_false(f->dev->device_features & (1ULL << F_MULTIPORT));
	assert_false(f->dev->device_features & (1ULL << F_SIZE));
	assert_true(f->dev->device_features & (1ULL << VIRTIO_F_EVENT_IDX));
	assert_true(f->dev->device_features & (1ULL << VIRTIO_F_INDIRECT_DESC));
}

static void test_emergency_write(void **state)
{
	struct fixture *f = *state;
	uint32_t ch = 'Y';
	uint16_t cols = 80;
	struct virtio_console_stats st;
	char got[8];

	/* Before any feature negotiation, as the spec allows: a 4-byte write, then a 1-byte one. */
	f->dev->ops->config_write(f->dev, 8, &ch, 4);
	f->dev->ops->config_write(f->dev, 8, "u", 1);
	assert_int_equal(output(f, got, sizeof(got)), 2);
	assert_memory_equal(got, "Yu", 2);
	/* The other fields are read-only: nothing written, nothing broken. */
	f->dev->ops->config_write(f->dev, 0, &cols, 2);
	assert_int_equal(output(f, got, sizeof(got)), 0);
	assert_false(f->dev->broken);
	f->dev->ops->config_read(f->dev, 0, &cols, 2);
	assert_int_equal(cols, 0);
	virtio_console_stats(f->vc, &st);
	assert_int_equal(st.emerg_writes, 2);
}

static void test_transmit(void **state)
{
	struct fixture *f = *state;
	struct virtio_console_stats st;
	char got[64];

	start(f);
	/* One chain of one buffer, another of two. */
	memcpy(f->ram + BUF_GPA, "hello ", 6);
	vd_desc(&f->tx, 0, BUF_GPA, 6, 0, 0);
	vd_publish(&f->tx, 0);
	memcpy(f->ram + BUF_GPA + 0x1000, "wor", 3);
	memcpy(f->ram + BUF_GPA + 0x2000, "ld\n", 3);
	vd_desc(&f->tx, 1, BUF_GPA + 0x1000, 3, VIRTQ_DESC_F_NEXT, 2);
	vd_desc(&f->tx, 2, BUF_GPA + 0x2000, 3, 0, 0);
	vd_publish(&f->tx, 1);
	assert_int_equal(kick(f, TXQ), 2);
	assert_int_equal(vd_used(&f->tx, 0).id, 0);
	assert_int_equal(vd_used(&f->tx, 0).len, 0);
	assert_int_equal(vd_used(&f->tx, 1).id, 1);
	assert_int_equal(vd_used(&f->tx, 1).len, 0);
	assert_int_equal(output(f, got, sizeof(got)), 12);
	assert_memory_equal(got, "hello world\n", 12);
	assert_false(f->dev->broken);
	virtio_console_stats(f->vc, &st);
	assert_int_equal(st.tx_requests, 2);
	assert_int_equal(st.tx_bytes, 12);
	assert_int_equal(st.tx_dropped, 0);
}

static void test_transmit_output_fails(void **state)
{
	struct fixture *f = *state;
	struct virtio_console_stats st;

	/* The reader went away: the bytes are counted as dropped, the guest goes on. */
	signal(SIGPIPE, SIG_IGN);
	start(f);
	close(f->out[0]);
	f->out[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	memcpy(f->ram + BUF_GPA, "lost", 4);
	vd_desc(&f->tx, 0, BUF_GPA, 4, 0, 0);
	vd_publish(&f->tx, 0);
	assert_int_equal(kick(f, TXQ), 1);
	assert_false(f->dev->broken);
	virtio_console_stats(f->vc, &st);
	assert_int_equal(st.tx_requests, 1);
	assert_int_equal(st.tx_bytes, 0);
	assert_int_equal(st.tx_dropped, 4);
}

static void test_receive(void **state)
{
	struct fixture *f = *state;
	struct virtio_console_stats st;

	start(f);
	post_rx(f, 0, BUF_GPA, 64);
	assert_int_equal(kick(f, RXQ), 0); /* buffers alone: nothing to deliver */
	assert_int_equal(virtio_console_input(f->vc, (const uint8_t *)"ls -l\r", 6), 6);
	assert_int_equal(vd_used_idx(&f->rx), 1);
	assert_int_equal(vd_used(&f->rx, 0).id, 0);
	assert_int_equal(vd_used(&f->rx, 0).len, 6);
	assert_memory_equal(f->ram + BUF_GPA, "ls -l\r", 6);
	assert_int_equal(f->ram[BUF_GPA + 6], 0);

	/* Input longer than a buffer is spread over the next chains. */
	post_rx(f, 1, BUF_GPA + 0x100, 4);
	post_rx(f, 2, BUF_GPA + 0x200, 4);
	post_rx(f, 3, BUF_GPA + 0x300, 4);
	assert_int_equal(virtio_console_input(f->vc, (const uint8_t *)"0123456789", 10), 10);
	assert_int_equal(vd_used_idx(&f->rx), 4);
	assert_int_equal(vd_used(&f->rx, 1).len, 4);
	assert_int_equal(vd_used(&f->rx, 2).len, 4);
	assert_int_equal(vd_used(&f->rx, 3).len, 2);
	assert_memory_equal(f->ram + BUF_GPA + 0x100, "0123", 4);
	assert_memory_equal(f->ram + BUF_GPA + 0x200, "4567", 4);
	assert_memory_equal(f->ram + BUF_GPA + 0x300, "89", 2);
	virtio_console_stats(f->vc, &st);
	assert_int_equal(st.rx_requests, 4);
	assert_int_equal(st.rx_bytes, 16);
}

static void test_input_waits_for_buffers(void **state)
{
	struct fixture *f = *state;

	/* Before the driver is ready, and then with no buffers: the device keeps the input. */
	assert_int_equal(virtio_console_input(f->vc, (const uint8_t *)"early ", 6), 6);
	start(f);
	assert_int_equal(virtio_console_input(f->vc, (const uint8_t *)"late", 4), 4);
	assert_int_equal(vd_used_idx(&f->rx), 0);

	/* Buffers arrive: the kick delivers what waited, in order. */
	post_rx(f, 0, BUF_GPA, 64);
	assert_int_equal(kick(f, RXQ), 1);
	assert_int_equal(vd_used(&f->rx, 0).len, 10);
	assert_memory_equal(f->ram + BUF_GPA, "early late", 10);

	/* Nothing is left over for the next buffer. */
	post_rx(f, 1, BUF_GPA + 0x100, 64);
	assert_int_equal(kick(f, RXQ), 0);
}

static void test_input_is_bounded(void **state)
{
	struct fixture *f = *state;
	static uint8_t in[VIRTIO_CONSOLE_RX_BUF + 1000];
	uint8_t *got = f->ram + BUF_GPA;
	uint64_t total = 0;

	pattern(in, sizeof(in), 3);
	start(f);
	/* No buffers: the device takes what its buffer holds, then nothing. */
	assert_int_equal(virtio_console_input(f->vc, in, sizeof(in)), VIRTIO_CONSOLE_RX_BUF);
	assert_int_equal(virtio_console_input(f->vc, in + VIRTIO_CONSOLE_RX_BUF, 1000), 0);

	/* Part of it delivered: room for that much more, which follows the rest in order. */
	post_rx(f, 0, BUF_GPA, 1000);
	assert_int_equal(kick(f, RXQ), 1);
	assert_int_equal(vd_used(&f->rx, 0).len, 1000);
	assert_int_equal(virtio_console_input(f->vc, in + VIRTIO_CONSOLE_RX_BUF, 1000), 1000);
	assert_int_equal(virtio_console_input(f->vc, in, 1), 0);
	for (uint16_t i = 1; i < QSZ; i++)
		post_rx(f, i, BUF_GPA + 1000 + (i - 1) * 512u, 512);
	assert_int_equal(kick(f, RXQ), 8); /* 4096 bytes in 512-byte buffers */
	for (uint16_t i = 0; i < 9; i++)
		total += vd_used(&f->rx, i).len;
	assert_int_equal(total, sizeof(in));
	/* The buffers are contiguous in RAM: the whole input, in order, across the ring's wrap. */
	assert_memory_equal(got, in, sizeof(in));
	assert_false(f->dev->broken);
}

static void test_writable_buffer_on_transmit_breaks(void **state)
{
	struct fixture *f = *state;
	char got[8];

	start(f);
	memcpy(f->ram + BUF_GPA, "abc", 3);
	vd_desc(&f->tx, 0, BUF_GPA, 3, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->tx, 1, BUF_GPA + 0x100, 8, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->tx, 0);
	assert_int_equal(kick(f, TXQ), 0);
	assert_true(f->dev->broken);
	assert_true(f->dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_int_equal(output(f, got, sizeof(got)), 0);

	/* A broken device serves nothing more. */
	vd_desc(&f->tx, 2, BUF_GPA, 3, 0, 0);
	vd_publish(&f->tx, 2);
	assert_int_equal(kick(f, TXQ), 0);
	assert_int_equal(output(f, got, sizeof(got)), 0);
}

static void test_readable_buffer_on_receive_breaks(void **state)
{
	struct fixture *f = *state;

	start(f);
	vd_desc(&f->rx, 0, BUF_GPA, 64, 0, 0);
	vd_publish(&f->rx, 0);
	assert_int_equal(virtio_console_input(f->vc, (const uint8_t *)"x", 1), 1);
	assert_int_equal(vd_used_idx(&f->rx), 0);
	assert_true(f->dev->broken);
	assert_true(f->dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_int_equal(f->ram[BUF_GPA], 0);
}

static void test_malformed_chains_break(void **state)
{
	struct fixture *f = *state;

	/* A transmit buffer that runs past the end of RAM. */
	start(f);
	vd_desc(&f->tx, 0, RAM_SIZE - 16, 64, 0, 0);
	vd_publish(&f->tx, 0);
	assert_int_equal(kick(f, TXQ), 0);
	assert_true(f->dev->broken);
}

static void test_malformed_receive_chain_breaks(void **state)
{
	struct fixture *f = *state;

	/* A receive chain that loops on itself. */
	start(f);
	vd_desc(&f->rx, 0, BUF_GPA, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	vd_publish(&f->rx, 0);
	assert_int_equal(virtio_console_input(f->vc, (const uint8_t *)"x", 1), 1);
	assert_int_equal(vd_used_idx(&f->rx), 0);
	assert_true(f->dev->broken);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_emergency_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_output_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_input_waits_for_buffers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_input_is_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writable_buffer_on_transmit_breaks, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_readable_buffer_on_receive_breaks, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_chains_break, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_receive_chain_breaks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
