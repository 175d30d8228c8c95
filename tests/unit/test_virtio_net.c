// SPDX-License-Identifier: MIT
/*
 * virtio-net through its queues, on SOCK_SEQPACKET sockets instead of a tap's queues (the same
 * packet boundaries, no privileges): transmit and receive, mergeable buffers, a guest without
 * buffers, the malformed chains a hostile guest can send, and several queue pairs with the
 * control queue that puts them in service.
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

#define RAM_SIZE  (1 * MiB)
#define QSZ	  16
#define RXQ	  0
#define TXQ	  1
#define HDR	  12
#define F_MRG	  15
#define F_CTRL_VQ 17
#define F_MQ	  22
#define RXQ1	  2
#define TXQ1	  3
#define CTRLQ	  4 /* with two pairs and VIRTIO_NET_F_MQ */

/* Each queue's rings at their own place; buffers from BUF_GPA. */
#define TX_RINGS   0x40000u
#define RX1_RINGS  0x48000u
#define TX1_RINGS  0x50000u
#define CTRL_RINGS 0x58000u
#define CTRL_GPA   0x7f000u /* control commands and their acks */
#define BUF_GPA	   0x80000u

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver rx, tx;
	int peer;    /* the host's end of the backend */
	int backend; /* the device's end */
	/* With two queue pairs: pair 1's queues and backend, and the control queue. */
	struct vring_driver rx1, tx1, ctrl;
	int peer1, backend1;
	uint16_t ctrl_next; /* the next descriptor for a control command */
	struct virtio_net *net;
	struct virtio_dev *dev;
};

/* Start the device with a transmit queue of tx_size entries (QSZ for the other queues). */
static void start_sized(struct fixture *f, uint64_t features, uint16_t tx_size)
{
	struct virtq *tx = &f->dev->vqs[TXQ];

	f->dev->driver_features = features | 1ULL << VIRTIO_F_VERSION_1;
	f->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	vd_init(&f->rx, f->ram, QSZ);
	vd_setup_queue(&f->rx, &f->dev->vqs[RXQ]);
	/* The transmit queue's rings sit higher up in RAM. */
	vd_init_at(&f->tx, f->ram, TX_RINGS, tx_size);
	vd_setup_queue(&f->tx, tx);
	for (unsigned q = 0; q < 2; q++)
		assert_int_equal(virtq_activate(&f->dev->vqs[q], &f->m, f->dev->driver_features),
				 0);
	assert_int_equal(f->dev->ops->activate(f->dev), 0);
}

static void start(struct fixture *f, uint64_t features)
{
	start_sized(f, features, QSZ);
}

static int setup_with(void **state, const struct rate_limit_config *rate, unsigned queues)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct net_config cfg = {.mac = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}, .queues = queues};
	int sv[2];

	if (rate)
		cfg.rate = *rate;
	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
	cfg.fds[0] = f->backend = sv[0];
	f->peer = sv[1];
	f->peer1 = f->backend1 = -1;
	if (queues > 1) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
		cfg.fds[1] = f->backend1 = sv[0];
		f->peer1 = sv[1];
	}
	assert_int_equal(virtio_net_create(&cfg, "net0", &f->m, NULL, &f->net), 0);
	f->dev = virtio_net_dev(f->net);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, NULL, 1);
}

static int setup_mq(void **state)
{
	return setup_with(state, NULL, 2);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_net_destroy(f->net);
	close(f->peer);
	if (f->peer1 >= 0)
		close(f->peer1);
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
	/* One pair: no control queue, nothing about multiqueue offered. */
	assert_int_equal(f->dev->num_queues, 2);
	assert_false(f->dev->device_features & (1ULL << F_CTRL_VQ | 1ULL << F_MQ));
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

/* Many packets, each a frame of its own: all on the wire and handed back, in order. */
static void test_transmit_many(void **state)
{
	struct fixture *f = *state;
	const uint16_t n = 100;
	uint8_t pkt[HDR + 60], got[256];
	struct net_stats st;

	start_sized(f, 0, 128);
	memset(pkt, 0, HDR);
	for (uint16_t i = 0; i < n; i++) {
		frame(pkt + HDR, 60, (uint8_t)i);
		memcpy(f->ram + BUF_GPA + i * 128u, pkt, sizeof(pkt));
		vd_desc(&f->tx, i, BUF_GPA + i * 128u, sizeof(pkt), 0, 0);
		vd_publish(&f->tx, i);
	}
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_int_equal(vd_used_idx(&f->tx), n);
	for (uint16_t i = 0; i < n; i++) {
		assert_int_equal(vd_used(&f->tx, i).id, i);
		frame(pkt + HDR, 60, (uint8_t)i);
		assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(pkt));
		assert_memory_equal(got, pkt, sizeof(pkt));
	}
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);
	assert_false(f->dev->vqs[TXQ].used->flags & VIRTQ_USED_F_NO_NOTIFY);
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.tx_packets, n);
	assert_int_equal(st.tx_bytes, n * 60);
	assert_int_equal(st.tx_dropped, 0);
}

/* A backend that takes nothing more (EAGAIN): the packets are dropped and handed back, and
 * the next one goes once there is room again. */
static void test_transmit_backend_full(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 60], got[256];
	struct net_stats st;
	unsigned filled = 0;

	start(f, 0);
	memset(pkt, 0, sizeof(pkt));
	while (write(f->backend, pkt, sizeof(pkt)) == sizeof(pkt))
		filled++;
	assert_int_equal(errno, EAGAIN);
	frame(pkt + HDR, 60, 7);
	memcpy(f->ram + BUF_GPA, pkt, sizeof(pkt));
	for (uint16_t i = 0; i < 3; i++) {
		vd_desc(&f->tx, i, BUF_GPA, sizeof(pkt), 0, 0);
		vd_publish(&f->tx, i);
	}
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_int_equal(vd_used_idx(&f->tx), 3);
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.tx_dropped, 3);
	assert_int_equal(st.tx_packets, 0);
	for (unsigned i = 0; i < filled; i++)
		assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(pkt));
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);

	vd_desc(&f->tx, 3, BUF_GPA, sizeof(pkt), 0, 0);
	vd_publish(&f->tx, 3);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_int_equal(vd_used_idx(&f->tx), 4);
	assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(pkt));
	assert_memory_equal(got, pkt, sizeof(pkt));
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.tx_packets, 1);
	assert_int_equal(st.tx_dropped, 3);
}

/* Packets ahead of a malformed chain go out and are handed back; the chain breaks the
 * device and is not. */
static void test_transmit_good_then_malformed(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 60], got[256];

	start(f, 0);
	memset(pkt, 0, HDR);
	frame(pkt + HDR, 60, 3);
	memcpy(f->ram + BUF_GPA, pkt, sizeof(pkt));
	vd_desc(&f->tx, 0, BUF_GPA, sizeof(pkt), 0, 0);
	vd_publish(&f->tx, 0);
	vd_desc(&f->tx, 1, BUF_GPA, sizeof(pkt), 0, 0);
	vd_publish(&f->tx, 1);
	vd_desc(&f->tx, 2, BUF_GPA, HDR - 1, 0, 0);
	vd_publish(&f->tx, 2);
	vd_desc(&f->tx, 3, BUF_GPA, sizeof(pkt), 0, 0);
	vd_publish(&f->tx, 3);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_true(f->dev->broken);
	assert_int_equal(vd_used_idx(&f->tx), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(read(f->peer, got, sizeof(got)), sizeof(pkt));
		assert_memory_equal(got, pkt, sizeof(pkt));
	}
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);
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

/* Chains of more than one buffer: the header apart from the data, as a driver may post them. */
static void test_receive_header_apart(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[1200];
	uint16_t nbufs;

	start(f, 1ULL << F_MRG);
	vd_desc(&f->rx, 0, BUF_GPA, HDR, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->rx, 1, BUF_GPA + 0x100, 500, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx, 0);

	/* One that fits the chain: in it, straight. */
	memset(pkt, 0, HDR);
	frame(pkt + HDR, 400, 5);
	assert_int_equal(write(f->peer, pkt, HDR + 400), HDR + 400);
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 1);
	assert_int_equal(vd_used(&f->rx, 0).id, 0);
	assert_int_equal(vd_used(&f->rx, 0).len, HDR + 400);
	memcpy(&nbufs, f->ram + BUF_GPA + 10, 2);
	assert_int_equal(nbufs, 1);
	assert_memory_equal(f->ram + BUF_GPA + 0x100, pkt + HDR, 400);

	/* One longer than the chain: its start there, its end in the next chain. */
	vd_publish(&f->rx, 0);
	post_rx(f, 2, BUF_GPA + 0x1000, 1526);
	frame(pkt + HDR, sizeof(pkt) - HDR, 6);
	assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 3);
	assert_int_equal(vd_used(&f->rx, 1).id, 0);
	assert_int_equal(vd_used(&f->rx, 1).len, HDR + 500);
	assert_int_equal(vd_used(&f->rx, 2).id, 2);
	assert_int_equal(vd_used(&f->rx, 2).len, sizeof(pkt) - HDR - 500);
	memcpy(&nbufs, f->ram + BUF_GPA + 10, 2);
	assert_int_equal(nbufs, 2);
	assert_memory_equal(f->ram + BUF_GPA + 0x100, pkt + HDR, 500);
	assert_memory_equal(f->ram + BUF_GPA + 0x1000, pkt + HDR + 500, sizeof(pkt) - HDR - 500);
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

/* Two queue pairs (and the control queue) set up as Linux does; ctrl_q is where the control
 * queue is: after both pairs with VIRTIO_NET_F_MQ, after the first without. */
static void start_mq(struct fixture *f, uint64_t features, unsigned ctrl_q)
{
	struct {
		struct vring_driver *vd;
		uint64_t base;
		unsigned q;
	} qs[] = {{&f->rx, 0, RXQ},
		  {&f->tx, TX_RINGS, TXQ},
		  {&f->rx1, RX1_RINGS, RXQ1},
		  {&f->tx1, TX1_RINGS, TXQ1},
		  {&f->ctrl, CTRL_RINGS, ctrl_q}};

	f->dev->driver_features = features | 1ULL << VIRTIO_F_VERSION_1;
	f->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	f->ctrl_next = 0;
	for (unsigned i = 0; i < 5; i++) {
		if (ctrl_q == RXQ1 && (qs[i].q == RXQ1 || qs[i].q == TXQ1) && qs[i].vd != &f->ctrl)
			continue; /* without MQ the driver sets up one pair and the control queue */
		vd_init_at(qs[i].vd, f->ram, qs[i].base, QSZ);
		vd_setup_queue(qs[i].vd, &f->dev->vqs[qs[i].q]);
		assert_int_equal(
		    virtq_activate(&f->dev->vqs[qs[i].q], &f->m, f->dev->driver_features), 0);
	}
	assert_int_equal(f->dev->ops->activate(f->dev), 0);
}

/*
 * A control command as Linux sends it (§5.1.6.5): class and command, then its data, each in
 * its own device-readable buffer, then the ack byte, device-writable. Returns the ack, or -1
 * when the device gave no answer.
 */
static int ctrl_cmd(struct fixture *f, unsigned q, uint8_t class, uint8_t cmd, const void *data,
		    uint32_t len)
{
	uint16_t d = f->ctrl_next, used = vd_used_idx(&f->ctrl);
	uint64_t gpa = CTRL_GPA + 16u * d;
	uint8_t *ack = f->ram + gpa + 8;

	f->ram[gpa] = class;
	f->ram[gpa + 1] = cmd;
	memcpy(f->ram + gpa + 2, data, len);
	*ack = 0xee;
	vd_desc(&f->ctrl, d, gpa, 2, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
	vd_desc(&f->ctrl, (uint16_t)(d + 1), gpa + 2, len, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 2));
	vd_desc(&f->ctrl, (uint16_t)(d + 2), gpa + 8, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->ctrl, d);
	f->ctrl_next = (uint16_t)((d + 3) % (QSZ - 2));
	f->dev->ops->queue_notify(f->dev, q);
	if (vd_used_idx(&f->ctrl) != (uint16_t)(used + 1))
		return -1;
	assert_int_equal(vd_used(&f->ctrl, used).id, d);
	assert_int_equal(vd_used(&f->ctrl, used).len, 1);
	return *ack;
}

static int set_pairs(struct fixture *f, uint16_t pairs)
{
	uint8_t le[2] = {(uint8_t)pairs, (uint8_t)(pairs >> 8)};

	return ctrl_cmd(f, CTRLQ, 4, 0, le, 2); /* VIRTIO_NET_CTRL_MQ, VQ_PAIRS_SET */
}

/* A transmit chain of one buffer holding header and frame, on a pair's queue. */
static void post_tx(struct fixture *f, struct vring_driver *tx, uint16_t i, uint64_t gpa,
		    uint8_t seed)
{
	memset(f->ram + gpa, 0, HDR);
	frame(f->ram + gpa + HDR, 60, seed);
	vd_desc(tx, i, gpa, HDR + 60, 0, 0);
	vd_publish(tx, i);
}

static void test_mq_config(void **state)
{
	struct fixture *f = *state;
	uint8_t cfg[12];

	f->dev->ops->config_read(f->dev, 0, cfg, sizeof(cfg));
	assert_int_equal(cfg[8] | cfg[9] << 8, 2); /* max_virtqueue_pairs */
	assert_int_equal(f->dev->num_queues, 5);   /* rx0, tx0, rx1, tx1, control */
	assert_true(f->dev->device_features & (1ULL << F_CTRL_VQ));
	assert_true(f->dev->device_features & (1ULL << F_MQ));
}

/* Pair 1 is out of service until VQ_PAIRS_SET 2; then its traffic goes through its own
 * backend and queues, and pair 0's through pair 0's. */
static void test_mq_pairs_set(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 80], got[256];
	struct net_stats st;

	start_mq(f, 1ULL << F_MRG | 1ULL << F_CTRL_VQ | 1ULL << F_MQ, CTRLQ);
	memset(pkt, 0, HDR);
	frame(pkt + HDR, 80, 5);
	post_rx(f, 0, BUF_GPA, 1526);
	vd_desc(&f->rx1, 0, BUF_GPA + 0x1000, 1526, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx1, 0);
	post_tx(f, &f->tx1, 0, BUF_GPA + 0x2000, 11);
	assert_int_equal(write(f->peer1, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	f->dev->ops->queue_notify(f->dev, TXQ1);
	f->dev->ops->queue_notify(f->dev, RXQ1);
	assert_int_equal(vd_used_idx(&f->rx1), 0); /* not served: one pair until the driver asks */
	assert_int_equal(vd_used_idx(&f->tx1), 0);
	assert_int_equal(read(f->peer1, got, sizeof(got)), -1);

	/* In service: what waited on pair 1 goes, each way, through pair 1 only. */
	assert_int_equal(set_pairs(f, 2), 0);
	assert_int_equal(vd_used_idx(&f->rx1), 1);
	assert_int_equal(vd_used(&f->rx1, 0).len, sizeof(pkt));
	assert_memory_equal(f->ram + BUF_GPA + 0x1000 + HDR, pkt + HDR, 80);
	assert_int_equal(vd_used_idx(&f->rx), 0);
	assert_int_equal(vd_used_idx(&f->tx1), 1);
	assert_int_equal(read(f->peer1, got, sizeof(got)), HDR + 60);
	assert_memory_equal(got + HDR, f->ram + BUF_GPA + 0x2000 + HDR, 60);
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);

	/* Pair 0 still carries its own. */
	post_tx(f, &f->tx, 0, BUF_GPA + 0x3000, 12);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_int_equal(read(f->peer, got, sizeof(got)), HDR + 60);
	assert_int_equal(read(f->peer1, got, sizeof(got)), -1);
	assert_int_equal(write(f->peer, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx), 1);
	assert_int_equal(vd_used_idx(&f->rx1), 1);

	assert_int_equal(virtio_net_pair_stats(f->net, 1, &st), 0);
	assert_int_equal(st.rx_packets, 1);
	assert_int_equal(st.tx_packets, 1);
	assert_int_equal(st.tx_bytes, 60);
	assert_int_equal(virtio_net_pair_stats(f->net, 0, &st), 0);
	assert_int_equal(st.rx_packets, 1);
	assert_int_equal(st.tx_packets, 1);
	assert_int_equal(virtio_net_pair_stats(f->net, 2, &st), -EINVAL);
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.rx_packets, 2);
	assert_int_equal(st.tx_packets, 2);
	assert_false(f->dev->broken);
}

/* Counts out of range, short commands and commands not offered get VIRTIO_NET_ERR and change
 * nothing; a command with nowhere to put its ack breaks the device. */
static void test_mq_pairs_set_refused(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 40] = {0};

	start_mq(f, 1ULL << F_MRG | 1ULL << F_CTRL_VQ | 1ULL << F_MQ, CTRLQ);
	assert_int_equal(set_pairs(f, 0), 1);
	assert_int_equal(set_pairs(f, 3), 1);
	assert_int_equal(set_pairs(f, 0x8000), 1);
	assert_int_equal(ctrl_cmd(f, CTRLQ, 4, 0, "\x02", 1), 1);     /* half a count */
	assert_int_equal(ctrl_cmd(f, CTRLQ, 0, 0, "\x01", 1), 1);     /* RX mode: promiscuous */
	assert_int_equal(ctrl_cmd(f, CTRLQ, 1, 1, "\0\0\0\0", 4), 1); /* MAC table */
	assert_int_equal(ctrl_cmd(f, CTRLQ, 4, 1, "\0\0\0\0", 4), 1); /* RSS */
	/* Still one pair: pair 1's packet is not taken. */
	vd_desc(&f->rx1, 0, BUF_GPA, 1526, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx1, 0);
	assert_int_equal(write(f->peer1, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx1), 0);
	assert_false(f->dev->broken);

	/* Only the header, with no device-writable byte for the ack. */
	f->ram[CTRL_GPA] = 4;
	f->ram[CTRL_GPA + 1] = 0;
	vd_desc(&f->ctrl, 15, CTRL_GPA, 2, 0, 0);
	vd_publish(&f->ctrl, 15);
	f->dev->ops->queue_notify(f->dev, CTRLQ);
	assert_true(f->dev->broken);
}

/* Back to one pair: pair 1 drops what it held and is not served again; a reset does the
 * same. */
static void test_mq_back_to_one(void **state)
{
	struct fixture *f = *state;
	uint8_t pkt[HDR + 200] = {0};
	struct net_stats st;

	start_mq(f, 1ULL << F_MRG | 1ULL << F_CTRL_VQ | 1ULL << F_MQ, CTRLQ);
	assert_int_equal(set_pairs(f, 2), 0);
	/* A packet read and held: pair 1's one buffer is too small for it. */
	vd_desc(&f->rx1, 0, BUF_GPA, 100, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx1, 0);
	assert_int_equal(write(f->peer1, pkt, sizeof(pkt)), sizeof(pkt));
	virtio_net_poll_rx(f->net);
	assert_int_equal(recv(f->backend1, pkt, sizeof(pkt), MSG_PEEK | MSG_DONTWAIT), -1);
	assert_int_equal(set_pairs(f, 1), 0);
	assert_int_equal(virtio_net_pair_stats(f->net, 1, &st), 0);
	assert_int_equal(st.rx_dropped, 1);
	/* Enough buffers now, and a packet: pair 1 takes nothing. */
	vd_desc(&f->rx1, 1, BUF_GPA + 0x1000, 1526, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx1, 1);
	assert_int_equal(write(f->peer1, pkt, sizeof(pkt)), sizeof(pkt));
	f->dev->ops->queue_notify(f->dev, RXQ1);
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx1), 0);

	/* Two pairs again: the packet goes; then a reset: one pair after it. */
	assert_int_equal(set_pairs(f, 2), 0);
	assert_int_equal(vd_used_idx(&f->rx1), 2); /* 100 bytes in one buffer, the rest next */
	f->dev->ops->reset(f->dev);
	start_mq(f, 1ULL << F_MRG | 1ULL << F_CTRL_VQ | 1ULL << F_MQ, CTRLQ);
	assert_int_equal(write(f->peer1, pkt, sizeof(pkt)), sizeof(pkt));
	vd_desc(&f->rx1, 0, BUF_GPA, 1526, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx1, 0);
	virtio_net_poll_rx(f->net);
	assert_int_equal(vd_used_idx(&f->rx1), 0);
}

/* A driver that takes the control queue but not MQ finds it right after pair 0 (§5.1.2), and
 * VQ_PAIRS_SET is refused there. */
static void test_ctrl_without_mq(void **state)
{
	struct fixture *f = *state;

	start_mq(f, 1ULL << F_CTRL_VQ, RXQ1);
	assert_int_equal(ctrl_cmd(f, RXQ1, 4, 0, "\x02\x00", 2), 1);
	assert_int_equal(ctrl_cmd(f, RXQ1, 4, 0, "\x01\x00", 2), 1);
	assert_false(f->dev->broken);
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
	return setup_with(state, &rate, 1);
}

static void fire_at(struct fixture *f, bool tx, uint64_t t)
{
	fake_now = t;
	rate_limiter_timer(virtio_net_rate_limiter(f->net, tx));
}

static int setup_limited_mq(void **state)
{
	const struct rate_limit_config rate = {.ops = 1, .ops_burst = 1, .clock = fake_clock};

	fake_now = 0;
	return setup_with(state, &rate, 2);
}

/* The limit is the NIC's: a packet sent on pair 0 takes the one token, so pair 1's waits for
 * the timer, which serves it. */
static void test_mq_rate_limit_shared(void **state)
{
	struct fixture *f = *state;
	uint8_t got[256];
	struct net_stats st;

	start_mq(f, 1ULL << F_CTRL_VQ | 1ULL << F_MQ, CTRLQ);
	assert_int_equal(set_pairs(f, 2), 0);
	post_tx(f, &f->tx, 0, BUF_GPA, 1);
	f->dev->ops->queue_notify(f->dev, TXQ);
	post_tx(f, &f->tx1, 0, BUF_GPA + 0x1000, 2);
	f->dev->ops->queue_notify(f->dev, TXQ1);
	assert_int_equal(vd_used_idx(&f->tx), 1);
	assert_int_equal(vd_used_idx(&f->tx1), 0);
	assert_int_equal(read(f->peer1, got, sizeof(got)), -1);
	fire_at(f, true, 1000000000);
	assert_int_equal(vd_used_idx(&f->tx1), 1);
	assert_int_equal(read(f->peer1, got, sizeof(got)), HDR + 60);
	virtio_net_stats(f->net, &st);
	assert_int_equal(st.tx_packets, 2);
	assert_int_equal(st.tx_throttled, 1);
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
	    cmocka_unit_test_setup_teardown(test_transmit_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_backend_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_good_then_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_short_and_huge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_mergeable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_waits_for_buffers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_header_apart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_too_big_without_mergeable, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_receive_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mq_config, setup_mq, teardown),
	    cmocka_unit_test_setup_teardown(test_mq_pairs_set, setup_mq, teardown),
	    cmocka_unit_test_setup_teardown(test_mq_pairs_set_refused, setup_mq, teardown),
	    cmocka_unit_test_setup_teardown(test_mq_back_to_one, setup_mq, teardown),
	    cmocka_unit_test_setup_teardown(test_ctrl_without_mq, setup_mq, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit_rate_limited, setup_limited, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_rate_limited, setup_limited, teardown),
	    cmocka_unit_test_setup_teardown(test_mq_rate_limit_shared, setup_limited_mq, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
