// SPDX-License-Identifier: MIT
#include "devices/virtio/console.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

/* virtio 1.2 §5.3.3 feature bits. */
#define VIRTIO_CONSOLE_F_SIZE	     0
#define VIRTIO_CONSOLE_F_MULTIPORT   1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

#define RXQ	   0 /* receiveq: host to guest */
#define TXQ	   1 /* transmitq: guest to host */
#define QUEUE_SIZE 256

/* virtio 1.2 §5.3.4 */
struct virtio_console_config {
	uint16_t cols;
	uint16_t rows;
	uint32_t max_nr_ports;
	uint32_t emerg_wr;
} __attribute__((packed));

struct virtio_console {
	struct virtio_dev vdev;
	char id[16];
	int out_fd;
	struct virtio_console_config config;
	struct virtio_console_stats stats;
	/* Host input not yet in the guest's buffers: a ring of rx_len bytes from rx_head. */
	uint8_t rx[VIRTIO_CONSOLE_RX_BUF];
	size_t rx_head, rx_len;
	struct virtq_chain chain; /* scratch for one request */
};

/*
 * Write all of p to the output: blocking, EINTR retried, a short write continued, as the UART
 * does. Returns the bytes that could not be written (none when the output is discarded).
 */
static uint64_t output(struct virtio_console *vc, const uint8_t *p, uint64_t len)
{
	static struct log_ratelimit rl;

	while (len && vc->out_fd >= 0) {
		ssize_t n = write(vc->out_fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_ratelimited(&rl, LOG_WARN, "%s: output: %s", vc->id,
					n < 0 ? strerror(errno) : "nothing written");
			return len;
		}
		p += n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Write out one transmit chain, at most VIRTIO_CONSOLE_MAX_TX bytes of it. */
static void tx_chain(struct virtio_console *vc, const struct virtq_chain *c)
{
	uint64_t budget = VIRTIO_CONSOLE_MAX_TX;

	if (c->out_len > budget)
		log_guest_error("%s: transmit chain of %llu bytes: only %d written", vc->id,
				(unsigned long long)c->out_len, VIRTIO_CONSOLE_MAX_TX);
	for (unsigned i = 0; i < c->nr_out; i++) {
		uint64_t len = c->out[i].iov_len, n = len < budget ? len : budget;
		uint64_t lost = output(vc, c->out[i].iov_base, n);

		budget -= n;
		vc->stats.tx_bytes += n - lost;
		vc->stats.tx_dropped += lost + (len - n);
	}
	vc->stats.tx_requests++;
}

static void console_tx(struct virtio_console *vc)
{
	struct virtio_dev *d = &vc->vdev;
	bool served = false;
	int r;

	while ((r = virtq_pop_or_arm(&vc->vdev.vqs[TXQ], &vc->chain)) == 1) {
		/* §5.3.6.2: the transmit buffers are device-readable only. */
		if (vc->chain.nr_in) {
			virtio_dev_error(d, "transmit chain with a device-writable buffer");
			break;
		}
		tx_chain(vc, &vc->chain);
		virtq_push(&d->vqs[TXQ], vc->chain.head, 0);
		served = true;
	}
	if (r < 0)
		virtio_dev_error(d, "malformed transmit chain");
	if (served)
		virtio_queue_notify_driver(d, TXQ);
}

/* Move buffered input into one receive chain; returns the bytes moved. */
static uint64_t rx_fill(struct virtio_console *vc, const struct virtq_chain *c)
{
	uint64_t done = 0;

	while (vc->rx_len && done < c->in_len) {
		size_t run = vc->rx_len;
		uint64_t n;

		if (run > VIRTIO_CONSOLE_RX_BUF - vc->rx_head)
			run = VIRTIO_CONSOLE_RX_BUF - vc->rx_head;
		n = iov_from_buf(c->in, c->nr_in, done, vc->rx + vc->rx_head, run);
		vc->rx_head = (vc->rx_head + n) % VIRTIO_CONSOLE_RX_BUF;
		vc->rx_len -= n;
		done += n;
		if (n < run)
			break;
	}
	return done;
}

/* Give the guest buffered input, as long as there is some and it has buffers for it. */
static void console_rx(struct virtio_console *vc)
{
	struct virtio_dev *d = &vc->vdev;
	bool served = false;
	int r = 0;

	if (!virtio_queue_live(d, RXQ))
		return;
	while (vc->rx_len && (r = virtq_pop_or_arm(&vc->vdev.vqs[RXQ], &vc->chain)) == 1) {
		uint64_t n;

		/* §5.3.6.1: the receive buffers are device-writable only. */
		if (vc->chain.nr_out) {
			virtio_dev_error(d, "receive chain with a device-readable buffer");
			break;
		}
		n = rx_fill(vc, &vc->chain);
		virtq_push(&d->vqs[RXQ], vc->chain.head, (uint32_t)n);
		vc->stats.rx_requests++;
		vc->stats.rx_bytes += n;
		served = true;
	}
	if (r < 0)
		virtio_dev_error(d, "malformed receive chain");
	if (served)
		virtio_queue_notify_driver(d, RXQ);
}

static void console_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_console *vc = d->priv;

	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (q == TXQ && virtio_queue_live(d, TXQ))
		console_tx(vc);
	else if (q == RXQ)
		console_rx(vc); /* new receive buffers, for input that waited */
	pthread_mutex_unlock(&d->lock);
}

static void console_config_read(struct virtio_dev *d, uint32_t offset, void *data, unsigned size)
{
	struct virtio_console *vc = d->priv;

	memset(data, 0, size);
	if (offset < sizeof(vc->config))
		memcpy(data, (uint8_t *)&vc->config + offset,
		       size < sizeof(vc->config) - offset ? size : sizeof(vc->config) - offset);
}

static void console_config_write(struct virtio_dev *d, uint32_t offset, const void *data,
				 unsigned size)
{
	struct virtio_console *vc = d->priv;
	const uint32_t at = offsetof(struct virtio_console_config, emerg_wr);
	uint8_t ch;

	/* §5.3.4: the driver writes a character to emerg_wr, at any time (even before feature
	 * negotiation); the other fields are read-only. */
	if (offset > at || offset + size <= at) {
		log_guest_error("%s: write to read-only configuration at %u ignored", d->id,
				offset);
		return;
	}
	ch = ((const uint8_t *)data)[at - offset];
	if (output(vc, &ch, 1))
		vc->stats.tx_dropped++;
	vc->stats.emerg_writes++;
}

static int console_activate(struct virtio_dev *d)
{
	/* Input may have arrived, and output been queued, before the driver was ready. */
	console_rx(d->priv);
	if (virtio_queue_live(d, TXQ))
		console_tx(d->priv);
	return 0;
}

static void console_reset(struct virtio_dev *d)
{
	/* Requests complete synchronously: nothing is in flight. Buffered host input is kept for
	 * the driver that comes next: it is the host's, not the device's state. */
}

static const struct virtio_dev_ops console_ops = {
    .name = "virtio-console",
    .device_id = VIRTIO_ID_CONSOLE,
    .pci_class = {0x07, 0x80, 0x00}, /* communication, other: what QEMU gives virtio-serial */
    .config_read = console_config_read,
    .config_write = console_config_write,
    .activate = console_activate,
    .queue_notify = console_queue_notify,
    .reset = console_reset,
};

int virtio_console_create(const char *id, const struct guest_mem *mem, int out_fd,
			  struct virtio_console **out)
{
	struct virtio_console *vc = calloc(1, sizeof(*vc));

	if (!vc)
		return -ENOMEM;
	snprintf(vc->id, sizeof(vc->id), "%s", id);
	vc->out_fd = out_fd;
	/* cols and rows stay 0: VIRTIO_CONSOLE_F_SIZE is not offered. One port; max_nr_ports
	 * matters only with MULTIPORT, but says the truth. */
	vc->config.max_nr_ports = 1;
	virtio_dev_init(&vc->vdev, &console_ops, vc, vc->id, mem, 2, QUEUE_SIZE);
	vc->vdev.config_size = sizeof(vc->config);
	vc->vdev.device_features = (1ULL << VIRTIO_CONSOLE_F_EMERG_WRITE) |
				   (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX);
	*out = vc;
	return 0;
}

struct virtio_dev *virtio_console_dev(struct virtio_console *vc)
{
	return &vc->vdev;
}

size_t virtio_console_input(struct virtio_console *vc, const uint8_t *buf, size_t len)
{
	size_t n = 0;

	pthread_mutex_lock(&vc->vdev.lock);
	for (; n < len && vc->rx_len < VIRTIO_CONSOLE_RX_BUF; n++) {
		vc->rx[(vc->rx_head + vc->rx_len) % VIRTIO_CONSOLE_RX_BUF] = buf[n];
		vc->rx_len++;
	}
	console_rx(vc);
	pthread_mutex_unlock(&vc->vdev.lock);
	return n;
}

void virtio_console_stats(struct virtio_console *vc, struct virtio_console_stats *out)
{
	pthread_mutex_lock(&vc->vdev.lock);
	*out = vc->stats;
	pthread_mutex_unlock(&vc->vdev.lock);
}

void virtio_console_destroy(struct virtio_console *vc)
{
	if (!vc)
		return;
	log_info("%s: rx %llu requests %llu bytes; tx %llu requests %llu bytes %llu dropped; %llu "
		 "emergency writes",
		 vc->id, (unsigned long long)vc->stats.rx_requests,
		 (unsigned long long)vc->stats.rx_bytes, (unsigned long long)vc->stats.tx_requests,
		 (unsigned long long)vc->stats.tx_bytes, (unsigned long long)vc->stats.tx_dropped,
		 (unsigned long long)vc->stats.emerg_writes);
	pthread_mutex_destroy(&vc->vdev.lock);
	free(vc);
}
