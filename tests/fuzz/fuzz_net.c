// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for virtio-net's transmit, receive and control paths.
 *
 * The input is a guest and a packet from the host: its first bytes choose the features (with
 * or without mergeable buffers; one queue pair, or two with the control queue, with or without
 * VIRTIO_NET_F_MQ), the queues' sizes and ring addresses, the length of a packet the backend
 * delivers and the pair it arrives on; the rest is guest RAM, which holds the rings, the
 * buffers and the control commands. The backends are SOCK_SEQPACKET sockets, so packets keep
 * their boundaries as on a tap. Guest RAM is a heap buffer of exactly its size:
 * AddressSanitizer stops the run at the first byte touched outside it.
 *
 * Header: [0] flags: 1 MRG_RXBUF, 2 INDIRECT_DESC, 4 EVENT_IDX, 8 two pairs and CTRL_VQ,
 * 16 MQ, 32 the packet arrives on pair 1; [1..2] rx0 and tx0 sizes (log2); [3..14] their desc,
 * avail and used addresses (16 bits each); [15..16] packet length / 2; [17] the control
 * queue's size; [18..23] its addresses; [24..25] rx1 and tx1 sizes; [26..37] their addresses.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/virtio/net.h"
#include "devices/virtio/queue.h"

#define RAM_SIZE (64 * 1024)
#define HDR	 38
#define F_MRG	 15
#define F_CTRL	 17
#define F_MQ	 22

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *ram;
static struct guest_mem mem;

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* One queue's size and rings from the header: size byte at sz, addresses at addr. */
static int setup_queue(struct virtio_dev *d, unsigned q, const uint8_t *sz, const uint8_t *addr)
{
	struct virtq *vq = &d->vqs[q];

	vq->size = (uint16_t)(1u << (*sz % 9));
	vq->desc_gpa = get16(addr) & ~15u;
	vq->avail_gpa = get16(addr + 2) & ~1u;
	vq->used_gpa = get16(addr + 4) & ~3u;
	vq->enabled = true;
	return virtq_activate(vq, &mem, d->driver_features);
}

/* Whatever the guest transmitted stays within one frame. */
static void drain(int fd)
{
	static uint8_t buf[70000];

	for (ssize_t r; (r = read(fd, buf, sizeof(buf))) >= 0;)
		if (r > 12 + 14 + 65535)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t pkt[70000];
	struct net_config cfg = {.mac = {0x52, 0x54, 0, 0, 0, 1}};
	bool two = size > 0 && (data[0] & 8), mq = size > 0 && (data[0] & 16);
	int peer[2] = {-1, -1};
	struct virtio_net *n;
	struct virtio_dev *d;
	size_t pkt_len;

	if (!ram) {
		log_set_level(LOG_ERROR);
		ram = malloc(RAM_SIZE);
		mem.memfd = -1;
		if (!ram || gm_add_region(&mem, 0, RAM_SIZE, ram))
			abort();
	}
	if (size < HDR)
		return 0;
	cfg.queues = two ? 2 : 1;
	for (unsigned i = 0; i < cfg.queues; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv))
			abort();
		cfg.fds[i] = sv[0];
		peer[i] = sv[1];
	}
	if (virtio_net_create(&cfg, "fuzz", &mem, NULL, &n))
		abort();
	d = virtio_net_dev(n);
	memset(ram, 0, RAM_SIZE);
	memcpy(ram, data + HDR, size - HDR < RAM_SIZE ? size - HDR : RAM_SIZE);

	d->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	if (data[0] & 1)
		d->driver_features |= 1ULL << F_MRG;
	if (data[0] & 2)
		d->driver_features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	if (data[0] & 4)
		d->driver_features |= 1ULL << VIRTIO_F_EVENT_IDX;
	if (two)
		d->driver_features |= 1ULL << F_CTRL | (mq ? 1ULL << F_MQ : 0);
	d->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
		    VIRTIO_STATUS_DRIVER_OK;
	if (setup_queue(d, 0, data + 1, data + 3) || setup_queue(d, 1, data + 2, data + 9))
		goto out;
	/* §5.1.2: the control queue after both pairs with MQ, after the first without. */
	if (two && mq &&
	    (setup_queue(d, 2, data + 24, data + 26) || setup_queue(d, 3, data + 25, data + 32)))
		goto out;
	if (two && setup_queue(d, mq ? 4 : 2, data + 17, data + 18))
		goto out;
	if (d->ops->activate(d))
		goto out;

	/* The host sends a packet whose bytes are the start of guest RAM again (any bytes do). */
	pkt_len = (size_t)get16(data + 15) * 2 % sizeof(pkt);
	if (pkt_len >= 12) {
		memcpy(pkt, data + HDR, size - HDR < pkt_len ? size - HDR : pkt_len);
		if (write(peer[two && (data[0] & 32)], pkt, pkt_len) < 0)
			abort();
	}
	/* Control commands first (VQ_PAIRS_SET may bring pair 1 into service), then traffic. */
	if (two)
		d->ops->queue_notify(d, mq ? 4 : 2);
	virtio_net_poll_rx(n);
	for (unsigned q = 0; q < d->num_queues; q++)
		d->ops->queue_notify(d, q);
	for (unsigned i = 0; i < cfg.queues; i++)
		drain(peer[i]);
out:
	virtio_net_destroy(n);
	for (unsigned i = 0; i < cfg.queues; i++)
		close(peer[i]);
	return 0;
}
