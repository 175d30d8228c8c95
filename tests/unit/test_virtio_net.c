// SPDX-License-Identifier: MIT
/*
 * virtio-net through its queues, on a SOCK_SEQPACKET socket instead of a tap (the same packet
 * boundaries, no privileges): transmit and receive, mergeable buffers, a guest without
 * buffers, and the malformed chains a hostile guest can send.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/virtio/net.h"
#include "vmm/layout.h"
#include "vring_driver.h"

#define RAM_SIZE (1 * MiB)
#define QSZ	 16
#define RXQ	 0
#define TXQ	 1
#define HDR	 12
#define F_MRG	 15

/* Each queue's rings at their own place; buffers from BUF_GPA. */
#define TX_RINGS 0x40000u
#define BUF_GPA	 0x80000u

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver rx, tx;
	int peer;    /* the host's end of the backend */
	int backend; /* the device's end */
	struct virtio_net *net;
	struct virtio_dev *dev;
};

static void start(struct fixture *f, uint64_t features)
{
	struct virtq *tx = &f->dev->vqs[TXQ];

	f->dev->driver_features = features | 1ULL << VIRTIO_F_VERSION_1;
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

static int setup_with(void **state, const struct rate_limit_config *rate)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct net_config cfg = {.mac = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}};
	int sv[2];

	if (rate)
		cfg.rate = *rate;
	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
	cfg.fd = f->backend = sv[0];
	f->peer = sv[1];
	assert_int_equal(virtio_net_create(&cfg, "net0", &f->m, NULL, &f->net), 0);
	f->dev = virtio_net_dev(f->net);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, NULL);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_net_destroy(f->net);
	close(f->peer);
	free(f->ram);
	free(f);
	return 0;
}

static void frame(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 13);
}

/* A device-writable receive chain of one buffer at gpa. */
static void post_rx(struct fixture *f, uint16_t i, uint64_t gpa, uint32_t len)
{
	vd_desc(&f->rx, i, gpa, len, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx, i);
}

static void test_config(void **state)
{
	struct fixture *f = *state;
	uint8_t cfg[12];

	f->dev->ops->config_read(f->dev, 0, cfg, sizeof(cfg));
	assert_memory_equal(cfg, ((uint8_t[]){0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}), 6);
	assert_int_equal(cfg[6] | cfg[7] << 8, 1);	/* status: link up */
	assert_int_equal(cfg[8] | cfg[9] << 8, 1);	/* one queue pair */
	assert_int_equal(cfg[10] | cfg[11] << 8, 1500); /* MTU */
	assert_true(f->dev->device_features & (1ULL << F_MRG));
}

static void test_transmit(void **state)
{
	struct fixture *f = *state;
	uint8_t want[HDR + 60], got[256];

	start(f, 0);
	/* One packet in one buffer, another with header and frame apart. */
	memset(want, 0, HDR);
	frame(want + HDR, 60, 1);
	memcpy(f->ram + BUF_GPA, want, sizeof(want));
	vd_desc(&f->tx, 0, BUF_GPA, sizeof(want), 0, 0);
	vd_publish(&f->tx, 0);
	memcpy(f->ram + BUF_GPA + 0x1000, want, HDR);
	memcpy(f->ram + BUF_GPA + 0x2000, want + HDR, 60);
	vd_desc(&f->tx, 1, BUF_GPA + 0x1000, HDR, VIRTQ_DESC_F_NEXT, 2);
	vd_desc(&f->tx, 2, BUF_GPA + 0x2000, 60, 0, 0);
	vd_publish(&f->tx, 1);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_int_equal(vd_used_idx(&f->tx), 2);
	assert_int_equal(vd_used(&f->tx, 0).len, 0);
	/* Kicks were off while the queue drained (virtio 1.2 §2.7.10); the next packet needs one. */
	assert_false(f->dev->vqs[TXQ].used->flags & VIRTQ_USED_F_NO_NOTIFY);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(want));
		assert_memory_equal(got, want, sizeof(want));
	}
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);

	struct net_stats st;
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.tx_packets, 2);
	assert_int_equal(st.tx_bytes, 120);
}

static void test_transmit_malformed(void **state)
{
	struct fixture *f = *state;

	/* A device-writable buffer in a transmit chain. */
	start(f, 0);
	vd_desc(&f->tx, 0, BUF_GPA, 72, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->tx, 0);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_true(f->dev->broken);
	assert_int_equal(vd_used_idx(&f->tx), 0);
}

static void test_transmit_short_and_huge(void **state)
{
	struct fixture *f = *state;

	start(f, 0);
	vd_desc(&f->tx, 0, BUF_GPA, HDR - 1, 0, 0); /* not even a header */
	vd_publish(&f->tx, 0);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_true(f->dev->broken);

	start(f, 0);
	f->dev->broken = false;
	f->dev->status &= (uint8_t)~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	vd_desc(&f->tx, 0, BUF_GPA, 128 * 1024, 0, 0); /* more than any frame */
	vd_publish(&f->tx, 0);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_true(f->dev->broken);
	assert_int_equal(vd_used_idx(&f->tx), 0);
}

static void test_receive_mergeable(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[3000], got[3000];
	uint16_t nbufs;

	start(f, 1ULL << F_MRG);
	for (uint16_t i = 0; i < 4; i++)
		post_rx(f, i, BUF_GPA + i * 0x1000u, 1526);
	memset(pkt, 0, HDR);
	frame(pkt + HDR, sizeof(pkt) - HDR, 7);
	assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 2);
	assert_int_equal(vd_used(&f->rx, 0).len, 1526);
	assert_int_equal(vd_used(&f->rx, 1).len, 3000 - 1526);
	memcpy(&nbufs, f->ram + BUF_GPA + 10, 2);
	assert_int_equal(nbufs, 2);
	memcpy(got, f->ram + BUF_GPA, 1526);
	memcpy(got + 1526, f->ram + BUF_GPA + 0x1000, 3000 - 1526);
	assert_memory_equal(got + HDR, pkt + HDR, sizeof(pkt) - HDR);
}

static void test_receive_waits_for_buffers(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 100];

	start(f, 1ULL << F_MRG);
	memset(pkt, 0, HDR);
	frame(pkt + HDR, 100, 3);
	assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net); /* no buffers: nothing happens, nothing is lost */
	assert_int_equal(vd_used_idx(&f->rx), 0);
	post_rx(f, 0, BUF_GPA, 1526);
	f->dev->ops->queue_notify(f->dev, RXQ); /* the driver's kick brings it */
	assert_int_equal(vd_used_idx(&f->rx), 1);
	assert_int_equal(vd_used(&f->rx, 0).len, sizeof(pkt));
	assert_memory_equal(f->ram + BUF_GPA + HDR, pkt + HDR, 100);

	/* A packet that needs two buffers when one is there: it waits, whole, for the next. */
	uint8_t big[2000];
	memset(big, 0, HDR);
	frame(big + HDR, sizeof(big) - HDR, 9);
	assert_int_equal(write(f->peer, big, sizeof(big)), sizeof(big));
	post_rx(f, 1, BUF_GPA + 0x1000, 1526);
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 1);
	post_rx(f, 2, BUF_GPA + 0x2000, 1526);
	f->dev->ops->queue_notify(f->dev, RXQ);
	assert_int_equal(vd_used_idx(&f->rx), 3);
	assert_memory_equal(f->ram + BUF_GPA + 0x2000, big + 1526, sizeof(big) - 1526);

	struct net_stats st;
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.rx_packets, 2);
	assert_int_equal(st.rx_dropped, 0);
}

static void test_receive_too_big_without_mergeable(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[2000] = {0};

	start(f, 0);
	post_rx(f, 0, BUF_GPA, 1526);
	assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 0); /* dropped; the buffer stays the guest's */
	assert_false(f->dev->broken);

	struct net_stats st;
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.rx_dropped, 1);
}

static void test_receive_malformed(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 60] = {0};

	start(f, 1ULL << F_MRG);
	vd_desc(&f->rx, 0, BUF_GPA, 1526, 0, 0); /* device-readable: not a receive buffer */
	vd_publish(&f->rx, 0);
	assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_true(f->dev->broken);
	assert_int_equal(vd_used_idx(&f->rx), 0);
}

/* The rate limiters' clock, moved by the tests: one packet a second, burst 1, each way. */
static uint64_t fake_now;

static uint64_t fake_clock(void)
{
	return fake_now;
}

static int setup_limited(void **state)
{
	const struct rate_limit_config rate = {.ops = 1, .ops_burst = 1, .clock = fake_clock};

	fake_now = 0;
	return setup_with(state, &rate);
}

static void fire_at(struct fixture *f, bool tx, uint64_t t)
{
	fake_now = t;
	rate_limiter_timer(virtio_net_rate_limiter(f->net, tx));
}

/* Two packets queued at once: one goes, the other stays in the avail ring until the limiter's
 * timer brings it a second later. */
static void test_transmit_rate_limited(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 60], got[256];
	struct net_stats st;

	start(f, 0);
	memset(pkt, 0, HDR);
	for (uint16_t i = 0; i < 2; i++) {
		frame(pkt + HDR, 60, (uint8_t)i);
		memcpy(f->ram + BUF_GPA + i * 0x1000u, pkt, sizeof(pkt));
		vd_desc(&f->tx, i, BUF_GPA + i * 0x1000u, sizeof(pkt), 0, 0);
		vd_publish(&f->tx, i);
	}
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_int_equal(vd_used_idx(&f->tx), 1);
	assert_int_equal(f->dev->vqs[TXQ].last_avail_idx, 1);
	/* The timer comes back for the rest: no kick is needed meanwhile. */
	assert_true(f->dev->vqs[TXQ].used->flags & VIRTQ_USED_F_NO_NOTIFY);
	assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(pkt));
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);
	fire_at(f, true, 999999999);
	assert_int_equal(vd_used_idx(&f->tx), 1);
	fire_at(f, true, 1000000000);
	assert_int_equal(vd_used_idx(&f->tx), 2);
	assert_int_equal(vd_used(&f->tx, 1).id, 1);
	assert_false(f->dev->vqs[TXQ].used->flags & VIRTQ_USED_F_NO_NOTIFY);
	assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(pkt));
	assert_memory_equal(got + HDR, pkt + HDR, 60);
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.tx_packets, 2);
	assert_int_equal(st.tx_throttled, 1);
	assert_int_equal(st.tx_throttled_ns, 1000000000);
	assert_int_equal(st.rx_throttled, 0);
}

/* Three packets arrive at once: one is delivered, one is held in the device, the third waits
 * in the backend; each following second brings one more. */
static void test_receive_rate_limited(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 100];
	struct net_stats st;

	start(f, 1ULL << F_MRG);
	for (uint16_t i = 0; i < 3; i++)
		post_rx(f, i, BUF_GPA + i * 0x1000u, 4096);
	memset(pkt, 0, HDR);
	for (uint8_t i = 0; i < 3; i++) {
		frame(pkt + HDR, 100, i);
		assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	}
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 1);
	assert_int_equal(recv(f->backend, pkt, sizeof(pkt), MSG_PEEK | MSG_DONTWAIT), sizeof(pkt));
	/* New buffers, a kick, more packets: none of them gets past the limiter. */
	f->dev->ops->queue_notify(f->dev, RXQ);
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 1);
	fire_at(f, false, 1000000000);
	assert_int_equal(vd_used_idx(&f->rx), 2);
	fire_at(f, false, 2000000000);
	assert_int_equal(vd_used_idx(&f->rx), 3);
	for (uint8_t i = 0; i < 3; i++) {
		frame(pkt + HDR, 100, i);
		assert_memory_equal(f->ram + BUF_GPA + i * 0x1000u + HDR, pkt + HDR, 100);
	}
	assert_int_equal(recv(f->backend, pkt, sizeof(pkt), MSG_PEEK | MSG_DONTWAIT), -1);
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.rx_packets, 3);
	assert_int_equal(st.rx_dropped, 0);
	assert_int_equal(st.rx_throttled, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_short_and_huge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_mergeable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_waits_for_buffers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_too_big_without_mergeable, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_receive_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_rate_limited, setup_limited, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_rate_limited, setup_limited, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
