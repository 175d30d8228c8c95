// SPDX-License-Identifier: MIT
#include "devices/virtio/virtio.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

void virtio_dev_init(struct virtio_dev *d, const struct virtio_dev_ops *ops, void *priv,
		     const char *id, const struct guest_mem *mem, unsigned num_queues,
		     uint16_t queue_max_size)
{
	memset(d, 0, sizeof(*d));
	d->ops = ops;
	d->priv = priv;
	d->id = id;
	d->mem = mem;
	d->num_queues = num_queues < VIRTIO_MAX_QUEUES ? num_queues : VIRTIO_MAX_QUEUES;
	pthread_mutex_init(&d->lock, NULL);
	for (unsigned i = 0; i < d->num_queues; i++) {
		d->vqs[i].max_size = queue_max_size;
		virtq_reset(&d->vqs[i]);
	}
}

bool virtio_has_feature(const struct virtio_dev *d, unsigned bit)
{
	return bit < 64 && (d->driver_features & (1ULL << bit));
}

void virtio_queue_notify_driver(struct virtio_dev *d, unsigned q)
{
	if (q >= d->num_queues || !virtq_should_notify(&d->vqs[q]))
		return;
	d->stat_interrupts++;
	if (d->transport_ops)
		d->transport_ops->queue_interrupt(d->transport, q);
}

bool virtio_queue_live(const struct virtio_dev *d, unsigned q)
{
	return !d->broken && (d->status & VIRTIO_STATUS_DRIVER_OK) && d->vqs[q].ready;
}

void virtio_dev_error(struct virtio_dev *d, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_guest_error("%s: %s; device needs reset", d->id, msg);
	d->broken = true;
	/* virtio 1.2 §2.1.2: DEVICE_NEEDS_RESET, and a configuration change notification. */
	d->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	if ((d->status & VIRTIO_STATUS_DRIVER_OK) && d->transport_ops)
		d->transport_ops->config_interrupt(d->transport);
}
