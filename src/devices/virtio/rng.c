// SPDX-License-Identifier: MIT
#include "devices/virtio/rng.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"

#define QUEUE_SIZE 256

struct virtio_rng {
	struct virtio_dev vdev;
	char id[16];
	struct rng_stats stats;
	struct virtq_chain chain; /* scratch for one request */
};

/* Fill the request's buffers, up to VIRTIO_RNG_MAX_REQUEST bytes; returns the bytes given. */
static uint32_t fill(const struct virtq_chain *c)
{
	uint64_t done = 0;

	for (unsigned i = 0; i < c->nr_in && done < VIRTIO_RNG_MAX_REQUEST; i++) {
		uint8_t *p = c->in[i].iov_base;
		uint64_t want = c->in[i].iov_len;

		if (want > VIRTIO_RNG_MAX_REQUEST - done)
			want = VIRTIO_RNG_MAX_REQUEST - done;
		for (uint64_t got = 0; got < want;) {
			/* The urandom pool: never blocks once the host has booted. */
			ssize_t n = getrandom(p + got, want - got, 0);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				log_error("virtio-rng: getrandom: %s", strerror(errno));
				return (uint32_t)(done + got);
			}
			got += (uint64_t)n;
		}
		done += want;
	}
	return (uint32_t)done;
}

static void rng_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_rng *r = d->priv;
	struct virtq *vq = &d->vqs[0];
	bool served = false;
	int ret;

	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (q != 0 || !virtio_queue_live(d, q)) {
		pthread_mutex_unlock(&d->lock);
		return;
	}
	for (;;) {
		while ((ret = virtq_pop(vq, &r->chain)) == 1) {
			uint32_t n;

			/* §5.4.6.1: the driver places only device-writable buffers. */
			if (r->chain.nr_out || r->chain.out_len) {
				virtio_dev_error(d, "request with a device-readable buffer");
				ret = -EINVAL;
				break;
			}
			n = fill(&r->chain);
			r->stats.requests++;
			r->stats.bytes += n;
			virtq_push(vq, r->chain.head, n);
			served = true;
		}
		if (ret < 0) {
			if (!d->broken)
				virtio_dev_error(d, "malformed descriptor chain");
			break;
		}
		virtq_set_notification(vq, true);
		if (vq->avail->idx == vq->last_avail_idx)
			break;
	}
	if (served)
		virtio_queue_notify_driver(d, 0);
	pthread_mutex_unlock(&d->lock);
}

static void rng_config_read(struct virtio_dev *d, uint32_t offset, void *data, unsigned size)
{
	memset(data, 0, size); /* no configuration space */
}

static void rng_config_write(struct virtio_dev *d, uint32_t offset, const void *data, unsigned size)
{
}

static int rng_activate(struct virtio_dev *d)
{
	return 0;
}

static void rng_reset(struct virtio_dev *d)
{
	/* Requests complete synchronously: nothing is in flight. */
}

static const struct virtio_dev_ops rng_ops = {
    .name = "virtio-rng",
    .device_id = VIRTIO_ID_RNG,
    .pci_class = {0x00, 0xff, 0x00}, /* unclassified, "other": what QEMU gives */
    .config_read = rng_config_read,
    .config_write = rng_config_write,
    .activate = rng_activate,
    .queue_notify = rng_queue_notify,
    .reset = rng_reset,
};

int virtio_rng_create(const char *id, const struct guest_mem *mem, struct virtio_rng **out)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	snprintf(r->id, sizeof(r->id), "%s", id);
	virtio_dev_init(&r->vdev, &rng_ops, r, r->id, mem, 1, QUEUE_SIZE);
	r->vdev.config_size = 0;
	r->vdev.device_features = (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX);
	*out = r;
	return 0;
}

struct virtio_dev *virtio_rng_dev(struct virtio_rng *r)
{
	return &r->vdev;
}

void virtio_rng_stats(struct virtio_rng *r, struct rng_stats *out)
{
	pthread_mutex_lock(&r->vdev.lock);
	*out = r->stats;
	pthread_mutex_unlock(&r->vdev.lock);
}

void virtio_rng_destroy(struct virtio_rng *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->vdev.lock);
	free(r);
}
