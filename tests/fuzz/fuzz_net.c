// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for virtio-net's transmit and receive paths.
 *
 * The input is a guest and a packet from the host: its first bytes choose the features (with
 * or without mergeable buffers), the two queues' sizes and ring addresses and the length of a
 * packet the backend delivers; the rest is guest RAM. The backend is a SOCK_SEQPACKET socket,
 * so packets keep their boundaries as on a tap. Guest RAM is a heap buffer of exactly its size:
 * AddressSanitizer stops the run at the first byte touched outside it.
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
#define HDR	 17

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *ram;
static struct guest_mem mem;

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t pkt[70000];
	struct net_config cfg = {.mac = {0x52, 0x54, 0, 0, 0, 1}};
	struct virtio_net *n;
	struct virtio_dev *d;
	size_t pkt_len;
	int sv[2];

	if (!ram) {
		log_set_level(LOG_ERROR);
		ram = malloc(RAM_SIZE);
		mem.memfd = -1;
		if (!ram || gm_add_region(&mem, 0, RAM_SIZE, ram))
			abort();
	}
	if (size < HDR)
		return 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv))
		abort();
	cfg.fd = sv[0];
	if (virtio_net_create(&cfg, "fuzz", &mem, NULL, &n))
		abort();
	d = virtio_net_dev(n);
	memset(ram, 0, RAM_SIZE);
	memcpy(ram, data + HDR, size - HDR < RAM_SIZE ? size - HDR : RAM_SIZE);

	d->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	if (data[0] & 1)
		d->driver_features |= 1ULL << 15; /* MRG_RXBUF */
	if (data[0] & 2)
		d->driver_features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	if (data[0] & 4)
		d->driver_features |= 1ULL << VIRTIO_F_EVENT_IDX;
	d->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
		    VIRTIO_STATUS_DRIVER_OK;
	for (unsigned q = 0; q < 2; q++) {
		struct virtq *vq = &d->vqs[q];

		vq->size = (uint16_t)(1u << (data[1 + q] % 9));
		vq->desc_gpa = get16(data + 3 + 6 * q) & ~15u;
		vq->avail_gpa = get16(data + 5 + 6 * q) & ~1u;
		vq->used_gpa = get16(data + 7 + 6 * q) & ~3u;
		vq->enabled = true;
		if (virtq_activate(vq, &mem, d->driver_features))
			goto out;
	}
	if (d->ops->activate(d))
		goto out;

	/* The host sends a packet whose bytes are the start of guest RAM again (any bytes do). */
	pkt_len = (size_t)get16(data + 15) * 2 % sizeof(pkt);
	if (pkt_len >= 12) {
		memcpy(pkt, data + HDR, size - HDR < pkt_len ? size - HDR : pkt_len);
		if (write(sv[1], pkt, pkt_len) < 0)
			abort();
	}
	virtio_net_poll_rx(n);
	d->ops->queue_notify(d, 0);
	d->ops->queue_notify(d, 1);
	/* Whatever the guest transmitted stays within one frame. */
	for (ssize_t r; (r = read(sv[1], pkt, sizeof(pkt))) >= 0;)
		if (r > 12 + 14 + 65535)
			abort();
out:
	virtio_net_destroy(n);
	close(sv[1]);
	return 0;
}
