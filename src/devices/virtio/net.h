/* SPDX-License-Identifier: MIT */
/*
 * virtio-net (virtio 1.2 §5.1) on a Linux tap device, in user space (these hosts have no
 * vhost-net). The tap carries the 12-byte virtio-net header (IFF_VNET_HDR), so checksum and
 * segmentation offloads pass between guest and host untouched: transmit is one writev(2)
 * straight from guest memory; receive reads into the guest's buffer when one chain holds the
 * largest packet, and otherwise through a bounce buffer into mergeable buffers.
 *
 * One queue pair, or several (§5.1.6.5.5, VIRTIO_NET_F_MQ with the control queue): each pair on
 * its own queue of a multi-queue tap (IFF_MULTI_QUEUE), with its own receive and transmit state.
 * The driver chooses how many pairs are in service (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; one until
 * it does); the tap queues of the others are detached, so the host steers no packet to them.
 *
 * Optionally rate-limited (common/token_bucket.h), each direction on its own with the same
 * rates: a packet costs its frame's bytes and one operation. A packet to transmit over the
 * limit stays in the avail ring; on receive, one packet is read and held in the device, the
 * rest wait in the tap's queue (where the host kernel drops what overflows, as a link would).
 * The limits are the NIC's, whatever the number of pairs: all pairs draw on the same two.
 */
#ifndef YUN_DEVICES_VIRTIO_NET_H
#define YUN_DEVICES_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/event_loop.h"
#include "common/token_bucket.h"
#include "devices/virtio/virtio.h"

#define VIRTIO_NET_MAX_QUEUE_PAIRS 8

struct net_config {
	char tap[16]; /* IFNAMSIZ: the tap to open, created if it does not exist */
	/* Queue pairs, 1 to VIRTIO_NET_MAX_QUEUE_PAIRS (0 is 1). Above 1 the tap is opened once
	 * a pair with IFF_MULTI_QUEUE, so a tap that exists must have been made multi-queue. */
	unsigned queues;
	/* With tap empty: backends already open, one a queue pair (tap fds set up with
	 * IFF_VNET_HDR and a 12-byte header, as a management layer passes them; or SOCK_SEQPACKET
	 * sockets carrying header and frame, which tests use). Non-blocking; the device owns them
	 * from then on. */
	int fds[VIRTIO_NET_MAX_QUEUE_PAIRS];
	uint8_t mac[6];
	struct rate_limit_config rate; /* for each direction */
};

struct net_stats {
	uint64_t rx_packets, rx_bytes, rx_dropped;
	uint64_t tx_packets, tx_bytes, tx_dropped;
	/* Held back by the rate limiters: times, and for how long in all. */
	uint64_t rx_throttled, rx_throttled_ns, tx_throttled, tx_throttled_ns;
};

struct virtio_net;

int virtio_net_create(const struct net_config *cfg, const char *id, const struct guest_mem *mem,
		      struct event_loop *loop, struct virtio_net **out);
struct virtio_dev *virtio_net_dev(struct virtio_net *n);
/* Receive what the backends of the pairs in service hold, as the event loop does when one
 * becomes readable. */
void virtio_net_poll_rx(struct virtio_net *n);
/* The whole device's counters, summed over its pairs. */
void virtio_net_stats(struct virtio_net *n, struct net_stats *out);
/* One pair's packet counters (its throttled counts are 0: the rate limiters are the device's);
 * -EINVAL for a pair the device does not have. */
int virtio_net_pair_stats(struct virtio_net *n, unsigned pair, struct net_stats *out);
/* A direction's rate limiter (tests drive its timer). */
struct rate_limiter *virtio_net_rate_limiter(struct virtio_net *n, bool tx);
void virtio_net_destroy(struct virtio_net *n);

#endif
