// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for virtio-console's transmit and receive queues and its emergency write.
 *
 * The input is a guest and what the host types: its first bytes choose the features, the two
 * queues' sizes and ring addresses, how many bytes of host input arrive (part before the driver
 * is ready, the rest after) and one write to the configuration space; the rest is guest RAM,
 * and the host's input is taken from it too. The output is a non-blocking pipe, drained after
 * the run: what came out must be what the device counted. Guest RAM is a heap buffer of exactly
 * its size: AddressSanitizer stops the run at the first byte touched outside it.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/virtio/console.h"
#include "devices/virtio/queue.h"

#define RAM_SIZE    (64 * 1024)
#define HDR	    20
#define CONFIG_SIZE 12 /* struct virtio_console_config */
#define F_EMERG	    2  /* VIRTIO_CONSOLE_F_EMERG_WRITE */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *ram;
static struct guest_mem mem;

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Host input of len bytes (any bytes do: the start of the input's RAM part, repeated). */
static size_t type(struct virtio_console *vc, const uint8_t *p, size_t avail, size_t len)
{
	static uint8_t buf[2 * VIRTIO_CONSOLE_RX_BUF];

	if (len > sizeof(buf))
		len = sizeof(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = avail ? p[i % avail] : (uint8_t)i;
	return virtio_console_input(vc, buf, len);
}

static uint64_t drain(int fd)
{
	static uint8_t buf[65536];
	uint64_t total = 0;

	for (ssize_t r; (r = read(fd, buf, sizeof(buf))) > 0;)
		total += (uint64_t)r;
	return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *body = data + HDR;
	size_t body_len = size - HDR, typed = 0, before;
	struct virtio_console_stats st;
	struct virtio_console *vc;
	struct virtio_dev *d;
	uint64_t out = 0;
	int p[2];

	if (!ram) {
		log_set_level(LOG_ERROR);
		ram = malloc(RAM_SIZE);
		mem.memfd = -1;
		if (!ram || gm_add_region(&mem, 0, RAM_SIZE, ram))
			abort();
	}
	if (size < HDR)
		return 0;
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC))
		abort();
	if (virtio_console_create("fuzz", &mem, p[1], &vc))
		abort();
	d = virtio_console_dev(vc);
	memset(ram, 0, RAM_SIZE);
	memcpy(ram, body, body_len < RAM_SIZE ? body_len : RAM_SIZE);

	/* Input that arrives before the driver is ready waits in the device. */
	before = get16(data + 15) % (2 * VIRTIO_CONSOLE_RX_BUF + 1);
	typed += type(vc, body, body_len, before);

	d->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	if (data[0] & 1)
		d->driver_features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	if (data[0] & 2)
		d->driver_features |= 1ULL << VIRTIO_F_EVENT_IDX;
	if (data[0] & 4)
		d->driver_features |= 1ULL << F_EMERG;
	/* §5.3.4: an emergency write may come at any time, even before DRIVER_OK. Within the
	 * configuration space and of an access size the transport passes on. */
	if (data[0] & 8) {
		unsigned off = data[19] % CONFIG_SIZE, len = 1u << (data[19] >> 4) % 3;
		uint8_t val[4] = {data[16], data[17], data[18], data[19]};

		if (off + len <= CONFIG_SIZE)
			d->ops->config_write(d, off, val, len);
	}
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
	d->ops->queue_notify(d, 0);
	d->ops->queue_notify(d, 1);
	/* More input while the driver runs; then the driver kicks both queues again. */
	typed += type(vc, body, body_len, get16(data + 17) % (2 * VIRTIO_CONSOLE_RX_BUF + 1));
	d->ops->queue_notify(d, 0);
	d->ops->queue_notify(d, 1);

	/* Whatever went out is what the device counted: transmitted bytes, and at most one byte
	 * per emergency write; the guest received no more than the host typed. */
	out = drain(p[0]);
	virtio_console_stats(vc, &st);
	if (out < st.tx_bytes || out > st.tx_bytes + st.emerg_writes || st.rx_bytes > typed)
		abort();
out:
	virtio_console_destroy(vc);
	close(p[0]);
	close(p[1]);
	return 0;
}
