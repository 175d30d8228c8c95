// SPDX-License-Identifier: MIT
#include "devices/virtio/net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/log.h"
#include "common/snapshot_file.h"

/* virtio 1.2 §5.1.3 feature bits. */
#define VIRTIO_NET_F_CSUM	0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU	3
#define VIRTIO_NET_F_MAC	5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN	9
#define VIRTIO_NET_F_HOST_TSO4	11
#define VIRTIO_NET_F_HOST_TSO6	12
#define VIRTIO_NET_F_HOST_ECN	13
#define VIRTIO_NET_F_MRG_RXBUF	15
#define VIRTIO_NET_F_STATUS	16
#define VIRTIO_NET_F_CTRL_VQ	17
#define VIRTIO_NET_F_MQ		22

#define VIRTIO_NET_S_LINK_UP 1

/* §5.1.6.5: the control queue's acks, and the one class and command served. */
#define VIRTIO_NET_OK			0
#define VIRTIO_NET_ERR			1
#define VIRTIO_NET_CTRL_MQ		4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0

/* §5.1.2: receiveq1, transmitq1, ..., receiveqN, transmitqN, then controlq. */
#define RXQ(pair)  (2 * (pair))
#define TXQ(pair)  (2 * (pair) + 1)
#define NO_QUEUE   (~0u)
#define QUEUE_SIZE 256
#define HDR_BYTES  12 /* struct virtio_net_hdr_v1: with num_buffers, always, in virtio 1.x */
#define MTU	   1500
/* The largest frame the tap hands over with TSO on: 64 KiB of IP plus Ethernet and header. */
#define MAX_PACKET (HDR_BYTES + 14 + 65535)

_Static_assert(2 * VIRTIO_NET_MAX_QUEUE_PAIRS + 1 <= VIRTIO_MAX_QUEUES,
	       "every pair and the control queue are queues of the device");

struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));

/*
 * One queue pair: its receive queue is RXQ(index), its transmit queue TXQ(index). Everything a
 * pair changes while serving is here, so pairs share no buffer; the device's lock (vdev.lock)
 * is held around all of it.
 */
struct net_pair {
	struct virtio_net *n;
	unsigned index;
	int fd;	       /* its tap queue, or its backend */
	bool detached; /* its tap queue is off the tap (TUNSETQUEUE) while the pair is not served */
	struct net_stats stats; /* packets and bytes; the throttled counts are the device's */
	bool rx_waiting;	/* a packet waits (in the tap or pending) for receive buffers */
	uint64_t pending_len;	/* a packet in the bounce buffer, not yet delivered */
	bool pending_admitted;	/* ... and the receive rate limiter let it through */
	struct virtq_chain rx_chain, tx_chain;
	/* Mergeable receive: the chains one packet is spread over, and the bounce buffer. */
	uint16_t heads[QUEUE_SIZE];
	uint32_t lens[QUEUE_SIZE];
	struct iovec first_in[HDR_BYTES]; /* the first chain's buffers that hold the header */
	unsigned first_nr;
	uint8_t bounce[MAX_PACKET];
};

struct virtio_net {
	struct virtio_dev vdev;
	char id[16];
	char tap[IFNAMSIZ];
	bool is_tap; /* offloads are set on a tap; other backends take what they are given */
	struct event_loop *loop;
	struct virtio_net_config config;
	unsigned max_pairs;    /* what the device has: max_virtqueue_pairs */
	unsigned active_pairs; /* pairs 0..active_pairs-1 are served (§5.1.6.5.5: 1 at first) */
	unsigned turn;	       /* the pair the limiters' timers serve first, in turn */
	/*
	 * The rate limits are the NIC's, not a queue's: one limiter a direction for the whole
	 * device, with the configured rates. Every pair takes its packets' tokens from the same
	 * two (under vdev.lock, which all pairs hold while serving), and when a limiter's timer
	 * fires it serves every pair in service, starting one further each time so that no pair
	 * always gets the tokens first.
	 */
	struct rate_limiter rx_limiter, tx_limiter;
	struct virtq_chain ctrl_chain;
	struct net_pair *pairs; /* max_pairs of them */
};

static void net_config_read(struct virtio_dev *d, uint32_t offset, void *data, unsigned size)
{
	struct virtio_net *n = d->priv;

	memset(data, 0, size);
	if (offset < sizeof(n->config))
		memcpy(data, (uint8_t *)&n->config + offset,
		       size < sizeof(n->config) - offset ? size : sizeof(n->config) - offset);
}

static void net_config_write(struct virtio_dev *d, uint32_t offset, const void *data, unsigned size)
{
	/* The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR-less legacy drivers. */
	log_guest_error("%s: write to read-only configuration at %u ignored", d->id, offset);
}

/* Transmit everything the guest queued on a pair: one writev per packet, from guest memory. */
static void net_tx(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[TXQ(p->index)];
	struct virtq_chain *c = &p->tx_chain;
	bool served = false, throttled = false;
	int r;

	/* §2.7.10: no kicks while the queue is being drained; re-enabled and re-checked below. */
	virtq_set_notification(vq, false);
	for (;;) {
		while ((r = virtq_pop(vq, c)) == 1) {
			ssize_t w;

			/* §5.1.6.2: header and packet, all device-readable, at most one frame. */
			if (c->nr_in || c->out_len < HDR_BYTES || c->out_len > MAX_PACKET) {
				virtio_dev_error(d, "transmit request of %llu+%llu bytes",
						 (unsigned long long)c->out_len,
						 (unsigned long long)c->in_len);
				r = -EINVAL;
				break;
			}
			if (!rate_limiter_consume(&n->tx_limiter, c->out_len - HDR_BYTES, 1)) {
				/* Over the limit: the packet stays in the avail ring until the
				 * limiter's timer brings the device back. */
				vq->last_avail_idx--;
				throttled = true;
				break;
			}
			do
				w = writev(p->fd, c->out, (int)c->nr_out);
			while (w < 0 && errno == EINTR);
			if (w < 0) {
				/* A full tap queue (EAGAIN) or a link down: the packet is lost, as
				 * on a wire. */
				p->stats.tx_dropped++;
			} else {
				p->stats.tx_packets++;
				p->stats.tx_bytes += c->out_len - HDR_BYTES;
			}
			virtq_push(vq, c->head, 0);
			served = true;
		}
		if (r < 0) {
			if (!d->broken)
				virtio_dev_error(d, "malformed transmit chain");
			break;
		}
		if (throttled)
			break;
		virtq_set_notification(vq, true);
		if (vq->avail->idx == vq->last_avail_idx)
			break;
	}
	if (served)
		virtio_queue_notify_driver(d, TXQ(p->index));
}

/* Give back the chains popped for a packet that could not be delivered, unused. */
static void rx_return(struct virtq *vq, unsigned nr)
{
	vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - nr);
}

/*
 * Spread the packet waiting in the pair's bounce buffer over the guest's receive chains
 * (several only with MRG_RXBUF). Returns 1 when it was delivered (or dropped, for a driver
 * whose buffers cannot hold it), 0 when the ring ran out of buffers first (it stays pending),
 * -1 for a broken queue.
 */
static int net_rx_deliver(struct net_pair *p)
{
	struct virtio_dev *d = &p->n->vdev;
	struct virtq *vq = &d->vqs[RXQ(p->index)];
	struct virtq_chain *c = &p->rx_chain;
	bool mrg = virtio_has_feature(d, VIRTIO_NET_F_MRG_RXBUF);
	uint64_t off = 0, len = p->pending_len;
	unsigned nr = 0;
	uint16_t nbufs;
	int r;

	while (off < len) {
		uint64_t take;

		r = nr == QUEUE_SIZE ? 0 : virtq_pop(vq, c);
		if (r < 0)
			return -1;
		if (r == 0) {
			/* Give back what was taken; the packet waits for more buffers. */
			rx_return(vq, nr);
			p->rx_waiting = true;
			return 0;
		}
		if (c->nr_out || c->in_len < (nr ? 1 : HDR_BYTES)) {
			virtio_dev_error(d, "receive buffer of %llu bytes (device-readable %llu)",
					 (unsigned long long)c->in_len,
					 (unsigned long long)c->out_len);
			return -1;
		}
		take = len - off < c->in_len ? len - off : c->in_len;
		iov_from_buf(c->in, c->nr_in, 0, p->bounce + off, take);
		if (nr == 0) {
			/* Keep where the header lies: num_buffers is written there at the end. */
			uint64_t covered = 0;

			p->first_nr = 0;
			for (unsigned i = 0; i < c->nr_in && covered < HDR_BYTES; i++) {
				p->first_in[p->first_nr++] = c->in[i];
				covered += c->in[i].iov_len;
			}
		}
		p->heads[nr] = c->head;
		p->lens[nr] = (uint32_t)take;
		nr++;
		off += take;
		if (off < len && !mrg) {
			/* §5.1.6.3.1: without MRG_RXBUF each buffer must hold a whole packet. */
			rx_return(vq, nr);
			p->stats.rx_dropped++;
			p->pending_len = 0;
			return 1;
		}
	}
	nbufs = (uint16_t)nr;
	iov_from_buf(p->first_in, p->first_nr, 10, &nbufs, 2);
	for (unsigned i = 0; i < nr; i++)
		virtq_push(vq, p->heads[i], p->lens[i]);
	p->stats.rx_packets++;
	p->stats.rx_bytes += len - HDR_BYTES;
	p->pending_len = 0;
	return 1;
}

/*
 * Read the pair's next packet, once the guest has a buffer for it. Without a rate limit it goes
 * straight into the guest's chain, and what does not fit on into the bounce buffer: a packet
 * the chain holds is delivered (returns 1); a longer one is gathered in the bounce buffer
 * (returns 0 with p->pending_len set), which net_rx_deliver() spreads over several chains.
 * With a limit it goes into the bounce buffer first, its size being its cost. Otherwise 0 when
 * the backend is empty or the guest has no buffers (p->rx_waiting says which), -1 for a broken
 * queue.
 */
static int net_rx_read(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[RXQ(p->index)];
	struct virtq_chain *c = &p->rx_chain;
	bool tail;
	ssize_t len;
	uint16_t nbufs = 1;
	int r;

	r = virtq_pop(vq, c);
	if (r <= 0) {
		p->rx_waiting = r == 0;
		return r;
	}
	if (c->nr_out || c->in_len < HDR_BYTES) {
		virtio_dev_error(d, "receive buffer of %llu bytes (device-readable %llu)",
				 (unsigned long long)c->in_len, (unsigned long long)c->out_len);
		return -1;
	}
	tail = c->in_len < MAX_PACKET;
	if (rate_limiter_active(&n->rx_limiter) || (tail && c->nr_in == VIRTQ_MAX_SIZE)) {
		/* Through the bounce buffer, which net_rx_deliver() spreads. */
		rx_return(vq, 1);
		do
			len = read(p->fd, p->bounce, sizeof(p->bounce));
		while (len < 0 && errno == EINTR);
		if (len < HDR_BYTES) {
			p->rx_waiting = false;
			return 0;
		}
		p->pending_len = (uint64_t)len;
		p->pending_admitted = false;
		return 0;
	}
	if (tail)
		c->in[c->nr_in] = (struct iovec){p->bounce, sizeof(p->bounce)};
	do
		len = readv(p->fd, c->in, (int)(c->nr_in + tail));
	while (len < 0 && errno == EINTR);
	if (len < HDR_BYTES) {
		rx_return(vq, 1);
		p->rx_waiting = false;
		return 0;
	}
	if ((uint64_t)len <= c->in_len) {
		iov_from_buf(c->in, c->nr_in, 10, &nbufs, 2);
		virtq_push(vq, c->head, (uint32_t)len);
		p->stats.rx_packets++;
		p->stats.rx_bytes += (uint64_t)len - HDR_BYTES;
		return 1;
	}
	/* Longer than the chain: gather it in the bounce buffer, the chain's part first, then give
	 * the chain back for net_rx_deliver() to spread the packet over it and the next ones. */
	if ((uint64_t)len > sizeof(p->bounce)) {
		rx_return(vq, 1);
		p->stats.rx_dropped++; /* a backend that is not a tap, with frames beyond any MTU */
		return 1;
	}
	memmove(p->bounce + c->in_len, p->bounce, (uint64_t)len - c->in_len);
	iov_to_buf(c->in, c->nr_in, 0, p->bounce, c->in_len);
	rx_return(vq, 1);
	p->pending_len = (uint64_t)len;
	p->pending_admitted = false;
	return 0;
}

/*
 * Receive one packet into the pair's buffers. Returns 1 when one was delivered, 0 when the
 * backend is empty or the guest has no buffers (p->rx_waiting says which) or the rate limiter
 * holds the packet back (not waiting then: the limiter's timer brings the device back), -1 for
 * a broken queue.
 */
static int net_rx_one(struct net_pair *p)
{
	if (!p->pending_len) {
		int r = net_rx_read(p);

		if (r != 0 || !p->pending_len)
			return r;
	}
	/* With a limit, a packet is read first (its size is its cost) and held here, the rest
	 * waiting in the tap's queue, until the limiter lets it through. */
	if (!p->pending_admitted) {
		if (!rate_limiter_consume(&p->n->rx_limiter, p->pending_len - HDR_BYTES, 1)) {
			p->rx_waiting = false;
			return 0;
		}
		p->pending_admitted = true;
	}
	return net_rx_deliver(p);
}

/* Receive on a pair in service until its backend is empty or the guest's buffers run out. */
static void net_rx(struct net_pair *p)
{
	struct virtio_dev *d = &p->n->vdev;
	struct virtq *vq = &d->vqs[RXQ(p->index)];
	unsigned delivered = 0;
	int r;

	if (p->index >= p->n->active_pairs)
		return; /* not in service: packets wait until it is (or the tap steers none here) */
	if (!virtio_queue_live(d, RXQ(p->index))) {
		p->rx_waiting = true;
		return;
	}
	for (;;) {
		/* Every buffer the driver has made available up to here gets tried below. */
		uint16_t seen = vq->avail->idx;

		/* §2.7.10: no kicks while the buffers last (each is a VM exit, and it slows the
		 * driver that is refilling the ring); asked for below once they run out. */
		virtq_set_notification(vq, false);
		while ((r = net_rx_one(p)) == 1)
			delivered++;
		if (r < 0) {
			if (!d->broken)
				virtio_dev_error(d, "malformed receive chain");
			break;
		}
		if (!p->rx_waiting)
			break; /* the backend is empty, or the rate limiter holds a packet back */
		/* Out of buffers: ask for a kick, then go on only if the driver added buffers
		 * meanwhile (a packet held back may need more than one). */
		virtq_set_notification(vq, true);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (vq->avail->idx == seen)
			break;
	}
	if (delivered)
		virtio_queue_notify_driver(d, RXQ(p->index));
}

void virtio_net_poll_rx(struct virtio_net *n)
{
	pthread_mutex_lock(&n->vdev.lock);
	for (unsigned i = 0; i < n->active_pairs; i++)
		net_rx(&n->pairs[i]);
	pthread_mutex_unlock(&n->vdev.lock);
}

/* The pair a limiter's timer serves first: the next one each time. */
static unsigned next_turn(struct virtio_net *n)
{
	return n->turn++ % n->active_pairs;
}

/* The rate limiters' timers, under vdev.lock: the tokens a packet waited for are there. */
static void net_rx_unthrottled(void *opaque)
{
	struct virtio_net *n = opaque;
	unsigned first = next_turn(n);

	for (unsigned i = 0; i < n->active_pairs; i++)
		net_rx(&n->pairs[(first + i) % n->active_pairs]);
}

static void net_tx_unthrottled(void *opaque)
{
	struct virtio_net *n = opaque;
	unsigned first = next_turn(n);

	for (unsigned i = 0; i < n->active_pairs; i++) {
		struct net_pair *p = &n->pairs[(first + i) % n->active_pairs];

		if (virtio_queue_live(&n->vdev, TXQ(p->index)))
			net_tx(p);
	}
}

/* A pair's backend became readable (edge-triggered: read until it is empty or buffers run
 * out). */
static void on_backend(void *opaque, uint32_t events)
{
	struct net_pair *p = opaque;

	pthread_mutex_lock(&p->n->vdev.lock);
	net_rx(p);
	pthread_mutex_unlock(&p->n->vdev.lock);
}

/* Attach a pair's tap queue to the tap, or detach it (the host then steers nothing to it). */
static int set_tap_queue(struct virtio_net *n, struct net_pair *p, bool attach)
{
	struct ifreq ifr = {.ifr_flags = attach ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE};

	if (!n->is_tap || n->max_pairs == 1 || p->detached != attach)
		return 0;
	if (ioctl(p->fd, TUNSETQUEUE, &ifr) < 0) {
		log_error("%s: pair %u: TUNSETQUEUE %s: %s", n->id, p->index,
			  attach ? "attach" : "detach", strerror(errno));
		return -errno;
	}
	p->detached = !attach;
	return 0;
}

/*
 * Serve pairs 0..pairs-1 and no other (§5.1.6.5.5: no packet on another receive queue once
 * the command is acknowledged). A pair leaving service drops the packet it held and its tap
 * queue is detached, which drops what that queue held. Returns 0 or a negative errno, with the
 * pairs in service unchanged where a tap queue could not be moved.
 */
static int set_active_pairs(struct virtio_net *n, unsigned pairs)
{
	unsigned old = n->active_pairs;
	int err;

	for (unsigned i = 0; i < n->max_pairs; i++) {
		err = set_tap_queue(n, &n->pairs[i], i < pairs);
		if (err) {
			for (unsigned j = 0; j < i; j++)
				set_tap_queue(n, &n->pairs[j], j < old);
			return err;
		}
	}
	for (unsigned i = pairs; i < n->max_pairs; i++) {
		struct net_pair *p = &n->pairs[i];

		if (p->pending_len)
			p->stats.rx_dropped++;
		p->pending_len = 0;
		p->pending_admitted = false;
		p->rx_waiting = false;
	}
	n->active_pairs = pairs;
	/* Packets, and transmit requests, may have waited for a pair now in service. */
	for (unsigned i = old; i < pairs; i++) {
		struct net_pair *p = &n->pairs[i];

		p->rx_waiting = true;
		net_rx(p);
		if (virtio_queue_live(&n->vdev, TXQ(i)))
			net_tx(p);
	}
	return 0;
}

/* §5.1.2: the control queue follows the N pairs with VIRTIO_NET_F_MQ, pair 1 without it. */
static unsigned ctrl_queue(const struct virtio_net *n)
{
	const struct virtio_dev *d = &n->vdev;

	if (!virtio_has_feature(d, VIRTIO_NET_F_CTRL_VQ))
		return NO_QUEUE;
	return virtio_has_feature(d, VIRTIO_NET_F_MQ) ? 2 * n->max_pairs : 2;
}

/* One control command (§5.1.6.5): class, command and its data, device-readable. */
static uint8_t net_ctrl_command(struct virtio_net *n, const struct virtq_chain *c)
{
	uint8_t cmd[4];
	uint16_t pairs;

	if (iov_to_buf(c->out, c->nr_out, 0, cmd, 2) < 2) {
		log_guest_error("%s: control command of %llu bytes", n->id,
				(unsigned long long)c->out_len);
		return VIRTIO_NET_ERR;
	}
	if (cmd[0] != VIRTIO_NET_CTRL_MQ || cmd[1] != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) {
		/* RX mode, MAC table, VLAN, announce: not offered, so not served. */
		log_guest_error("%s: control command %u.%u not supported", n->id, cmd[0], cmd[1]);
		return VIRTIO_NET_ERR;
	}
	/* §5.1.6.5.5: struct virtio_net_ctrl_mq { le16 virtqueue_pairs; } */
	if (!virtio_has_feature(&n->vdev, VIRTIO_NET_F_MQ) ||
	    iov_to_buf(c->out, c->nr_out, 2, cmd + 2, 2) < 2) {
		log_guest_error("%s: VQ_PAIRS_SET without VIRTIO_NET_F_MQ or its count", n->id);
		return VIRTIO_NET_ERR;
	}
	pairs = (uint16_t)(cmd[2] | cmd[3] << 8);
	if (pairs < 1 || pairs > n->max_pairs) {
		log_guest_error("%s: VQ_PAIRS_SET %u: the device has 1 to %u", n->id, pairs,
				n->max_pairs);
		return VIRTIO_NET_ERR;
	}
	if (set_active_pairs(n, pairs))
		return VIRTIO_NET_ERR;
	log_info("%s: %u queue pairs in service", n->id, pairs);
	return VIRTIO_NET_OK;
}

/* The control queue: each command's ack is the first device-writable byte. */
static void net_ctrl(struct virtio_net *n, unsigned q)
{
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[q];
	struct virtq_chain *c = &n->ctrl_chain;
	bool served = false;
	int r;

	for (;;) {
		while ((r = virtq_pop(vq, c)) == 1) {
			uint8_t ack;

			if (!c->in_len) {
				virtio_dev_error(d, "control command without room for its ack");
				r = -EINVAL;
				break;
			}
			ack = net_ctrl_command(n, c);
			iov_from_buf(c->in, c->nr_in, 0, &ack, 1);
			virtq_push(vq, c->head, 1);
			served = true;
			if (d->broken)
				break; /* a pair brought into service found its queue broken */
		}
		if (r < 0 && !d->broken)
			virtio_dev_error(d, "malformed control chain");
		if (d->broken)
			break;
		virtq_set_notification(vq, true);
		if (vq->avail->idx == vq->last_avail_idx)
			break;
	}
	if (served)
		virtio_queue_notify_driver(d, q);
}

static void net_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_net *n = d->priv;

	if (q >= d->num_queues)
		return;
	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (virtio_queue_live(d, q)) {
		if (q == ctrl_queue(n)) {
			net_ctrl(n, q);
		} else if (q / 2 < n->active_pairs) {
			struct net_pair *p = &n->pairs[q / 2];

			if (q % 2)
				net_tx(p);
			else if (p->rx_waiting)
				net_rx(p); /* new buffers for a packet that waited */
		}
		/* A kick on a pair out of service waits until the pair is in service. */
	}
	pthread_mutex_unlock(&d->lock);
}

/* Tell the tap which offloads the guest takes on receive (§5.1.6.4: GUEST_*). */
static int net_activate(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	unsigned off = 0;

	if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_CSUM)) {
		off |= TUN_F_CSUM;
		if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO4))
			off |= TUN_F_TSO4;
		if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO6))
			off |= TUN_F_TSO6;
		if ((off & (TUN_F_TSO4 | TUN_F_TSO6)) &&
		    virtio_has_feature(d, VIRTIO_NET_F_GUEST_ECN))
			off |= TUN_F_TSO_ECN;
	}
	/* Offloads belong to the tap as a whole, but are set through each of its queues alike,
	 * detached ones too (their ioctls still reach the tap), so no queue depends on another. */
	for (unsigned i = 0; n->is_tap && i < n->max_pairs; i++) {
		if (ioctl(n->pairs[i].fd, TUNSETOFFLOAD, off) < 0) {
			log_error("%s: pair %u: TUNSETOFFLOAD %#x: %s", d->id, i, off,
				  strerror(errno));
			return -errno;
		}
	}
	/* Packets may have arrived before the driver was ready. */
	for (unsigned i = 0; i < n->active_pairs; i++) {
		n->pairs[i].rx_waiting = true;
		net_rx(&n->pairs[i]);
	}
	return 0;
}

static void net_reset(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;

	for (unsigned i = 0; i < n->max_pairs; i++) {
		struct net_pair *p = &n->pairs[i];

		p->rx_waiting = false;
		p->pending_len = 0; /* a reset device drops the packets it held */
		p->pending_admitted = false;
	}
	/* §5.1.6.5.5: multiqueue is off until the driver turns it on again. */
	if (set_active_pairs(n, 1))
		log_error("%s: reset: the tap's other queues stay attached", d->id);
}

/*
 * Snapshots: the pairs the driver turned on. Packets are not state: one held in a bounce
 * buffer at the snapshot is lost to the restored guest, as on a wire.
 */
struct net_state {
	uint32_t max_pairs, active_pairs;
};

static void net_save(struct virtio_dev *d, struct snap_writer *w)
{
	struct virtio_net *n = d->priv;
	struct net_state st = {n->max_pairs, n->active_pairs};

	snap_put(w, d->id, &st, sizeof(st));
}

static int net_load(struct virtio_dev *d, const struct snap_reader *r)
{
	struct virtio_net *n = d->priv;
	struct net_state st;
	int err = snap_get(r, d->id, &st, sizeof(st));

	if (err)
		return err;
	if (st.max_pairs != n->max_pairs || st.active_pairs < 1 || st.active_pairs > n->max_pairs) {
		log_error("%s: the snapshot has %u of %u queue pairs in use; %u configured", d->id,
			  st.active_pairs, st.max_pairs, n->max_pairs);
		return -EINVAL;
	}
	return set_active_pairs(n, st.active_pairs);
}

static const struct virtio_dev_ops net_ops = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .pci_class = {0x02, 0x00, 0x00}, /* network, Ethernet */
    .config_read = net_config_read,
    .config_write = net_config_write,
    .activate = net_activate,
    .queue_notify = net_queue_notify,
    .reset = net_reset,
    .save = net_save,
    .load = net_load,
};

/* Open (or create) the tap with the virtio-net header on it: one of its queues with multi. */
static int open_tap(const char *name, bool multi)
{
	struct ifreq ifr = {0};
	int hdr = HDR_BYTES, fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0) {
		log_error("tap %s: /dev/net/tun: %s", name, strerror(errno));
		return -errno;
	}
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi ? IFF_MULTI_QUEUE : 0);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int err = errno;
		const char *why = "";

		if (err == EPERM)
			why = " (needs CAP_NET_ADMIN, or a tap owned by this user)";
		else if (err == EINVAL && multi)
			why = " (a tap that exists must be multi-queue for queues= above 1: "
			      "ip tuntap add ... multi_queue)";
		else if (err == EINVAL)
			why = " (a multi-queue tap that exists needs queues= above 1)";
		log_error("tap %s: %s%s", name, strerror(err), why);
		close(fd);
		return -err;
	}
	return fd;
}

static void close_pairs(struct virtio_net *n)
{
	for (unsigned i = 0; i < n->max_pairs; i++) {
		if (n->pairs[i].fd < 0)
			continue;
		if (n->loop)
			event_loop_del(n->loop, n->pairs[i].fd);
		close(n->pairs[i].fd);
	}
	free(n->pairs);
}

/* Each pair's backend: a queue of the tap, or the fd given (a tap's queues given attached);
 * pairs 1 and up start out of service, their tap queues detached. */
static int open_pairs(struct virtio_net *n, const struct net_config *cfg)
{
	for (unsigned i = 0; i < n->max_pairs; i++) {
		struct net_pair *p = &n->pairs[i];

		p->fd = -1;
		p->n = n;
		p->index = i;
	}
	for (unsigned i = 0; i < n->max_pairs; i++) {
		struct net_pair *p = &n->pairs[i];
		int err;

		if (cfg->tap[0]) {
			p->fd = open_tap(cfg->tap, n->max_pairs > 1);
		} else {
			p->fd = cfg->fds[i] >= 0 ? cfg->fds[i] : -EBADF;
			if (p->fd < 0)
				log_error("%s: pair %u: no backend", n->id, i);
		}
		if (p->fd < 0)
			return p->fd;
		if (i == 0) {
			struct ifreq ifr;

			n->is_tap = cfg->tap[0] || ioctl(p->fd, TUNGETIFF, &ifr) == 0;
		}
		err = i ? set_tap_queue(n, p, false) : 0;
		if (!err && n->loop)
			err = event_loop_add(n->loop, p->fd, EPOLLIN | EPOLLET, on_backend, p);
		if (err) {
			close(p->fd);
			p->fd = -1;
			return err;
		}
	}
	return 0;
}

int virtio_net_create(const struct net_config *cfg, const char *id, const struct guest_mem *mem,
		      struct event_loop *loop, struct virtio_net **out)
{
	unsigned pairs = cfg->queues ? cfg->queues : 1;
	struct virtio_net *n;
	int err;

	if (pairs > VIRTIO_NET_MAX_QUEUE_PAIRS)
		return -EINVAL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->rx_limiter.timerfd = n->tx_limiter.timerfd = -1;
	snprintf(n->id, sizeof(n->id), "%s", id);
	snprintf(n->tap, sizeof(n->tap), "%s", cfg->tap);
	n->loop = loop;
	n->max_pairs = pairs;
	n->active_pairs = 1;
	memcpy(n->config.mac, cfg->mac, 6);
	n->config.status = VIRTIO_NET_S_LINK_UP;
	n->config.max_virtqueue_pairs = (uint16_t)pairs;
	n->config.mtu = MTU;

	/* With one pair, no control queue: nothing there would be served. */
	virtio_dev_init(&n->vdev, &net_ops, n, n->id, mem, pairs > 1 ? 2 * pairs + 1 : 2,
			QUEUE_SIZE);
	n->vdev.config_size = sizeof(n->config);
	n->vdev.device_features =
	    (1ULL << VIRTIO_NET_F_CSUM) | (1ULL << VIRTIO_NET_F_GUEST_CSUM) |
	    (1ULL << VIRTIO_NET_F_MTU) | (1ULL << VIRTIO_NET_F_MAC) |
	    (1ULL << VIRTIO_NET_F_GUEST_TSO4) | (1ULL << VIRTIO_NET_F_GUEST_TSO6) |
	    (1ULL << VIRTIO_NET_F_GUEST_ECN) | (1ULL << VIRTIO_NET_F_HOST_TSO4) |
	    (1ULL << VIRTIO_NET_F_HOST_TSO6) | (1ULL << VIRTIO_NET_F_HOST_ECN) |
	    (1ULL << VIRTIO_NET_F_MRG_RXBUF) | (1ULL << VIRTIO_NET_F_STATUS) |
	    (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX);
	if (pairs > 1)
		n->vdev.device_features |=
		    (1ULL << VIRTIO_NET_F_CTRL_VQ) | (1ULL << VIRTIO_NET_F_MQ);
	n->pairs = calloc(pairs, sizeof(*n->pairs));
	err = n->pairs ? open_pairs(n, cfg) : -ENOMEM;
	if (!err)
		err = rate_limiter_init(&n->rx_limiter, &cfg->rate, loop, &n->vdev.lock,
					net_rx_unthrottled, n);
	if (!err)
		err = rate_limiter_init(&n->tx_limiter, &cfg->rate, loop, &n->vdev.lock,
					net_tx_unthrottled, n);
	if (err) {
		rate_limiter_destroy(&n->rx_limiter);
		rate_limiter_destroy(&n->tx_limiter);
		if (n->pairs)
			close_pairs(n);
		pthread_mutex_destroy(&n->vdev.lock);
		free(n);
		return err;
	}
	*out = n;
	return 0;
}

struct virtio_dev *virtio_net_dev(struct virtio_net *n)
{
	return &n->vdev;
}

static void add_stats(struct net_stats *sum, const struct net_stats *s)
{
	sum->rx_packets += s->rx_packets;
	sum->rx_bytes += s->rx_bytes;
	sum->rx_dropped += s->rx_dropped;
	sum->tx_packets += s->tx_packets;
	sum->tx_bytes += s->tx_bytes;
	sum->tx_dropped += s->tx_dropped;
}

static void sum_stats(struct virtio_net *n, struct net_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < n->max_pairs; i++)
		add_stats(out, &n->pairs[i].stats);
	out->rx_throttled = n->rx_limiter.throttled;
	out->rx_throttled_ns = n->rx_limiter.throttled_ns;
	out->tx_throttled = n->tx_limiter.throttled;
	out->tx_throttled_ns = n->tx_limiter.throttled_ns;
}

void virtio_net_stats(struct virtio_net *n, struct net_stats *out)
{
	pthread_mutex_lock(&n->vdev.lock);
	sum_stats(n, out);
	pthread_mutex_unlock(&n->vdev.lock);
}

int virtio_net_pair_stats(struct virtio_net *n, unsigned pair, struct net_stats *out)
{
	if (pair >= n->max_pairs)
		return -EINVAL;
	pthread_mutex_lock(&n->vdev.lock);
	*out = n->pairs[pair].stats;
	pthread_mutex_unlock(&n->vdev.lock);
	return 0;
}

struct rate_limiter *virtio_net_rate_limiter(struct virtio_net *n, bool tx)
{
	return tx ? &n->tx_limiter : &n->rx_limiter;
}

static void log_stats(const char *what, const struct net_stats *s)
{
	log_info("%s: rx %llu packets %llu bytes %llu dropped; tx %llu packets %llu bytes %llu "
		 "dropped",
		 what, (unsigned long long)s->rx_packets, (unsigned long long)s->rx_bytes,
		 (unsigned long long)s->rx_dropped, (unsigned long long)s->tx_packets,
		 (unsigned long long)s->tx_bytes, (unsigned long long)s->tx_dropped);
}

void virtio_net_destroy(struct virtio_net *n)
{
	struct net_stats sum;

	if (!n)
		return;
	sum_stats(n, &sum);
	log_stats(n->id, &sum);
	for (unsigned i = 0; n->max_pairs > 1 && i < n->max_pairs; i++) {
		char what[32];

		snprintf(what, sizeof(what), "%s pair %u", n->id, i);
		log_stats(what, &n->pairs[i].stats);
	}
	if (n->rx_limiter.throttled || n->tx_limiter.throttled)
		log_info("%s: held back by the rate limiters: rx %llu times, %llu ms; tx %llu "
			 "times, %llu ms",
			 n->id, (unsigned long long)n->rx_limiter.throttled,
			 (unsigned long long)(n->rx_limiter.throttled_ns / 1000000),
			 (unsigned long long)n->tx_limiter.throttled,
			 (unsigned long long)(n->tx_limiter.throttled_ns / 1000000));
	rate_limiter_destroy(&n->rx_limiter);
	rate_limiter_destroy(&n->tx_limiter);
	close_pairs(n);
	pthread_mutex_destroy(&n->vdev.lock);
	free(n);
}
