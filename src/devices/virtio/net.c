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

#define VIRTIO_NET_S_LINK_UP 1

#define RXQ	   0
#define TXQ	   1
#define QUEUE_SIZE 256
#define HDR_BYTES  12 /* struct virtio_net_hdr_v1: with num_buffers, always, in virtio 1.x */
#define MTU	   1500
/* The largest frame the tap hands over with TSO on: 64 KiB of IP plus Ethernet and header. */
#define MAX_PACKET (HDR_BYTES + 14 + 65535)

struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));

struct virtio_net {
	struct virtio_dev vdev;
	char id[16];
	char tap[IFNAMSIZ];
	int fd;
	bool is_tap; /* offloads are set on a tap; other backends take what they are given */
	struct event_loop *loop;
	struct virtio_net_config config;
	struct net_stats stats;
	bool rx_waiting;       /* a packet waits (in the tap or pending) for receive buffers */
	uint64_t pending_len;  /* a packet in the bounce buffer, not yet delivered */
	bool pending_admitted; /* ... and the receive rate limiter let it through */
	/* One limiter a direction, each with the configured rates. */
	struct rate_limiter rx_limiter, tx_limiter;
	struct virtq_chain chain;
	/* Mergeable receive: the chains one packet is spread over, and the bounce buffer. */
	uint16_t heads[QUEUE_SIZE];
	uint32_t lens[QUEUE_SIZE];
	struct iovec first_in[HDR_BYTES]; /* the first chain's buffers that hold the header */
	unsigned first_nr;
	uint8_t bounce[MAX_PACKET];
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

/* Transmit everything the guest queued: one writev per packet, from guest memory. */
static void net_tx(struct virtio_net *n)
{
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[TXQ];
	bool served = false, throttled = false;
	int r;

	/* §2.7.10: no kicks while the queue is being drained; re-enabled and re-checked below. */
	virtq_set_notification(vq, false);
	for (;;) {
		while ((r = virtq_pop(vq, &n->chain)) == 1) {
			struct virtq_chain *c = &n->chain;
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
				w = writev(n->fd, c->out, (int)c->nr_out);
			while (w < 0 && errno == EINTR);
			if (w < 0) {
				/* A full tap queue (EAGAIN) or a link down: the packet is lost, as
				 * on a wire. */
				n->stats.tx_dropped++;
			} else {
				n->stats.tx_packets++;
				n->stats.tx_bytes += c->out_len - HDR_BYTES;
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
		virtio_queue_notify_driver(d, TXQ);
}

/* Give back the chains popped for a packet that could not be delivered, unused. */
static void rx_return(struct virtq *vq, unsigned nr)
{
	vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - nr);
}

/*
 * Spread the packet waiting in the bounce buffer over the guest's receive chains (several
 * only with MRG_RXBUF). Returns 1 when it was delivered (or dropped, for a driver whose buffers
 * cannot hold it), 0 when the ring ran out of buffers first (it stays pending), -1 for a broken
 * queue.
 */
static int net_rx_deliver(struct virtio_net *n)
{
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[RXQ];
	struct virtq_chain *c = &n->chain;
	bool mrg = virtio_has_feature(d, VIRTIO_NET_F_MRG_RXBUF);
	uint64_t off = 0, len = n->pending_len;
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
			n->rx_waiting = true;
			return 0;
		}
		if (c->nr_out || c->in_len < (nr ? 1 : HDR_BYTES)) {
			virtio_dev_error(d, "receive buffer of %llu bytes (device-readable %llu)",
					 (unsigned long long)c->in_len,
					 (unsigned long long)c->out_len);
			return -1;
		}
		take = len - off < c->in_len ? len - off : c->in_len;
		iov_from_buf(c->in, c->nr_in, 0, n->bounce + off, take);
		if (nr == 0) {
			/* Keep where the header lies: num_buffers is written there at the end. */
			uint64_t covered = 0;

			n->first_nr = 0;
			for (unsigned i = 0; i < c->nr_in && covered < HDR_BYTES; i++) {
				n->first_in[n->first_nr++] = c->in[i];
				covered += c->in[i].iov_len;
			}
		}
		n->heads[nr] = c->head;
		n->lens[nr] = (uint32_t)take;
		nr++;
		off += take;
		if (off < len && !mrg) {
			/* §5.1.6.3.1: without MRG_RXBUF each buffer must hold a whole packet. */
			rx_return(vq, nr);
			n->stats.rx_dropped++;
			n->pending_len = 0;
			return 1;
		}
	}
	nbufs = (uint16_t)nr;
	iov_from_buf(n->first_in, n->first_nr, 10, &nbufs, 2);
	for (unsigned i = 0; i < nr; i++)
		virtq_push(vq, n->heads[i], n->lens[i]);
	n->stats.rx_packets++;
	n->stats.rx_bytes += len - HDR_BYTES;
	n->pending_len = 0;
	return 1;
}

/*
 * Read the tap's next packet, once the guest has a buffer for it: straight into a chain that
 * holds any packet, when nothing limits the rate (returns 1, delivered), or into the bounce
 * buffer (returns 0 with n->pending_len set). Otherwise 0 when the tap is empty or the guest
 * has no buffers (n->rx_waiting says which), -1 for a broken queue.
 */
static int net_rx_read(struct virtio_net *n)
{
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[RXQ];
	struct virtq_chain *c = &n->chain;
	ssize_t len;
	uint16_t nbufs = 1;
	int r;

	r = virtq_pop(vq, c);
	if (r <= 0) {
		n->rx_waiting = r == 0;
		return r;
	}
	if (c->nr_out || c->in_len < HDR_BYTES) {
		virtio_dev_error(d, "receive buffer of %llu bytes (device-readable %llu)",
				 (unsigned long long)c->in_len, (unsigned long long)c->out_len);
		return -1;
	}
	if (c->in_len >= MAX_PACKET && !rate_limiter_active(&n->rx_limiter)) {
		/* Buffers that hold any packet: straight into the guest's memory. */
		do
			len = readv(n->fd, c->in, (int)c->nr_in);
		while (len < 0 && errno == EINTR);
		if (len < HDR_BYTES) {
			rx_return(vq, 1);
			n->rx_waiting = false;
			return 0;
		}
		iov_from_buf(c->in, c->nr_in, 10, &nbufs, 2);
		virtq_push(vq, c->head, (uint32_t)len);
		n->stats.rx_packets++;
		n->stats.rx_bytes += (uint64_t)len - HDR_BYTES;
		return 1;
	}
	/* Smaller buffers: through the bounce buffer, which net_rx_deliver() spreads. */
	rx_return(vq, 1);
	do
		len = read(n->fd, n->bounce, sizeof(n->bounce));
	while (len < 0 && errno == EINTR);
	if (len < HDR_BYTES) {
		n->rx_waiting = false;
		return 0;
	}
	n->pending_len = (uint64_t)len;
	n->pending_admitted = false;
	return 0;
}

/*
 * Receive one packet into the guest's buffers. Returns 1 when one was delivered, 0 when the
 * tap is empty or the guest has no buffers (n->rx_waiting says which) or the rate limiter
 * holds the packet back (not waiting then: the limiter's timer brings the device back), -1 for
 * a broken queue.
 */
static int net_rx_one(struct virtio_net *n)
{
	if (!n->pending_len) {
		int r = net_rx_read(n);

		if (r != 0 || !n->pending_len)
			return r;
	}
	/* With a limit, a packet is read first (its size is its cost) and held here, the rest
	 * waiting in the tap's queue, until the limiter lets it through. */
	if (!n->pending_admitted) {
		if (!rate_limiter_consume(&n->rx_limiter, n->pending_len - HDR_BYTES, 1)) {
			n->rx_waiting = false;
			return 0;
		}
		n->pending_admitted = true;
	}
	return net_rx_deliver(n);
}

/* Receive until the tap is empty or the guest's buffers run out. */
static void net_rx(struct virtio_net *n)
{
	struct virtio_dev *d = &n->vdev;
	struct virtq *vq = &d->vqs[RXQ];
	unsigned delivered = 0;
	int r;

	if (d->broken || !(d->status & VIRTIO_STATUS_DRIVER_OK) || !vq->ready) {
		n->rx_waiting = true;
		return;
	}
	for (;;) {
		/* Every buffer the driver has made available up to here gets tried below. */
		uint16_t seen = vq->avail->idx;

		while ((r = net_rx_one(n)) == 1)
			delivered++;
		if (r < 0) {
			if (!d->broken)
				virtio_dev_error(d, "malformed receive chain");
			break;
		}
		if (!n->rx_waiting)
			break; /* the tap is empty, or the rate limiter holds a packet back */
		/* Out of buffers: ask for a kick, then go on only if the driver added buffers
		 * meanwhile (a packet held back may need more than one). */
		virtq_set_notification(vq, true);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (vq->avail->idx == seen)
			break;
	}
	if (delivered)
		virtio_queue_notify_driver(d, RXQ);
}

void virtio_net_poll_rx(struct virtio_net *n)
{
	pthread_mutex_lock(&n->vdev.lock);
	net_rx(n);
	pthread_mutex_unlock(&n->vdev.lock);
}

/* The rate limiters' timers, under vdev.lock: the tokens a packet waited for are there. */
static void net_rx_unthrottled(void *opaque)
{
	net_rx(opaque);
}

static void net_tx_unthrottled(void *opaque)
{
	struct virtio_net *n = opaque;
	struct virtio_dev *d = &n->vdev;

	if (!d->broken && (d->status & VIRTIO_STATUS_DRIVER_OK) && d->vqs[TXQ].ready)
		net_tx(n);
}

/* The tap became readable (edge-triggered: read until it is empty or buffers run out). */
static void on_tap(void *opaque, uint32_t events)
{
	virtio_net_poll_rx(opaque);
}

static void net_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_net *n = d->priv;

	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (!d->broken && (d->status & VIRTIO_STATUS_DRIVER_OK) && d->vqs[q].ready) {
		if (q == TXQ)
			net_tx(n);
		else if (q == RXQ && n->rx_waiting)
			net_rx(n); /* new buffers for a packet that waited */
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
	if (n->is_tap && ioctl(n->fd, TUNSETOFFLOAD, off) < 0) {
		log_error("%s: TUNSETOFFLOAD %#x: %s", d->id, off, strerror(errno));
		return -errno;
	}
	/* Packets may have arrived before the driver was ready. */
	n->rx_waiting = true;
	net_rx(n);
	return 0;
}

static void net_reset(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;

	n->rx_waiting = false;
	n->pending_len = 0; /* a reset device drops the packet it held */
	n->pending_admitted = false;
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
};

/* Open (or create) the tap with the virtio-net header on it. */
static int open_tap(const char *name)
{
	struct ifreq ifr = {0};
	int hdr = HDR_BYTES, fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0) {
		log_error("tap %s: /dev/net/tun: %s", name, strerror(errno));
		return -errno;
	}
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int err = errno;

		log_error("tap %s: %s%s", name, strerror(err),
			  err == EPERM ? " (needs CAP_NET_ADMIN, or a tap owned by this user)"
				       : "");
		close(fd);
		return -err;
	}
	return fd;
}

int virtio_net_create(const struct net_config *cfg, const char *id, const struct guest_mem *mem,
		      struct event_loop *loop, struct virtio_net **out)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	int err;

	if (!n)
		return -ENOMEM;
	n->rx_limiter.timerfd = n->tx_limiter.timerfd = -1;
	if (cfg->tap[0]) {
		n->fd = open_tap(cfg->tap);
		n->is_tap = true;
	} else {
		struct ifreq ifr;

		n->fd = cfg->fd >= 0 ? cfg->fd : -EBADF;
		n->is_tap = n->fd >= 0 && ioctl(n->fd, TUNGETIFF, &ifr) == 0;
	}
	if (n->fd < 0) {
		err = n->fd;
		free(n);
		return err;
	}
	snprintf(n->id, sizeof(n->id), "%s", id);
	snprintf(n->tap, sizeof(n->tap), "%s", cfg->tap);
	n->loop = loop;
	memcpy(n->config.mac, cfg->mac, 6);
	n->config.status = VIRTIO_NET_S_LINK_UP;
	n->config.max_virtqueue_pairs = 1;
	n->config.mtu = MTU;

	virtio_dev_init(&n->vdev, &net_ops, n, n->id, mem, 2, QUEUE_SIZE);
	n->vdev.config_size = sizeof(n->config);
	n->vdev.device_features =
	    (1ULL << VIRTIO_NET_F_CSUM) | (1ULL << VIRTIO_NET_F_GUEST_CSUM) |
	    (1ULL << VIRTIO_NET_F_MTU) | (1ULL << VIRTIO_NET_F_MAC) |
	    (1ULL << VIRTIO_NET_F_GUEST_TSO4) | (1ULL << VIRTIO_NET_F_GUEST_TSO6) |
	    (1ULL << VIRTIO_NET_F_GUEST_ECN) | (1ULL << VIRTIO_NET_F_HOST_TSO4) |
	    (1ULL << VIRTIO_NET_F_HOST_TSO6) | (1ULL << VIRTIO_NET_F_HOST_ECN) |
	    (1ULL << VIRTIO_NET_F_MRG_RXBUF) | (1ULL << VIRTIO_NET_F_STATUS) |
	    (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX);
	err = rate_limiter_init(&n->rx_limiter, &cfg->rate, loop, &n->vdev.lock, net_rx_unthrottled,
				n);
	if (!err)
		err = rate_limiter_init(&n->tx_limiter, &cfg->rate, loop, &n->vdev.lock,
					net_tx_unthrottled, n);
	if (!err && loop)
		err = event_loop_add(loop, n->fd, EPOLLIN | EPOLLET, on_tap, n);
	if (err) {
		rate_limiter_destroy(&n->rx_limiter);
		rate_limiter_destroy(&n->tx_limiter);
		close(n->fd);
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

void virtio_net_stats(struct virtio_net *n, struct net_stats *out)
{
	pthread_mutex_lock(&n->vdev.lock);
	*out = n->stats;
	out->rx_throttled = n->rx_limiter.throttled;
	out->rx_throttled_ns = n->rx_limiter.throttled_ns;
	out->tx_throttled = n->tx_limiter.throttled;
	out->tx_throttled_ns = n->tx_limiter.throttled_ns;
	pthread_mutex_unlock(&n->vdev.lock);
}

struct rate_limiter *virtio_net_rate_limiter(struct virtio_net *n, bool tx)
{
	return tx ? &n->tx_limiter : &n->rx_limiter;
}

void virtio_net_destroy(struct virtio_net *n)
{
	if (!n)
		return;
	log_info("%s: rx %llu packets %llu bytes %llu dropped; tx %llu packets %llu bytes %llu "
		 "dropped",
		 n->id, (unsigned long long)n->stats.rx_packets,
		 (unsigned long long)n->stats.rx_bytes, (unsigned long long)n->stats.rx_dropped,
		 (unsigned long long)n->stats.tx_packets, (unsigned long long)n->stats.tx_bytes,
		 (unsigned long long)n->stats.tx_dropped);
	if (n->rx_limiter.throttled || n->tx_limiter.throttled)
		log_info("%s: held back by the rate limiters: rx %llu times, %llu ms; tx %llu "
			 "times, %llu ms",
			 n->id, (unsigned long long)n->rx_limiter.throttled,
			 (unsigned long long)(n->rx_limiter.throttled_ns / 1000000),
			 (unsigned long long)n->tx_limiter.throttled,
			 (unsigned long long)(n->tx_limiter.throttled_ns / 1000000));
	rate_limiter_destroy(&n->rx_limiter);
	rate_limiter_destroy(&n->tx_limiter);
	if (n->loop)
		event_loop_del(n->loop, n->fd);
	close(n->fd);
	pthread_mutex_destroy(&n->vdev.lock);
	free(n);
}
